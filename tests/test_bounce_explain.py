"""Bounces of seven MTAs, an RFC 3464 report, a non-bounce and broken reports.

The samples are written here from the documented formats (RFC 3464/6522 and
the texts each MTA prints); none is copied from a corpus.
"""

from __future__ import annotations

import pytest

from trustmilter.bounce import Cause, explain

POSTFIX_DSN = b"""\
Return-Path: <>
Received: by mail.example.com (Postfix) id 4F1A2; Tue, 24 Nov 2026 10:00:05 +0000 (UTC)
From: MAILER-DAEMON@mail.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: alice@example.com
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<bob@example.net>: host mx.example.net[192.0.2.25] said: 550 5.1.1 <bob@example.net>:
    Recipient address rejected: User unknown in local recipient table

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.com
X-Postfix-Queue-ID: 4F1A2
Arrival-Date: Tue, 24 Nov 2026 10:00:01 +0000 (UTC)

Final-Recipient: rfc822; bob@example.net
Original-Recipient: rfc822;Bob@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected:
    User unknown in local recipient table

Final-Recipient: rfc822; carol@example.org
Action: delayed
Status: 4.2.2
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full

Final-Recipient: rfc822; dave@example.org
Action: failed
Status: 5.7.1
Diagnostic-Code: smtp; 554 5.7.1 Service unavailable; client [192.0.2.10] blocked using zen.example.net (listed as spam source)

--B1
Content-Type: message/rfc822

Return-Path: <alice@example.com>
From: Alice <alice@example.com>
To: bob@example.net, carol@example.org, dave@example.org
Subject: Quarterly report
Date: Tue, 24 Nov 2026 10:00:00 +0000
Message-ID: <q1.20261124@example.com>

Hello.

--B1--
"""

EXIM = b"""\
Return-Path: <>
Received: from mail by smtp.example.net with local (Exim 4.96) id 1a2b3c; Tue, 24 Nov 2026 11:00:00 +0000
From: Mail Delivery System <Mailer-Daemon@smtp.example.net>
To: alice@example.com
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  erin@example.org
    host mx.example.org [198.51.100.25]
    SMTP error from remote mail server after RCPT TO:<erin@example.org>:
    550 5.1.1 <erin@example.org>: Recipient address rejected: User unknown
  frank@nowhere.test
    Unrouteable address

------ This is a copy of the message, including all the headers. ------

Return-path: <alice@example.com>
From: alice@example.com
To: erin@example.org, frank@nowhere.test
Subject: Lunch
Message-Id: <lunch.1@example.com>
Date: Tue, 24 Nov 2026 10:59:00 +0000

Lunch?
"""

QMAIL = b"""\
Return-Path: <>
From: MAILER-DAEMON@mx.example.net
To: alice@example.com
Subject: failure notice

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<gina@example.org>:
198.51.100.25 does not like recipient.
Remote host said: 550 5.1.1 <gina@example.org>... User unknown
Giving up on 198.51.100.25.

<hank@example.org>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <alice@example.com>
From: alice@example.com
To: gina@example.org
Subject: Hi Gina
Message-ID: <gina.2@example.com>

Hi.
"""

EXCHANGE = b"""\
From: postmaster@example.org
To: alice@example.com
Subject: Undeliverable: Budget
Content-Type: text/plain; charset="utf-8"

Delivery has failed to these recipients or groups:

ivan@example.org (ivan@example.org)
The e-mail address you entered couldn't be found. Please check the recipient's e-mail address and try to resend the message.

Diagnostic information for administrators:

Generating server: EX01.example.org

ivan@example.org
Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'

Original message headers:

Return-Path: <alice@example.com>
From: Alice <alice@example.com>
To: ivan@example.org
Subject: Budget
Message-ID: <budget.3@example.com>
Date: Tue, 24 Nov 2026 12:00:00 +0000
"""

GMAIL = b"""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.example>
To: alice@example.com
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain; charset=UTF-8

** Address not found **

Your message wasn't delivered to judy@example.net because the address couldn't be found, or is unable to receive mail.

The response from the remote server was:
550 5.1.1 The email account that you tried to reach does not exist.
"""

YAHOO = b"""\
From: MAILER-DAEMON@yahoo.example
To: alice@example.com
Subject: Failure Notice

Sorry, we were unable to deliver your message to the following address.

<karl@example.org>:
Remote host said: 554: delivery error: dd This user doesn't have a example.org account (karl@example.org) [0] - mta1.mail.example.org

--- Below this line is a copy of the message.

From: alice@example.com
To: karl@example.org
Subject: Tickets
Message-ID: <tickets.4@example.com>
"""

SENDMAIL = b"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.net>
To: <alice@example.com>
Subject: Returned mail: see transcript for details

The original message was received at Tue, 24 Nov 2026 13:00:00 GMT
from host.example.com [192.0.2.10]

   ----- The following addresses had permanent fatal errors -----
<liam@example.org>
    (reason: 550 5.2.2 <liam@example.org>... Mailbox full (over quota))

   ----- Transcript of session follows -----
... while talking to mx.example.org.:
>>> RCPT To:<liam@example.org>
<<< 550 5.2.2 <liam@example.org>... Mailbox full (over quota)
"""

NOT_A_BOUNCE = b"""\
From: Carol <carol@example.org>
To: alice@example.com
Subject: About the delivery failure last week
Message-ID: <human.5@example.org>

Hi Alice, the mail delivery software failed again, the status was 550 5.1.1
for bob@example.net. Delivery has failed? Can you check?
"""


def _one(raw: bytes):
    bounce = explain(raw, own_domains=("example.com",))
    assert bounce.is_bounce
    return bounce


def test_rfc3464_several_recipients() -> None:
    bounce = _one(POSTFIX_DSN)
    assert (bounce.format, bounce.reporting_mta, bounce.reporting_mta_source) == (
        "rfc3464", "mail.example.com", "Reporting-MTA")
    assert bounce.own is True
    bob, carol, dave = bounce.recipients
    # The address as the sender wrote it: the report's Original-Recipient.
    assert (bob.address, bob.action, bob.status, bob.smtp_code) == (
        "Bob@example.net", "failed", "5.1.1", "550")
    assert (bob.original_recipient, bob.final_recipient, bob.preferred) == (
        "Bob@example.net", "bob@example.net", "original")
    assert bob.status_source == "report" and bob.permanent and bob.remote_mta == "mx.example.net"
    assert (carol.preferred, carol.original_recipient, carol.permanent) == ("final", None, False)
    assert bob.diagnostic is not None and "User unknown in local recipient table" in bob.diagnostic
    assert bob.cause is Cause.USER_UNKNOWN and bob.status_class == "permanent"
    assert (carol.action, carol.status, carol.status_class, carol.cause) == (
        "delayed", "4.2.2", "temporary", Cause.MAILBOX_FULL)
    assert (dave.status, dave.cause) == ("5.7.1", Cause.BLOCKLISTED)
    returned = bounce.returned
    assert returned is not None
    assert (returned.message_id, returned.subject, returned.date) == (
        "<q1.20261124@example.com>", "Quarterly report", "Tue, 24 Nov 2026 10:00:00 +0000")
    assert returned.from_ == "Alice <alice@example.com>"
    assert bounce.cause is Cause.USER_UNKNOWN and bounce.problems == ()
    data = bounce.to_json()
    assert data["original_message_id"] == "<q1.20261124@example.com>"
    assert data["recipients"][1]["class"] == "temporary"


def test_not_own_when_returned_message_is_foreign() -> None:
    assert explain(POSTFIX_DSN, own_domains=("example.net",)).own is False
    assert explain(POSTFIX_DSN).own is False


@pytest.mark.parametrize(
    ("raw", "fmt", "mta", "expected"),
    [
        (EXIM, "exim", "smtp.example.net",
         [("erin@example.org", "5.1.1", "550", Cause.USER_UNKNOWN),
          ("frank@nowhere.test", "5.1.2", None, Cause.HOST_UNKNOWN)]),
        (QMAIL, "qmail", "mx.example.net",
         [("gina@example.org", "5.1.1", "550", Cause.USER_UNKNOWN),
          ("hank@example.org", "5.1.1", None, Cause.USER_UNKNOWN)]),
        (EXCHANGE, "exchange", "EX01.example.org",
         [("ivan@example.org", "5.1.1", "550", Cause.USER_UNKNOWN)]),
        (GMAIL, "gmail", "googlemail.example",
         [("judy@example.net", "5.1.1", "550", Cause.USER_UNKNOWN)]),
        (YAHOO, "yahoo", "yahoo.example",
         [("karl@example.org", "5.1.1", "554", Cause.USER_UNKNOWN)]),
        (SENDMAIL, "sendmail", "relay.example.net",
         [("liam@example.org", "5.2.2", "550", Cause.MAILBOX_FULL)]),
    ],
)
def test_other_mtas(raw: bytes, fmt: str, mta: str, expected: list[tuple[object, ...]]) -> None:
    bounce = _one(raw)
    assert (bounce.format, bounce.reporting_mta) == (fmt, mta)
    got = [(r.address, r.status, r.smtp_code, r.cause) for r in bounce.recipients]
    assert got == expected
    assert all(r.action == "failed" for r in bounce.recipients)


@pytest.mark.parametrize(
    ("raw", "message_id"),
    [(EXIM, "<lunch.1@example.com>"), (QMAIL, "<gina.2@example.com>"),
     (EXCHANGE, "<budget.3@example.com>"), (YAHOO, "<tickets.4@example.com>")],
)
def test_inline_returned_message(raw: bytes, message_id: str) -> None:
    bounce = _one(raw)
    assert bounce.returned is not None and bounce.returned.message_id == message_id
    assert bounce.own is True


def test_exim_diagnostic_is_the_reply() -> None:
    erin = _one(EXIM).recipients[0]
    assert erin.diagnostic is not None
    assert erin.diagnostic.endswith("550 5.1.1 <erin@example.org>: Recipient address rejected: User unknown")


def test_postfix_text_without_report_part() -> None:
    raw = POSTFIX_DSN.split(b"--B1\nContent-Type: message/delivery-status")[0]
    raw = raw.replace(b"multipart/report; report-type=delivery-status", b"multipart/mixed")
    bounce = _one(raw)
    assert (bounce.format, bounce.reporting_mta) == ("postfix", "mail.example.com")
    assert [(r.address, r.status) for r in bounce.recipients] == [("bob@example.net", "5.1.1")]


def test_non_bounce() -> None:
    bounce = explain(NOT_A_BOUNCE)
    assert bounce.is_bounce is False and bounce.recipients == ()
    assert bounce.to_json()["is_bounce"] is False


def test_truncated_report_keeps_what_was_read() -> None:
    raw = POSTFIX_DSN.split(b"Final-Recipient: rfc822; carol")[0]
    bounce = explain(raw)
    assert bounce.is_bounce and bounce.reporting_mta == "mail.example.com"
    assert [r.address for r in bounce.recipients] == ["Bob@example.net"]
    assert bounce.returned is None


def test_report_with_garbage_status_part() -> None:
    raw = b"""\
From: MAILER-DAEMON@mail.example.com
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary=X

--X
Content-Type: message/delivery-status

\x00\xff not a field at all
Final-Recipient: ;
Status: 9.9

Final-Recipient: rfc822; <mia@example.net>
Status: five
Action:
"""
    bounce = explain(raw)
    assert bounce.is_bounce
    assert [(r.address, r.status, r.action) for r in bounce.recipients] == [
        ("mia@example.net", None, None)]
    assert bounce.recipients[0].cause is Cause.UNKNOWN


@pytest.mark.parametrize(("raw", "is_bounce"), [
    (b"", False), (b"\x00\x01\x02", False), (b"\xff\xfe\r\n\r\n\x00", False),
    (b"Content-Type: multipart/report; report-type=delivery-status\n\n", True),
    (b"Content-Type: multipart/report; report-type=delivery-status; boundary=Q\n\n--Q\n", True),
    (b"From: MAILER-DAEMON@mail.example.com\nSubject: Undeliverable: x\n\n", True),
    (b"Content-Type: text/plain; charset=no-such-charset\nContent-Transfer-Encoding: base64\n\n!!", False),
    (POSTFIX_DSN[: len(POSTFIX_DSN) // 3], True), (EXIM[:400], True), (QMAIL[:350], True),
])
def test_malformed_never_raises(raw: bytes, is_bounce: bool) -> None:
    bounce = explain(raw)
    assert bounce.is_bounce is is_bounce
    bounce.to_json()


def test_malformed_is_read_not_swallowed() -> None:
    """The truncated samples are read by the parsers, not rescued by the last-resort catch."""
    for raw in (POSTFIX_DSN[: len(POSTFIX_DSN) // 3], EXIM[:400], b"\xff\xfe\r\n\r\n\x00"):
        assert not any(p.startswith("unreadable") for p in explain(raw).problems)
    truncated = explain(POSTFIX_DSN[: len(POSTFIX_DSN) // 3])
    assert truncated.format == "postfix"
    assert [r.address for r in truncated.recipients] == ["bob@example.net"]


def test_exchange_2010_hash_format() -> None:
    raw = EXCHANGE.replace(
        b"Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'",
        b"#550 5.2.2 STOREDRV.Deliver; mailbox full ##")
    (ivan,) = _one(raw).recipients
    assert (ivan.address, ivan.status, ivan.smtp_code, ivan.cause) == (
        "ivan@example.org", "5.2.2", "550", Cause.MAILBOX_FULL)


def test_temporary_failures() -> None:
    sendmail = SENDMAIL.replace(b"permanent fatal", b"transient non-fatal").replace(
        b"550 5.2.2", b"452 4.2.2")
    (liam,) = _one(sendmail).recipients
    assert (liam.action, liam.status, liam.status_class) == ("delayed", "4.2.2", "temporary")
    gmail = (b"From: mailer-daemon@googlemail.example\nSubject: Delivery Status Notification (Delay)\n\n"
             b"** Delivery incomplete **\n\nThere was a temporary problem delivering your message to "
             b"nina@example.net. Gmail will retry for 47 more hours.\n\n"
             b"The response was:\n451 4.4.1 No answer from host\n")
    (nina,) = _one(gmail).recipients
    assert (nina.address, nina.action, nina.status, nina.cause) == (
        "nina@example.net", "delayed", "4.4.1", Cause.UNREACHABLE)


def test_nesting_past_the_limit_is_not_handed_to_the_recursive_parser(caplog) -> None:
    """The email package recurses per MIME level; such a message is refused, not crashed on."""
    depth = 1200
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i)
                       for i in range(depth))
    raw = b"From: MAILER-DAEMON@mail.example.com\r\nSubject: Undeliverable\r\n" + opening + b"\r\nx"
    bounce = explain(raw)
    assert (bounce.is_bounce, bounce.problems) == (
        False, (f"not read: MIME nested {depth} levels deep, {depth + 1} parts",))
    assert "could not be read" not in caplog.text
