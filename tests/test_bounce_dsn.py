"""RFC 3464 reports in the variants real MTAs send, and what each recipient reads as.

The samples are written here (example domains); each is one variant found
in real bounces (tests/data/bounces holds the real ones and their figures).
"""

from __future__ import annotations

import base64
import quopri

import pytest

from trustmilter.bounce import Cause, explain
from trustmilter.bounce.dsn import address_of, parse_fields

HEAD = b"""\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: alice@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="R"

--R
Content-Type: text/plain

Your message could not be delivered.

--R
Content-Type: message/delivery-status
"""

STATUS = b"""\
Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User unknown
"""

TAIL = b"""
--R
Content-Type: text/rfc822-headers

From: alice@example.com
To: bob@example.org
Message-ID: <m1@example.com>
Subject: Hello

--R--
"""


def report(status: bytes = STATUS, part_headers: bytes = b"", head: bytes = HEAD) -> bytes:
    return head + part_headers + b"\n" + status + TAIL


def one(raw: bytes) -> tuple[str, str | None, str | None, bool, Cause | None]:
    bounce = explain(raw)
    assert bounce.is_bounce
    (recipient,) = bounce.recipients
    return (recipient.address, recipient.status, recipient.status_source, recipient.permanent,
            recipient.cause)


BOB = ("bob@example.org", "5.1.1", "report", True, Cause.USER_UNKNOWN)


def test_the_plain_report() -> None:
    assert one(report()) == BOB
    assert explain(report()).reporting_mta == "mx.example.net"


@pytest.mark.parametrize("content_type", [
    b"multipart/mixed",  # no report at all
    b"multipart/report; report-type=disposition-notification",  # the wrong type
    b"multipart/report",  # no report-type
])
def test_the_report_type_does_not_matter(content_type: bytes) -> None:
    raw = report().replace(b"multipart/report; report-type=delivery-status", content_type)
    assert one(raw) == BOB


def test_a_base64_status_part() -> None:
    encoded = base64.encodebytes(STATUS)
    assert one(report(encoded, b"Content-Transfer-Encoding: base64\n")) == BOB


def test_a_quoted_printable_status_part() -> None:
    status = STATUS.replace(b"User unknown", b"User unknown for a very long reason " * 3)
    encoded = quopri.encodestring(status)
    assert b"=\n" in encoded  # soft line breaks
    assert one(report(encoded, b"Content-Transfer-Encoding: quoted-printable\n")) == BOB


def test_a_status_part_labelled_text_plain() -> None:
    raw = report().replace(b"Content-Type: message/delivery-status", b"Content-Type: text/plain")
    assert one(raw) == BOB


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"])
def test_odd_line_ends(line_end: bytes) -> None:
    assert one(report().replace(b"\n", line_end)) == BOB


def test_no_blank_lines_between_blocks() -> None:
    """Per-message fields, then two recipients, with no empty line anywhere."""
    status = (b"Reporting-MTA: dns; mx.example.net\n"
              b"Final-Recipient: rfc822; bob@example.org\nAction: failed\nStatus: 5.1.1\n"
              b"Final-Recipient: rfc822; carol@example.org\nAction: failed\nStatus: 5.2.2\n")
    bounce = explain(report(status))
    assert [(r.address, r.status, r.cause) for r in bounce.recipients] == [
        ("bob@example.org", "5.1.1", Cause.USER_UNKNOWN),
        ("carol@example.org", "5.2.2", Cause.MAILBOX_FULL)]
    assert bounce.reporting_mta == "mx.example.net"


def test_fields_in_any_order_and_case() -> None:
    status = (b"reporting-mta: DNS; mx.example.net\n\n"
              b"STATUS: 5.1.1\nACTION: Failed\nFINAL-RECIPIENT: RFC822;bob@example.org\n")
    assert one(report(status)) == BOB


def test_original_recipient_is_the_address_the_sender_used() -> None:
    status = STATUS.replace(b"Final-Recipient: rfc822; bob@example.org",
                            b"Final-Recipient: rfc822; bob.smith@mailhost.example.org\n"
                            b"Original-Recipient: rfc822;Bob@example.org")
    bounce = explain(report(status))
    (bob,) = bounce.recipients
    assert (bob.address, bob.original_recipient, bob.final_recipient, bob.preferred) == (
        "Bob@example.org", "Bob@example.org", "bob.smith@mailhost.example.org", "original")
    assert bounce.to_json()["recipients"][0]["preferred"] == "original"


def test_x400_final_recipient() -> None:
    """X.400 gateways name the final recipient in X.400 form (RFC 2156)."""
    status = STATUS.replace(b"Final-Recipient: rfc822; bob@example.org",
                            b"Original-Recipient: rfc822; bob@example.org\n"
                            b"Final-Recipient: x400; /S=bob/OU=mail/PRMD=EXAMPLE/ADMD= /C=GB/")
    assert one(report(status)) == BOB
    assert address_of("x400; /RFC-822=bob(a)example.org/ADMD= /C=WW/") == "bob@example.org"
    assert address_of("x400; /S=bob/ADMD= /C=WW/") is None


@pytest.mark.parametrize(("field", "address"), [
    ("rfc822; bob@example.org", "bob@example.org"),
    ("rfc822;<bob@example.org>", "bob@example.org"),
    ("RFC822; <bob@example.org> (Bob Smith)", "bob@example.org"),
    ("rfc822; bob@example.org (was: robert@example.org)", "bob@example.org"),
    ("<bob@example.org>", "bob@example.org"),  # the address type left out
    ("LOCAL;<bob@example.org>", "bob@example.org"),
    ("system;<>", None),
    ("rfc822;", None),
    ("", None),
])
def test_address_types_and_comments(field: str, address: str | None) -> None:
    assert address_of(field) == address


def test_a_multi_line_diagnostic() -> None:
    """Gmail's reply: a code on every line of a folded field."""
    status = STATUS.replace(
        b"Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User unknown",
        b"Status: 5.0.0\nDiagnostic-Code: smtp; 550-5.1.1 The email account that you tried to\n"
        b"    reach does not exist. Please try 550-5.1.1 double-checking the recipient's\n"
        b"    email address for typos. 550 5.1.1 https://support.example.com/answer")
    bounce = explain(report(status))
    (bob,) = bounce.recipients
    assert (bob.status, bob.status_source, bob.smtp_code, bob.cause) == (
        "5.1.1", "diagnostic", "550", Cause.USER_UNKNOWN)
    assert bob.diagnostic is not None and "\n" not in bob.diagnostic


def test_the_reply_code_behind_a_relay_summary() -> None:
    """Amazon SES: its own 5.1.0 first, then the remote server's 550 5.2.2."""
    status = STATUS.replace(
        b"Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User unknown",
        b"Status: 5.0.0 (permanent failure)\nDiagnostic-Code: smtp; 5.1.0 - Unknown address "
        b"error 550-'5.2.2 <bob@example.org>... Mailbox Full' (delivery attempts: 0)")
    assert one(report(status)) == (
        "bob@example.org", "5.2.2", "diagnostic", True, Cause.MAILBOX_FULL)


def test_status_sources() -> None:
    stated = one(report())
    replied = one(report(STATUS.replace(b"Status: 5.1.1", b"Status: 5.0.0")))
    inferred = one(report(STATUS.replace(b"Status: 5.1.1\n", b"").replace(
        b"550 5.1.1 <bob@example.org>: User unknown", b"550 <bob@example.org>: User unknown")))
    basic_only = explain(report(STATUS.replace(b"Status: 5.1.1", b"Status: 553 Too large").replace(
        b"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User unknown\n", b"")))
    assert [stated[2], replied[2], inferred[2]] == ["report", "diagnostic", "inferred"]
    assert inferred[1] == "5.1.1"
    (recipient,) = basic_only.recipients
    assert (recipient.smtp_code, recipient.status, recipient.status_source, recipient.cause) == (
        "553", "5.3.4", "inferred", Cause.MESSAGE_TOO_LARGE)


def test_the_words_win_over_a_wrong_code() -> None:
    status = STATUS.replace(b"Status: 5.1.1", b"Status: 5.7.1").replace(
        b"550 5.1.1 <bob@example.org>: User unknown",
        b"554 5.7.1 <bob@example.org>: Recipient address rejected: Nonexistent user")
    assert one(report(status))[4] is Cause.USER_UNKNOWN


def test_a_delay_notice() -> None:
    status = STATUS.replace(b"Action: failed\nStatus: 5.1.1", b"Action: delayed\nStatus: 4.4.1")
    status = status.replace(b"550 5.1.1 <bob@example.org>: User unknown",
                            b"451 4.4.1 connection timed out")
    bounce = explain(report(status))
    (bob,) = bounce.recipients
    assert (bob.action, bob.status, bob.permanent, bob.cause) == (
        "delayed", "4.4.1", False, Cause.UNREACHABLE)


def test_a_failure_with_a_temporary_code_is_given_up() -> None:
    """Action failed with a 4.x.x code: the relay stopped trying (an expired message)."""
    status = STATUS.replace(b"Status: 5.1.1", b"Status: 4.4.7").replace(
        b"550 5.1.1 <bob@example.org>: User unknown", b"Message timed out")
    assert one(report(status)) == ("bob@example.org", "4.4.7", "report", True, Cause.EXPIRED)


@pytest.mark.parametrize("action", [b"relayed", b"delivered", b"expanded"])
def test_relayed_and_delivered_are_no_failures(action: bytes) -> None:
    """A report of nothing but successes (RFC 3464 §2.3.3) is no bounce at all;
    beside a failure, a success is a recipient that did not fail."""
    status = STATUS.replace(b"Action: failed\nStatus: 5.1.1", b"Action: " + action +
                            b"\nStatus: 2.0.0").replace(b"Diagnostic-Code: smtp; 550 5.1.1 "
                                                        b"<bob@example.org>: User unknown\n", b"")
    bounce = explain(report(status))
    assert not bounce.is_bounce and bounce.recipients == ()
    assert bounce.problems == ("a notice of successful delivery (RFC 3464), not a bounce",)
    mixed = explain(report(status + b"\nFinal-Recipient: rfc822; carol@example.org\n"
                                     b"Action: failed\nStatus: 5.1.1\n"))
    assert mixed.is_bounce
    bob, carol = mixed.recipients
    assert (bob.failed, bob.permanent, bob.cause, bob.status) == (False, False, None, "2.0.0")
    assert (carol.failed, carol.cause) == (True, Cause.USER_UNKNOWN)
    assert mixed.to_json()["recipients"][0]["cause"] is None


def test_non_standard_actions() -> None:
    for action in (b"failure", b"error", b"failed (Bad destination mailbox address)"):
        status = STATUS.replace(b"Action: failed", b"Action: " + action)
        (bob,) = explain(report(status)).recipients
        assert (bob.action, bob.permanent) == ("failed", True)


def test_one_recipient_per_address_however_many_blocks() -> None:
    """Sendmail writes a block per alias target, all naming the address used."""
    block = b"Final-Recipient: RFC822; <joe@example.org>\nAction: failed\nStatus: 5.1.1\n\n"
    bounce = explain(report(b"Reporting-MTA: dns; mx.example.net\n\n" + block * 11))
    assert [r.address for r in bounce.recipients] == ["joe@example.org"]


def test_the_report_text_fills_in_a_bare_block() -> None:
    """A status block without Diagnostic-Code: the reply is in the text part."""
    raw = report(STATUS.replace(b"Status: 5.1.1", b"Status: 5.0.0").replace(
        b"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User unknown\n", b""))
    raw = raw.replace(b"Your message could not be delivered.",
                      b"Failed to deliver to 'bob@example.org'\n host says: 550 5.1.1 User unknown")
    assert one(raw) == ("bob@example.org", "5.1.1", "diagnostic", True, Cause.USER_UNKNOWN)


def test_an_empty_status_part_falls_back_to_the_text() -> None:
    raw = report(b"").replace(
        b"Your message could not be delivered.",
        b"This is the mail system at host mx.example.net.\n\n"
        b"<bob@example.org>: host mx.example.org[192.0.2.25] said: 550 5.1.1\n"
        b"    <bob@example.org>... User unknown (in reply to RCPT TO command)")
    assert one(raw) == ("bob@example.org", "5.1.1", "diagnostic", True, Cause.USER_UNKNOWN)
    assert "delivery-status part names no recipient" in explain(raw).problems


def test_parse_fields_keeps_garbage_out() -> None:
    blocks = parse_fields("\x00 junk\nReporting-MTA: dns; a.example\n  (folded)\n\n"
                          "not a field\nFinal-Recipient: rfc822; b@example.org\n")
    assert blocks == [[("reporting-mta", "dns; a.example (folded)")],
                      [("final-recipient", "rfc822; b@example.org")]]


def test_an_abuse_report_is_no_bounce() -> None:
    raw = report().replace(b"report-type=delivery-status", b"report-type=feedback-report")
    assert explain(raw).is_bounce is False


def test_a_bounce_that_returns_a_large_attachment_is_read_from_its_start() -> None:
    raw = report() + b"x" * 3_000_000
    assert one(raw) == BOB
