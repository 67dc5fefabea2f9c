"""The verdict line's quoting: every value reads back as written (control characters and
line separators as '?')."""

from __future__ import annotations

import pytest

from trustmilter.daemon.verdictlog import format_verdict_line, parse_verdict_line


@pytest.mark.parametrize(
    ("value", "written", "read_back"),
    [
        ("pass", "pass", "pass"),
        ("", "-", ""),
        ("550 5.7.1 no", '"550 5.7.1 no"', "550 5.7.1 no"),
        ('say "hi"', '"say \\"hi\\""', 'say "hi"'),
        ("a\\b", '"a\\\\b"', "a\\b"),
        ("k=v", '"k=v"', "k=v"),
        ("tab\there", "tab?here", "tab?here"),
        ("bell\x07", "bell?", "bell?"),
        ("nul\x00 and space", '"nul? and space"', "nul? and space"),
        ("\x7f", "?", "?"),
        # Line and paragraph separators a Unicode line reader splits at.
        ("a\u2028b", "a?b", "a?b"),
        ("a\u2029b", "a?b", "a?b"),
        ("nel\x85", "nel?", "nel?"),
        ("c1\x9b[31m", "c1?[31m", "c1?[31m"),
        ("grüße,例え", "grüße,例え", "grüße,例え"),
        # Bytes that were not UTF-8 (surrogate escapes): written as \xNN, so the
        # line encodes as UTF-8 for syslog; read back as that escape text.
        (b"<\xff\xfe@example.net>".decode("utf-8", "surrogateescape"),
         '"<\\\\xff\\\\xfe@example.net>"', "<\\xff\\xfe@example.net>"),
        ("lone \ud800", '"lone \\\\ud800"', "lone \\ud800"),
        ("<a@example.com>,<b@example.org>", "<a@example.com>,<b@example.org>",
         "<a@example.com>,<b@example.org>"),
    ],
)
def test_values_are_quoted_only_when_needed_and_read_back(value, written, read_back) -> None:
    line = format_verdict_line("4BxYz1234", [("action", "accept"), ("reply", value), ("ms", "3")])
    assert line == f"4BxYz1234: action=accept reply={written} ms=3"
    queue_id, fields = parse_verdict_line("Nov 25 mx trustmilter[7]: " + line)
    assert queue_id == "4BxYz1234"
    assert fields == {"action": "accept", "reply": read_back, "ms": "3"}


def test_a_line_with_8bit_input_encodes_as_utf8_for_syslog() -> None:
    """SysLogHandler encodes each line as UTF-8; a lone surrogate made it drop the line."""
    sender = b"<\xff\xfe@example.net>".decode("utf-8", "surrogateescape")
    helo = b"h\xff.example.net".decode("utf-8", "surrogateescape")
    line = format_verdict_line("4BxYz1234", [("action", "quarantine"), ("helo", helo),
                                             ("from", sender)])
    line.encode("utf-8")  # raised UnicodeEncodeError before
    fields = parse_verdict_line(line)[1]
    assert fields["from"] == "<\\xff\\xfe@example.net>" and fields["helo"] == "h\\xff.example.net"


@pytest.mark.parametrize("separator", ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e",
                                       "\x85", "\u2028", "\u2029"])
def test_a_sender_cannot_start_a_verdict_line_of_its_own(separator: str) -> None:
    """A HELO or address holding any character str.splitlines() ends a line at
    stays on its own line: read back line by line, there is one verdict."""
    forged = f"mail.example.net{separator}4FORGED1: action=accept from=<a@example.net>"
    line = format_verdict_line("4REAL1", [("action", "quarantine"), ("helo", forged),
                                          ("rcpt", f"<b@example.org>{separator}x")])
    assert len(line.splitlines()) == 1
    queue_id, fields = parse_verdict_line(line)
    assert queue_id == "4REAL1" and fields["action"] == "quarantine"
    assert fields["helo"] == "mail.example.net?4FORGED1: action=accept from=<a@example.net>"
