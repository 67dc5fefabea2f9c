-- DMARC p=quarantine failure: held (Postfix HOLD) with a reason; the same
-- message from an authenticated (SASL) client or a trusted network skips the
-- trust checks and is simply accepted.
-- -D: lib, socket.
dofile(lib)

main(function()
    local spoofed = headers_from("Carol <carol@example.net>")

    local conn = open("spoofer.sender.test", "203.0.113.5", "spoofer.sender.test")
    mail_from(conn, "MTQUAR1", "bob@sender.test")
    expect(conn, "MAIL FROM", SMFIR_CONTINUE)
    rcpt_to(conn, "support@example.org")
    expect(conn, "RCPT TO", SMFIR_CONTINUE)
    message(conn, spoofed, BODY)
    expect(conn, "end of message (p=quarantine)", SMFIR_CONTINUE, SMFIR_ACCEPT)
    if not mt.eom_check(conn, MT_QUARANTINE) then error("p=quarantine failure not quarantined") end
    mt.disconnect(conn)

    -- Authenticated submission ({auth_authen} at MAIL FROM) from the same address.
    conn = open("spoofer.sender.test", "203.0.113.5", "spoofer.sender.test")
    mail_from(conn, "MTQUAR2", "bob@sender.test", "bob")
    expect(conn, "MAIL FROM (authenticated)", SMFIR_CONTINUE, SMFIR_ACCEPT)
    if mt.getreply(conn) == SMFIR_CONTINUE then
        rcpt_to(conn, "support@example.org")
        expect(conn, "RCPT TO (authenticated)", SMFIR_CONTINUE, SMFIR_ACCEPT)
        message(conn, spoofed, BODY)
        expect(conn, "end of message (authenticated)", SMFIR_CONTINUE, SMFIR_ACCEPT)
        if mt.eom_check(conn, MT_QUARANTINE) then error("authenticated mail was quarantined") end
    end
    mt.disconnect(conn)

    -- A client in milter.trusted_networks (127.0.0.0/8 by default).
    conn = open("localhost", "127.0.0.1", "localhost")
    mail_from(conn, "MTQUAR3", "bob@sender.test")
    expect(conn, "MAIL FROM (trusted network)", SMFIR_CONTINUE, SMFIR_ACCEPT)
    if mt.getreply(conn) == SMFIR_CONTINUE then
        rcpt_to(conn, "support@example.org")
        expect(conn, "RCPT TO (trusted network)", SMFIR_CONTINUE, SMFIR_ACCEPT)
        message(conn, spoofed, BODY)
        expect(conn, "end of message (trusted network)", SMFIR_CONTINUE, SMFIR_ACCEPT)
        if mt.eom_check(conn, MT_QUARANTINE) then error("trusted-network mail was quarantined") end
    end
    mt.disconnect(conn)
end)
