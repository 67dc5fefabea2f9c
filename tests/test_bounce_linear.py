"""The bounce readers' rewritten searches: the same answers as the patterns they
replace, for any text, in linear time."""

from __future__ import annotations

import random
import re
import time

from trustmilter.bounce import heuristics
from trustmilter.bounce.causes import Cause, cause_of
from trustmilter.bounce.heuristics import (
    _ADDRESS,
    _FIRST_ADDRESS,
    TextReport,
    _exchange,
    _gmail,
    _postfix,
    _recipient,
)
from trustmilter.bounce.text import copied_text as _copied_text

# ---- the code before, as the references -------------------------------------------

def old_copied_text(body: str) -> str | None:
    match = re.search(
        r"(?:--- Below this line is a copy of the message\.|(?:------ This is a copy of the message"
        r"|------- Returned Message)[^\n]*|Original message headers:|----- Original message -----)"
        r"\s*\n\s*\n?(.*)",
        body, re.S)
    return None if match is None else match.group(1)


def old_exchange(body: str) -> TextReport | None:
    if "Delivery has failed to these recipients or groups" not in body:
        return None
    server = re.search(r"Generating server:\s*(\S+)", body)
    diagnostic_part = body.split("Diagnostic information for administrators", 1)[-1]
    diagnostic_part = diagnostic_part.split("Original message headers", 1)[0]
    pattern = rf"(?m)^\s*<?({_ADDRESS})>?\s*\n(?:Remote Server returned '([^\n]*)'|#([^\n]*))"
    recipients = [
        _recipient(m.group(1), (m.group(2) or m.group(3) or "").rstrip("#' "), False)
        for m in re.finditer(pattern, diagnostic_part)
    ]
    if not recipients:
        listed = body.split("Delivery has failed to these recipients or groups", 1)[1]
        first = re.search(_ADDRESS, listed)
        recipients = [_recipient(first.group(0), None, False)] if first else []
    return TextReport("exchange", server.group(1) if server else None, tuple(recipients))


def old_gmail(body: str) -> TextReport | None:
    temporary = "Delivery incomplete" in body or "There was a temporary problem" in body
    if not ("Address not found" in body or "Message not delivered" in body or temporary):
        return None
    addresses = re.findall(
        rf"(?:wasn't delivered to|delivering your message to|"
        rf"Your message couldn't be delivered to)\s+<?({_ADDRESS})>?", body)
    reply = re.search(r"The response (?:from the remote server )?was:\s*\n?\s*([^\n]+)", body)
    if not addresses:
        return None
    diagnostic = reply.group(1) if reply else None
    recipients = [_recipient(a.rstrip("."), diagnostic, temporary) for a in addresses]
    return TextReport("gmail", None, tuple(recipients), temporary)


def old_postfix(body: str) -> TextReport | None:
    match = re.search(r"This is the mail system at host ([^\s.]+(?:\.[^\s.]+)*)", body)
    if match is None:
        return None
    temporary = "This is a warning message only" in body
    recipients = [
        _recipient(m.group(1), m.group(2), temporary)
        for m in re.finditer(rf"(?m)^<({_ADDRESS})>(?: \([^)]*\))?: (.*?)(?=\n\s*\n|\Z)",
                             body, re.S)
    ]
    return TextReport("postfix", match.group(1), tuple(recipients), temporary)


def texts(seed: int, alphabet: list[str], count: int, most: int = 16) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, most)))
            for _ in range(count)]


# ---- same answers -----------------------------------------------------------------


def test_copied_message_is_found_after_the_same_separator() -> None:
    alphabet = ["--- Below this line is a copy of the message.", "------ This is a copy of the message",
                "Original message headers:", "----- Original message -----", "\n", " ", "\t",
                "\r\n", "x", "-", "From: a@b.example", "\x0b", "------", "------- Returned Message"]
    for text in texts(822, alphabet, 8000, 12):
        assert _copied_text(text) == old_copied_text(text), text


def test_first_address_is_the_same() -> None:
    alphabet = ["a", "b.c", "@", " ", "<", ">", ",", ":", "\n", "(", "x@", "@y", "\"", "é"]
    for text in texts(5321, alphabet, 8000):
        ours = _FIRST_ADDRESS.search(text)
        theirs = re.search(_ADDRESS, text)
        assert (ours and ours.group()) == (theirs and theirs.group()), text


def test_exchange_reports_the_same() -> None:
    alphabet = ["\n", " ", "\t", "a@b.example", "<", ">", "Remote Server returned '550 5.1.1 x'",
                "#550 5.1.1 gone##", "x", "\r", "@", "\x0b", "\n\n", "Generating server: mx",
                "Diagnostic information for administrators", "Original message headers"]
    for text in texts(2013, alphabet, 6000):
        body = "Delivery has failed to these recipients or groups" + text
        assert _exchange(body) == old_exchange(body), body


def test_gmail_reports_the_same() -> None:
    alphabet = ["The response was:", "The response from the remote server was:", "\n", " ",
                "\t", "550 5.1.1 x", "wasn't delivered to a@b.example", "\r", "\n\n", "x"]
    for text in texts(4408, alphabet, 6000):
        body = "Address not found\n" + text
        assert _gmail(body) == old_gmail(body), body


def test_gmail_reply_is_the_same_text() -> None:
    alphabet = ["The response was:", "The response from the remote server was:", "\n", " ",
                "\t", "\r", "x", "\x0b", "\n \n"]
    for text in texts(7208, alphabet, 8000, 10):
        theirs = re.search(
            r"The response (?:from the remote server )?was:\s*\n?\s*([^\n]+)", text)
        assert heuristics._gmail_reply(text) == (theirs and theirs.group(1)), text


def test_postfix_reports_the_same() -> None:
    alphabet = ["<a@b.example>", "<c@d>: ", " (", ")", ": ", "\n", " ", "x", "(", "\n\n",
                "<x", ">", "550 5.1.1", "\t", " (expanded from <e@f>)"]
    for text in texts(5322, alphabet, 6000):
        body = "This is the mail system at host mx.example\n" + text
        assert _postfix(body) == old_postfix(body), body


# ---- linear time ----------------------------------------------------------------------


def test_worst_texts_cost_linear_time() -> None:
    """Each pattern replaced here took from 1.4 s to over 20 s on 100 KB of such text
    (repeated words, runs of empty lines or of local-part characters, lines opening a
    comment that never closes). A guard against that regression, not a speed
    measurement: the bound is about 1000 times what the readers take."""
    size = 1_000_000
    started = time.monotonic()
    assert cause_of(None, "exceeds " * (size // 8)) is Cause.UNKNOWN
    assert cause_of(None, "doesn't have a " * (size // 15)) is Cause.UNKNOWN
    assert _copied_text("------ This is a copy of the message" * (size // 36)) is None
    assert _copied_text("Original message headers:" + " " * size + "x") is None
    exchange = "Delivery has failed to these recipients or groups\n"
    assert _exchange(exchange + "\n" * size + "x") == TextReport("exchange", None, ())
    assert _exchange(exchange + "a" * size) == TextReport("exchange", None, ())
    gmail = _gmail("Address not found\nwasn't delivered to a@b.example\nThe response was:"
                   + "\n" * size)
    assert gmail is not None and gmail.recipients[0].diagnostic is None
    postfix = _postfix("This is the mail system at host x.example\n" + "<a@b> (\n" * (size // 8))
    assert postfix is not None and postfix.recipients == ()
    assert heuristics.read_text("Hi. This is the qmail-send program at x.y\n" + "<a@b>:\n"
                                * (size // 7)) is not None
    assert time.monotonic() - started < 20


# ---- the real-bounce reader: each part, and the whole, on hostile input ------------------


def test_new_parsers_cost_linear_time() -> None:
    """Each search the real-bounce reader added, on the text that would make a
    careless pattern quadratic (runs without the character it looks for, many
    fields in one block, an address named a thousand times)."""
    from email.message import Message

    from trustmilter.bounce.causes import cause_from_words
    from trustmilter.bounce.dsn import address_of, parse_fields
    from trustmilter.bounce.explain import _reply_code
    from trustmilter.bounce.recipients import expanded_from, first_mentions, words_for
    from trustmilter.bounce.text import delay_notice as _delay_notice
    from trustmilter.bounce.text import from_html as _from_html

    size = 1_000_000
    started = time.monotonic()
    assert address_of("rfc822; " + "a" * size) is None
    assert address_of('rfc822; "' + "a" * size) is None
    assert address_of("rfc822; <" + "a" * size) is None
    assert len(parse_fields("X-Field: 1\n" * (size // 11) + "Final-Recipient: rfc822; a@b\n"
                            * 1000)) == 1000
    assert parse_fields(("Final-Recipient: rfc822; a@b\n" + " folded\n" * 10) * (size // 100))
    text = ("b@example.org " + "a" * 200 + "\n") * (size // 215)
    assert expanded_from(text, "b@example.org") is None
    assert expanded_from("a@b (expanded from: " + "c" * size, "a@b") is None
    assert expanded_from("a@b " + "x" * size + " (expanded from: <c@d>)", "a@b") is None
    mentions = first_mentions(text, tuple(f"r{i}@example.org" for i in range(200)))
    assert words_for(text, "b@example.org", mentions) is None
    assert _reply_code("550 5.1.1" + "9" * size) is None
    assert _reply_code("550 " * (size // 4)) is None
    assert _from_html("<" * size).strip() == "<" * size
    for word_run in ("a" * size, "exceed " * (size // 7), "host " * (size // 5),
                     "doesn't have a " * (size // 15), "listed " * (size // 7)):
        assert cause_from_words(word_run) is None
    message = Message()
    message["Subject"] = "x" * 1000
    assert _delay_notice(message, "will " * (size // 5)) is False
    assert time.monotonic() - started < 20


def test_flufl_sees_only_a_bounded_copy() -> None:
    """flufl.bounce's SimpleMatch is quadratic in line length (100 KB of long lines
    took 8 s): handed a megabyte of its worst lines, it sees at most TEXT_LIMIT."""
    from email.message import Message

    from trustmilter.bounce import recipients

    markers = ("Delivery to the following recipient failed\nDid not reach the following "
               "recipient\nA message that you sent could not be delivered\n")
    for line in ("a" * 3000, "<" * 3000, " " * 3000 + "x"):
        message = Message()
        message["From"] = "MAILER-DAEMON@example.net"
        message["Subject"] = "failure notice"
        message.set_payload(markers + (line + "\n") * 330)
        started = time.monotonic()
        recipients.flufl_failures(message, "")
        assert time.monotonic() - started < 5, line[:3]


def test_hostile_bounces_are_read_in_bounded_time() -> None:
    """Whole bounces built to be slow: a megabyte of each kind of worst text in the
    report, in the status part and in the returned message."""
    from trustmilter.bounce import explain

    size = 1_000_000
    head = (b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\n"
            b"Content-Type: text/plain\n\nThis is the mail system at host mx.example.net.\n"
            b"Delivery to the following recipient failed\n")
    fillers = [b"a" * size, b"<" * size, (b"a@b (expanded from: " * (size // 20)),
               (b"<r@example.org>: 550 " * (size // 21)), (b"\n" * size),
               (b"Final-Recipient: rfc822; r@example.org\n" * (size // 39))]
    for filler in fillers:
        for where in ("text", "status"):
            if where == "text":
                raw = head + filler + b"\n--B--\n"
            else:
                raw = head + b"\n--B\nContent-Type: message/delivery-status\n\n" + filler + b"\n--B--\n"
            started = time.monotonic()
            bounce = explain(raw)
            assert bounce.is_bounce
            assert time.monotonic() - started < 20, (filler[:20], where)


def test_the_returned_copy_and_its_signatures_cost_bounded_time() -> None:
    """The walk to the returned copy and the signatures on it: a megabyte of
    delimiters, of nested multiparts, of one long line, of DKIM-Signature fields."""
    from trustmilter.bounce.signature import dkim_marks, returned_copy

    class NoDns:
        def query(self, name: str, rdtype: str) -> object:
            raise AssertionError(f"looked up {name}")

    size = 1_000_000
    head = b"Content-Type: multipart/report; boundary=B\n\n"
    nested = b"--B\nContent-Type: multipart/mixed; boundary=B\n\n"
    signatures = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.net; s=s; h=from; bh=; b=\n"
    fillers = [b"--B\n" * (size // 4), nested * (size // len(nested)), b"a" * size,
               b"--B\nContent-Type: message/rfc822\n\n" + signatures * (size // len(signatures))
               + b"\nbody\n--B--\n"]
    for filler in fillers:
        started = time.monotonic()
        copy = returned_copy(head + filler)
        if copy is not None:
            assert dkim_marks(copy, ("example.org",), NoDns()) == []  # type: ignore[arg-type]
        assert time.monotonic() - started < 10, filler[:40]


def test_the_format_readers_cost_linear_time() -> None:
    """The readers of SES notifications, carrier and Notes notices and one-address
    notices, and the reading of unfolded multi-line replies, on the text that
    would make a careless reader slow: a megabyte without the character looked
    for, of labels without an address, of JSON nesting, of relay line breaks."""
    from email.message import Message

    from trustmilter.bounce.causes import cause_from_words
    from trustmilter.bounce.dsn import parse_fields
    from trustmilter.bounce.ses import read_ses

    size = 1_000_000
    started = time.monotonic()
    japanese = "送信できませんでした\n"
    for filler in ("a" * size, "    Recipient: <" * (size // 16), "<a@b>\n" * (size // 6),
                   "Could not be delivered to: " * (size // 27), "<<< 550 x\n" * (size // 10),
                   "x@" * (size // 2)):
        heuristics.read_text(japanese + filler)
    for filler in ("a" * size, "a@b\n" * (size // 4), "------- Failure Reasons" * (size // 23)):
        heuristics.read_text("------- Failure Reasons\n" + filler)
    for marker in ("unable to deliver your message to ", "Delivery of email to this address"):
        heuristics.read_text(marker + "a" * size)
        heuristics.read_text(marker * (size // len(marker)))
    assert len(heuristics.addresses_in(("a@b " + "c" * 50 + " ") * (size // 56))) == 1
    assert parse_fields("Diagnostic-Code: x\n" + "550-y\n" * (size // 6))[0][0][1].endswith("y")
    assert cause_from_words("550-" * (size // 4)) is None
    for body in ('{"notificationType": ' + "[" * size, '{"notificationType": "' + "a" * size,
                 '"notificationType"' + "{" * size, '{"notificationType": "Bounce", "x": "'
                 + "!\n " * (size // 3) + '"}', ('{"eventType":"Bounce",' * (size // 22))):
        message = Message()
        message["Content-Type"] = "text/plain"
        message.set_payload(body)
        notification = read_ses(message)
        assert notification is None or notification.recipients == ()
    assert time.monotonic() - started < 20


def test_the_later_readers_cost_linear_time() -> None:
    """The readers added for the third collection, on the text that would make a
    careless one slow: a cut reply's first line repeated on every line, labels
    without an address, host names without their "[ip] said:", runs of the words
    the new cause patterns open with."""
    from trustmilter.bounce.causes import cause_from_words
    from trustmilter.bounce.recipients import continued_reply

    size = 1_000_000
    started = time.monotonic()
    first = "550-5.7.1 first line"
    # At most REPLY_LINES lines are taken after the first, however many follow.
    assert len(continued_reply((first + "\n") * (size // 21), first) or "") < 1000
    assert len(continued_reply(first + "\n" + "550-x\n" * (size // 6), first) or "") < 1000
    assert continued_reply(("x " + first + "\nx\n") * (size // 25), first) is None
    assert continued_reply("a" * size, "550-" + "a" * size) is None
    for filler in ("a" * size, "reject reason: x\n" * (size // 17),
                   "reject reason: x\ntarget mail address: " + "a" * size,
                   "target mail address: <" * (size // 22)):
        heuristics.read_text(filler)
    for marker in ("Delivery failed ", "Each of the following recipients was rejected by a "
                   "remote mail server\n"):
        heuristics.read_text(marker + "1" * size)
        heuristics.read_text(marker * (size // len(marker)))
        heuristics.read_text(marker + "<a@b>\n" * (size // 6))
    exim = "This message was created automatically by mail delivery software\n"
    heuristics.read_text(exim + "could not be delivered to one or more of its " * (size // 45))
    for word_run in ("host " + "a" * size, "host a" + "[" * size, "all hosts " * (size // 10),
                     "sender " * (size // 7), "number of messages " * (size // 19),
                     "host a.b [1.2.3.4" + ":" * size):
        cause_from_words(word_run)
    assert time.monotonic() - started < 20


def test_the_fourth_collections_readers_cost_linear_time() -> None:
    """The readers added for the fourth collection, on the text that would make a
    careless one slow: GroupWise's list with lines that never become an address,
    "You sent mail to" without an address or with a megabyte of one, the words a
    challenge opens with, a delay's "could not be delivered" repeated, and the
    blank lines a stored file begins with (or blanks that never end a line)."""
    from email.message import Message

    from trustmilter.bounce.notices import is_challenge
    from trustmilter.bounce.stored import message_in_file
    from trustmilter.bounce.text import delay_notice

    size = 1_000_000
    started = time.monotonic()
    groupwise = "The message that you sent was undeliverable to the following:\n"
    for filler in ("a" * size, "\ta@" * (size // 3), "\t" + "a@b " * (size // 4) + "\n",
                   "\ta@b (" + "x" * size, "\ta@b\n" * (size // 5), "\n" * size):
        heuristics.read_text(groupwise + filler)
    for filler in ("a" * size, "You sent mail to " * (size // 17), "a@b " + "." * size,
                   "a@b " + "not a valid user " * (size // 17)):
        heuristics.read_text("From: <>\n\nYou sent mail to " + filler)
    for words in ("add yourself to my " * (size // 19), "held until " * (size // 11),
                  "not pre" * (size // 7), "waitlist" * (size // 8)):
        assert not is_challenge(words, ())
    message = Message()
    message["Subject"] = "Delayed Mail (still being retried)"
    assert delay_notice(message, "could not be delivered for 1 hour, " * (size // 34))
    assert message_in_file(b" " * size) == b" " * size
    assert message_in_file(b" \t\r\n" * (size // 4) + b"x") == b" \t\r\n" * (size // 4) + b"x"
    assert message_in_file(b"\n" * size + b"From: a@b\n") == b"From: a@b\n"
    assert time.monotonic() - started < 20


def test_the_weighed_cause_patterns_cost_linear_time() -> None:
    """The words added with the order of evidence, on the text that would make a
    careless pattern slow: runs of the words before a bounded gap (attachments
    refused, a listed link, a mailbox that exceeds), of a scan notice's first
    words, and a reply that is all of them repeated, read with and without a code.
    The reader reads only the first WORDS_LIMIT characters, so the patterns are
    also run on a whole 50 KB text here (quadratic work on it would take hours;
    linear work takes about a second for all of them)."""
    from trustmilter.bounce.causes import _GENERIC_WORDS, _SCAN_NOTICE, _SPECIFIC_WORDS

    size = 1_000_000
    started = time.monotonic()
    for run in ("not accepting " * (size // 14), "refuses " + "word " * (size // 5),
                "attachment " * (size // 11), "file type " * (size // 10),
                "blacklisted " * (size // 12), "urls in " * (size // 8),
                "mail box " * (size // 9), "no longer on " * (size // 13),
                "scanned for " * (size // 12), "uri " * (size // 4),
                "isn't in my list of " * (size // 20)):
        assert cause_of("5.7.1", run) is not None
        assert cause_of(None, run) is not None
        for pattern, _ in (*_SPECIFIC_WORDS, *_GENERIC_WORDS):
            pattern.search(run[:50_000])
        _SCAN_NOTICE.sub(" ", run)
    assert time.monotonic() - started < 20
