"""RFC 5322 header sanity (docs/rules.md §4); no DNS is involved."""

from __future__ import annotations

import time

import pytest

from helpers import make_ctx
from trustmilter.checks import headers
from trustmilter.checks.headers import HeadersCheck
from trustmilter.config.errors import InvalidField
from trustmilter.mail.addresses import parse_address_list
from trustmilter.results import Outcome

GOOD = {
    "From": "Alice Example <alice@example.com>",
    "To": "Support <support@example.org>",
    "Subject": "Hello",
    "Date": "Mon, 24 Nov 2025 10:00:00 +0000",
    "Message-ID": "<1@example.com>",
}


class NoDns:
    """A resolver that fails the test if the check asks anything."""

    def query(self, name, rdtype):
        raise AssertionError(f"headers asked DNS for {name} {rdtype}")


def message(fields=None, body=b"Hello.\r\n", drop=(), extra=()):
    """A message built from GOOD with `fields` replaced, `drop` removed, `extra` appended."""
    values = {**GOOD, **(fields or {})}
    lines = [
        f"{name}: {value}".encode("utf-8", "surrogateescape")
        if isinstance(value, str) else name.encode() + b": " + value
        for name, value in values.items() if name not in drop
    ]
    lines += [line if isinstance(line, bytes) else line.encode() for line in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def run(raw, config=None):
    """Run the check on raw message bytes and return its single result."""
    ctx = make_ctx(NoDns(), message=raw)
    [result] = HeadersCheck(config or headers.Config()).run(ctx)
    assert result.check == "headers" and result.method is None
    return result


def names(result):
    return [f.name for f in result.findings]


def test_well_formed_message_passes():
    """docs/rules.md §4: RFC 5322 formatted, with good From, To, Subject, Date, Message-ID."""
    result = run(message())
    assert result.outcome is Outcome.PASS
    assert result.findings == ()


def test_no_message_is_skipped():
    """Before end of message there is nothing to judge."""
    [result] = HeadersCheck(headers.Config()).run(make_ctx(NoDns()))
    assert result.outcome is Outcome.SKIPPED


def test_from_missing():
    """RFC 5322 §3.6: From is required."""
    result = run(message(drop=("From",)))
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["headers.from_missing"]


def test_from_multiple():
    """RFC 5322 §3.6: From occurs exactly once."""
    assert names(run(message(extra=["From: bob@example.net"]))) == ["headers.from_multiple"]


@pytest.mark.parametrize(
    "value",
    ["alice", "Alice <>", "<alice@>", "alice@exa..mple.com", '"unterminated <a@example.com>',
     "", "a@b@c.example.com", "undisclosed-recipients:;"],
)
def test_from_unparseable(value):
    """docs/rules.md §4 "correctly formatted From:": one local@domain mailbox at least."""
    assert "headers.from_unparseable" in names(run(message({"From": value})))


@pytest.mark.parametrize(
    "value",
    ['"Doe, John" <john@example.com>', "=?utf-8?q?J=C3=B6rg?= <j@example.com>",
     "john@example.com (John (the) Doe)", "a@example.com, b@example.net",
     "Jörg <jörg@exämple.com>"],
)
def test_from_parseable_forms(value):
    """RFC 5322 §3.4, RFC 2047 display names and RFC 6532 UTF-8 are all fine."""
    assert run(message({"From": value})).outcome is Outcome.PASS


def test_date_missing_and_invalid():
    """RFC 5322 §3.6: one orig-date; §3.3 syntax."""
    assert names(run(message(drop=("Date",)))) == ["headers.date_missing"]
    assert names(run(message({"Date": "yesterday at noon"}))) == ["headers.date_invalid"]
    doubled = run(message(extra=["Date: Mon, 24 Nov 2025 11:00:00 +0000"]))
    assert names(doubled) == ["headers.date_invalid"]


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        (b"Caf\xe9 offer", "8-bit"),  # Latin-1, not UTF-8, not RFC 2047
        (b"bell\x07here", "control"),
        (b"=?utf-8?b?!!!notbase64?=", "base64"),
        (b"=?x-no-such-charset?q?abc?=", "charset"),
        (b"=?us-ascii?q?=E9t=E9?=", "us-ascii"),
        (b"=?utf-8?q?ring=07?=", "control"),
    ],
)
def test_subject_malformed(subject, why):
    """docs/rules.md §4 "correctly formatted Subject:"; RFC 2047 §2, §4."""
    result = run(message({"Subject": subject}))
    assert "headers.subject_malformed" in names(result)
    detail = next(f.detail for f in result.findings if f.name == "headers.subject_malformed")
    assert why in detail


def test_subject_twice():
    """RFC 5322 §3.6: at most one Subject."""
    assert names(run(message(extra=["Subject: again"]))) == ["headers.subject_malformed"]


@pytest.mark.parametrize(
    "subject",
    ["=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Berlin", "=?ISO-8859-1?B?Q2Fm6Q==?=",
     "=?utf-8*de?q?Hallo?=", "Grüße in UTF-8 (RFC 6532)", "a =? b ?= c", ""],
)
def test_subject_fine(subject):
    """RFC 2047 words, RFC 2231 language tags and RFC 6532 UTF-8 are well-formed."""
    assert run(message({"Subject": subject})).outcome is Outcome.PASS


def test_missing_subject_and_to_are_fine_where_not_required():
    """RFC 5322 §3.6: Subject and To are optional (Bcc-only mail has no To)."""
    unrequired = headers.Config(required=())
    assert run(message(drop=("Subject", "To")), unrequired).outcome is Outcome.PASS


def test_missing_subject_and_to_are_findings_by_default():
    """Form mail "should contain" Subject and To; required by default."""
    result = run(message(drop=("Subject", "To")))
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["headers.subject_missing", "headers.to_missing"]
    assert run(message(drop=("Subject",))).findings[0].detail == "no Subject field"


def test_reply_to_missing_only_where_required():
    """Plain mail without Reply-To is normal; form mail must have one."""
    assert run(message()).outcome is Outcome.PASS
    form = headers.Config(required=("subject", "to", "reply_to"))
    assert names(run(message(), form)) == ["headers.reply_to_missing"]
    assert run(message(extra=("Reply-To: Bob <bob@example.net>",)), form).findings == ()


def test_the_seed_form_fields_all_missing():
    """A form message with From and Date only: each missing field is its own finding."""
    form = headers.Config(required=("subject", "to", "reply_to"))
    result = run(message(drop=("Subject", "To")), form)
    assert names(result) == ["headers.subject_missing", "headers.to_missing",
                             "headers.reply_to_missing"]


def test_an_empty_but_present_field_is_not_missing():
    """`Subject:` with no text is present; an empty To is malformed, not missing."""
    assert run(message({"Subject": ""})).outcome is Outcome.PASS
    assert names(run(message({"To": ""}))) == ["headers.to_malformed"]


@pytest.mark.parametrize("bad", ["from", "Subject", "cc", ""])
def test_required_names_only_optional_fields(bad):
    with pytest.raises(InvalidField, match=r"required\[1\]"):
        headers.Config(required=("subject", bad))


@pytest.mark.parametrize("value", ["", "support", "Support <support@>", "a@example.com,,<"])
def test_to_malformed(value):
    """docs/rules.md §4 "correctly formatted To:"."""
    assert names(run(message({"To": value}))) == ["headers.to_malformed"]


def test_to_group_and_duplicate():
    """RFC 5322 §3.4 groups may be empty; §3.6 allows one To field only."""
    assert run(message({"To": "undisclosed-recipients:;"})).outcome is Outcome.PASS
    assert names(run(message(extra=["To: b@example.net"]))) == ["headers.to_malformed"]


def test_reply_to():
    """docs/rules.md §4 "correctly formatted Reply-To:": parseable, at most once (§3.6)."""
    good = run(message(extra=["Reply-To: Help <help@example.com>"]))
    bad = run(message(extra=["Reply-To: help at example dot com"]))
    twice = run(message(extra=["Reply-To: a@example.com", "Reply-To: b@example.com"]))
    assert good.outcome is Outcome.PASS
    assert names(bad) == ["headers.reply_to_malformed"]
    assert names(twice) == ["headers.reply_to_malformed"]


def test_message_id_missing():
    """RFC 5322 §3.6.4: every message SHOULD have a Message-ID."""
    assert names(run(message(drop=("Message-ID",)))) == ["headers.message_id_missing"]


def test_nul_bytes_in_body():
    """RFC 5322 §2.1 / RFC 5321 §4.5.2: NUL is never allowed in a message."""
    result = run(message(body=b"hello\x00world\r\n"))
    assert names(result) == ["headers.nul_bytes"]


def test_eight_bit_header_not_utf8():
    """Raw legacy 8-bit in a header is reported; valid UTF-8 is RFC 6532 (no finding)."""
    latin = run(message(extra=[b"X-Note: caf\xe9"]))
    utf8 = run(message(extra=["X-Note: café"]))
    assert names(latin) == ["headers.8bit_unencoded"]
    assert "X-Note" in latin.findings[0].detail
    assert utf8.outcome is Outcome.PASS


def test_line_too_long():
    """RFC 5322 §2.1.1: lines are at most 998 octets; 998 itself is fine."""
    ok = run(message(body=b"x" * 998 + b"\r\n"))
    long = run(message(body=b"x" * 999 + b"\r\n"))
    assert ok.outcome is Outcome.PASS
    assert names(long) == ["headers.line_too_long"]
    assert "999 octets" in long.findings[0].detail


def test_pathological_inputs_are_fast_and_reported():
    """A 1 MB header line, NULs, 8-bit garbage, no From: a result every time, quickly."""
    cases = [
        b"Subject: " + b"x" * 1_000_000 + b"\r\n\r\nbody",
        b"From: " + b"(" * 1_000_000 + b"\r\n\r\n",
        b"From: " + b'"\\' * 500_000 + b"\r\n\r\n",
        b"To: " + b"<" * 1_000_000 + b"\r\nFrom: a@example.com\r\n\r\n",
        b"Subject: " + b"=?a?q?" * 150_000 + b"\r\n\r\n",
        b"\x00\xff\xfe garbage \x80" * 50_000,
        b"From: a@example.com\r\nX-Folded: start\r\n" + b" x\r\n" * 50_000 + b"\r\n",
        b"",
        b"no header at all, just text",
    ]
    start = time.monotonic()
    for raw in cases:
        result = run(raw)
        assert result.outcome is Outcome.FAIL
    assert time.monotonic() - start < 10


def test_one_megabyte_subject_line():
    """A 1 MB Subject is reported as an over-long line, not a crash."""
    result = run(message({"Subject": "x" * 1_000_000}))
    assert names(result) == ["headers.line_too_long"]
    assert len(result.findings[0].detail) < 100


def test_truncated_mime_still_judged():
    """Truncated MIME (no closing boundary) is a body matter; headers still pass."""
    raw = message(
        {"Content-Type": 'multipart/mixed; boundary="b1"', "MIME-Version": "1.0"},
        body=b"--b1\r\nContent-Type: text/plain\r\n\r\npart one, then noth",
    )
    assert run(raw).outcome is Outcome.PASS


def test_address_list_groups_and_problems():
    """RFC 5322 §3.4 groups and obs-route are parsed; problems are named."""
    parsed = parse_address_list("Team: a@example.com, <@relay.example:b@example.net>;")
    assert [m.address for m in parsed.mailboxes] == ["a@example.com", "b@example.net"]
    assert parsed.ok and parsed.groups == 1
    assert parse_address_list("a@example.com (open").problems == ("unterminated comment",)


def nested_body(depth: int) -> tuple[str, bytes]:
    """(the top Content-Type, the body) of a text part `depth` multipart levels down."""
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i)
        for i in range(1, depth)
    )
    closing = b"".join(b"\r\n--n%d--" % i for i in reversed(range(depth)))
    return 'multipart/mixed; boundary="n0"', b"--n0\r\n" + opening + b"\r\nhi" + closing + b"\r\n"


@pytest.mark.parametrize(("depth", "expected"), [
    (1, []), (100, []), (101, ["headers.mime_too_deep"]),
    (3000, ["headers.mime_too_deep", "headers.mime_too_many_parts"]),
])
def test_mime_nesting_past_the_limit(depth, expected):
    """Nesting deeper than any mail program builds; past MAX_PARTS the rest is not read."""
    content_type, body = nested_body(depth)
    result = run(message({"MIME-Version": "1.0", "Content-Type": content_type}, body=body))
    assert names(result) == expected
    if expected:
        assert f"nested {min(depth, 1999)} levels" in result.findings[0].detail


def test_long_line_scan_agrees_with_splitting_every_line():
    """`longest_line` decides from a few `rfind` calls whether any line can be
    over 998 octets; that must agree with looking at every line."""
    from trustmilter.checks.headers import _may_have_long_line

    for lengths in ([], [998], [999], [998, 998], [997, 999], [1, 998, 1], [2000],
                    [500] * 9, [998] * 5 + [999], [0, 0, 999]):
        for ending in (b"", b"\n", b"\r\n"):
            raw = b"\n".join(b"x" * n for n in lengths) + ending
            assert _may_have_long_line(raw) == (max(map(len, raw.split(b"\n"))) > 998), (
                lengths, ending)
