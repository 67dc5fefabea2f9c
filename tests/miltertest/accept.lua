-- Aligned, authenticated mail is accepted; trustmilter's Authentication-Results
-- goes on top and a forged one claiming our authserv-id is deleted.
-- -D: lib, socket, authserv_id.
dofile(lib)

main(function()
    local conn = open("mail.example.com", "192.0.2.10", "mail.example.com")

    -- Issue 3 item 2, protocol economy: header and body steps need no reply, and
    -- DATA and unknown commands are not asked for.
    for _, option in ipairs({"SMFIP_NR_HDR", "SMFIP_NR_BODY", "SMFIP_NODATA", "SMFIP_NOUNKNOWN"}) do
        if not mt.test_option(conn, _G[option]) then
            error("trustmilter did not negotiate " .. option)
        end
    end

    mail_from(conn, "MTACCEPT1", "alice@example.com")
    expect(conn, "MAIL FROM", SMFIR_CONTINUE)
    rcpt_to(conn, "support@example.org")
    expect(conn, "RCPT TO", SMFIR_CONTINUE)
    local forged = authserv_id .. "; spf=pass smtp.mailfrom=alice@example.com; dmarc=pass header.from=example.com"
    message(conn, headers_from("Alice <alice@example.com>", {
        {"Authentication-Results", forged},
        {"Authentication-Results", "mx.example.net; spf=pass smtp.mailfrom=example.com"},
    }), BODY)
    expect(conn, "end of message", SMFIR_CONTINUE, SMFIR_ACCEPT)

    -- RFC 8601 §5: an incoming A-R with our authserv-id is forged: deleted
    -- (a header change to the empty value is libmilter's delete).
    if not mt.eom_check(conn, MT_HDRCHANGE, "Authentication-Results", "") then
        error("the forged Authentication-Results was not deleted")
    end

    -- Ours, inserted at the top (index 0), with every result that passed.
    local ar = mt.getheader(conn, "Authentication-Results", 0)
    contains(ar, "our Authentication-Results", authserv_id .. ";", "iprev=pass",
             "spf=pass", "smtp.mailfrom=alice@example.com", "dmarc=pass",
             "header.from=example.com")
    if not mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results", ar, 0) then
        error("Authentication-Results was not inserted at the top (index 0)")
    end
    if mt.eom_check(conn, MT_QUARANTINE) then error("accepted mail was quarantined") end

    mt.disconnect(conn)
end)
