-- Helpers shared by the trustmilter miltertest scripts (loaded with dofile).
--
-- miltertest plays the MTA. Each helper sends one SMTP stage and checks
-- the milter's answer, failing the script with a message that names the
-- stage, so the pytest wrapper shows where a conversation went wrong.
-- Globals set by the wrapper with -D: socket (inet:PORT@127.0.0.1).

-- Run a script's body. miltertest exits 1 on a Lua error but prints nothing
-- about it, so print the error and its traceback ourselves, then exit 1.
function main(body)
    local passed, err = xpcall(body, debug.traceback)
    if not passed then
        print("FAIL: " .. tostring(err))
        io.stdout:flush()
        os.exit(1)
    end
end

-- The reply codes by name, for readable failures (libmilter's mfdef.h).
local names = {
    [SMFIR_CONTINUE] = "continue", [SMFIR_ACCEPT] = "accept",
    [SMFIR_REJECT] = "reject", [SMFIR_TEMPFAIL] = "tempfail",
    [SMFIR_DISCARD] = "discard", [SMFIR_REPLYCODE] = "replycode",
}

function reply_name(code)
    return names[code] or string.format("%q", string.char(code))
end

-- Fail unless the last reply on conn is one of the wanted ones.
function expect(conn, stage, ...)
    local got = mt.getreply(conn)
    for _, want in ipairs({...}) do
        if got == want then
            print(string.format("ok: %s -> %s", stage, reply_name(got)))
            return
        end
    end
    local wanted = {}
    for _, want in ipairs({...}) do table.insert(wanted, reply_name(want)) end
    error(string.format("%s: milter replied %s, expected %s",
                        stage, reply_name(got), table.concat(wanted, " or ")))
end

-- Fail when a miltertest call returned an error string.
function ok(result, what)
    if result ~= nil then error(what .. " failed: " .. tostring(result)) end
end

-- A connection with conninfo and HELO done (trustmilter does not reply to
-- either: they are no-reply steps, so there is no answer to check).
function open(client_name, client_ip, helo)
    local conn = mt.connect(socket, 20, 0.25)
    if conn == nil then error("cannot connect to trustmilter at " .. socket) end
    ok(mt.conninfo(conn, client_name, client_ip), "conninfo")
    ok(mt.helo(conn, helo), "helo")
    return conn
end

-- MAIL FROM with the queue id macro {i}, as Postfix sends it.
function mail_from(conn, queue_id, sender, auth_authen)
    if auth_authen then
        mt.macro(conn, SMFIC_MAIL, "i", queue_id, "{auth_authen}", auth_authen)
    else
        mt.macro(conn, SMFIC_MAIL, "i", queue_id)
    end
    ok(mt.mailfrom(conn, "<" .. sender .. ">"), "mailfrom")
end

function rcpt_to(conn, recipient)
    ok(mt.rcptto(conn, "<" .. recipient .. ">"), "rcptto")
end

-- The header block (a list of {name, value}) and the body, up to EOM.
function message(conn, headers, body)
    for _, h in ipairs(headers) do ok(mt.header(conn, h[1], h[2]), "header " .. h[1]) end
    ok(mt.eoh(conn), "eoh")
    ok(mt.bodystring(conn, body), "body")
    ok(mt.eom(conn), "eom")
end

-- A small RFC 5322 header block from `from_`.
function headers_from(from_, extra)
    local list = {}
    for _, h in ipairs(extra or {}) do table.insert(list, h) end
    for _, h in ipairs({
        {"From", from_}, {"To", "support@example.org"}, {"Subject", "Hello"},
        {"Date", "Mon, 01 Jan 2024 10:00:00 +0000"}, {"Message-ID", "<1234@example.com>"},
    }) do table.insert(list, h) end
    return list
end

BODY = "Hello,\r\nthis is a test message.\r\n"

-- Fail unless `text` contains every one of the plain strings.
function contains(text, what, ...)
    if text == nil then error(what .. ": missing") end
    for _, part in ipairs({...}) do
        if not string.find(text, part, 1, true) then
            error(string.format("%s: %q lacks %q", what, text, part))
        end
    end
end
