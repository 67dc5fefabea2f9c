-- One connection, three transactions (state is per transaction):
--   1. From: example.com (DMARC p=reject) sent by someone else: rejected at
--      end of message with the policy's full reply (RFC 7489 §6.3).
--   2. A sender domain that does not exist: refused at RCPT TO already,
--      since no later stage can change that verdict.
--   3. After an abort, an honest message from the same client: accepted,
--      judged on its own envelope, with nothing left over from 1 and 2.
-- -D: lib, socket, authserv_id, reject_code, reject_dsn, reject_text.
dofile(lib)

main(function()
    local conn = open("spoofer.sender.test", "203.0.113.5", "spoofer.sender.test")

    mail_from(conn, "MTREJECT1", "bounce@sender.test")
    expect(conn, "MAIL FROM", SMFIR_CONTINUE)
    rcpt_to(conn, "support@example.org")
    expect(conn, "RCPT TO", SMFIR_CONTINUE)
    message(conn, headers_from("Alice <alice@example.com>"), BODY)
    expect(conn, "end of message (DMARC p=reject)", SMFIR_REPLYCODE)
    if not mt.eom_check(conn, MT_SMTPREPLY, reject_code, reject_dsn, reject_text) then
        error(string.format("no reply %s %s %s at end of message", reject_code, reject_dsn, reject_text))
    end
    if mt.eom_check(conn, MT_HDRINSERT) or mt.eom_check(conn, MT_HDRADD) then
        error("headers were added to a rejected message")
    end

    mail_from(conn, "MTREJECT2", "x@nowhere.example.net")
    expect(conn, "MAIL FROM (nonexistent domain)", SMFIR_CONTINUE)
    rcpt_to(conn, "support@example.org")
    expect(conn, "RCPT TO (nonexistent sender domain)", SMFIR_REPLYCODE)
    ok(mt.abort(conn), "abort")

    mail_from(conn, "MTREJECT3", "bob@sender.test")
    expect(conn, "MAIL FROM (after abort)", SMFIR_CONTINUE)
    rcpt_to(conn, "support@example.org")
    expect(conn, "RCPT TO (after abort)", SMFIR_CONTINUE)
    message(conn, headers_from("Bob <bob@sender.test>"), BODY)
    expect(conn, "end of message (after abort)", SMFIR_CONTINUE, SMFIR_ACCEPT)
    local ar = mt.getheader(conn, "Authentication-Results", 0)
    contains(ar, "Authentication-Results of the third message", authserv_id .. ";",
             "spf=pass", "smtp.mailfrom=bob@sender.test")
    if string.find(ar, "example.com", 1, true) then
        error("the third message's results mention the first message's domain: " .. ar)
    end

    mt.disconnect(conn)
end)
