"""Bounces that are no RFC 3464 report, in the formats real senders use: Amazon
SES notifications through SNS, the notices of au (KDDI), Lotus Notes and
others, and reports whose reply spans unfolded lines.

Every sample is written here, shaped after the documented format (Amazon's
"Amazon SNS notification contents for Amazon SES") or the real bounces in
tests/data/bounces; the addresses are example ones.
"""

from __future__ import annotations

import json

import pytest

from trustmilter.bounce import Cause, explain

SNS_HEAD = b"""\
From: AWS Notifications <no-reply@sns.example.com>
To: alice@example.com
Subject: AWS Notification Message
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8

"""


def ses_bounce(bounce_type: str = "Permanent", subtype: str = "General",
               recipients: list[dict[str, str]] | None = None) -> dict[str, object]:
    """An SES bounce notification as Amazon documents it."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type, "bounceSubType": subtype,
            "bouncedRecipients": recipients if recipients is not None else [{
                "emailAddress": "bob@example.net", "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2026-11-24T10:00:00.000Z",
            "reportingMTA": "dsn; a1-2.smtp-out.example.com",
            "remoteMtaIp": "192.0.2.25",
        },
        "mail": {
            "source": "alice@example.com",
            "destination": ["bob@example.net"],
            "headers": [{"name": "From", "value": "Alice <alice@example.com>"},
                        {"name": "Subject", "value": "Hello"}],
            "commonHeaders": {"from": ["Alice <alice@example.com>"], "to": ["bob@example.net"],
                              "subject": "Hello", "messageId": "<m1@example.com>"},
        },
    }


def sns_email(notification: dict[str, object]) -> bytes:
    """SNS's "email" protocol: the notification bare, then SNS's footer."""
    return SNS_HEAD + json.dumps(notification).encode() + (
        b"\n\n--\nIf you wish to stop receiving notifications from this topic, "
        b"please click or visit the link below to unsubscribe:\n")


def sns_email_json(notification: dict[str, object]) -> bytes:
    """SNS's "email-json" protocol: its envelope, the notification a string in it."""
    envelope = {"Type": "Notification", "MessageId": "1", "Message": json.dumps(notification)}
    return SNS_HEAD + json.dumps(envelope, indent=2).encode()


@pytest.mark.parametrize("wrap", [sns_email, sns_email_json], ids=["email", "email-json"])
def test_an_ses_bounce_notification(wrap) -> None:  # type: ignore[no-untyped-def]
    bounce = explain(wrap(ses_bounce()), ("example.com",))
    assert (bounce.is_bounce, bounce.format, bounce.reporting_mta, bounce.own) == (
        True, "amazonses", "a1-2.smtp-out.example.com", True)
    (bob,) = bounce.recipients
    assert (bob.address, bob.status, bob.status_source, bob.permanent, bob.cause,
            bob.smtp_code, bob.remote_mta) == (
        "bob@example.net", "5.1.1", "report", True, Cause.USER_UNKNOWN, "550", "192.0.2.25")
    assert bounce.returned is not None
    assert (bounce.returned.message_id, bounce.returned.subject,
            bounce.returned.return_path) == ("<m1@example.com>", "Hello", "alice@example.com")


def test_a_relay_line_break_inside_the_json() -> None:
    """Sendmail breaks a 990-character line with "!", a line end and a blank, wherever
    it falls: inside a string, or between two tokens."""
    text = json.dumps(ses_bounce())
    inside = text.replace('"Hello"', '"Hel!\n lo"', 1)
    between = text.replace(', "mail"', ',!\n "mail"', 1)
    for body in (inside, between):
        bounce = explain(SNS_HEAD + body.encode())
        assert [r.address for r in bounce.recipients] == ["bob@example.net"], body[:60]
        assert bounce.returned is not None and bounce.returned.subject == "Hello"


def test_an_ses_bounce_without_a_dsn_is_read_from_its_subtype() -> None:
    """No remote DSN (SES's own verdict): the subtype says why; every bounce
    notification reports a message SES gave up on, a Transient one too."""
    bounce = explain(sns_email(ses_bounce("Transient", "MailboxFull", [
        {"emailAddress": "Bob <bob@example.net>"}])))
    (bob,) = bounce.recipients
    assert (bob.address, bob.action, bob.permanent, bob.cause, bob.status_source) == (
        "bob@example.net", "failed", True, Cause.MAILBOX_FULL, "inferred")


@pytest.mark.parametrize(("kind", "note"), [
    ("Complaint", "an Amazon SES complaint notification, not a bounce"),
    ("Delivery", "an Amazon SES delivery notification, not a bounce"),
    ("Reject", "an Amazon SES notification (reject), not a bounce"),
])
def test_other_ses_notifications_are_no_bounces(kind: str, note: str) -> None:
    notification = {"notificationType": kind, "complaint": {
        "complainedRecipients": [{"emailAddress": "bob@example.net"}]}}
    bounce = explain(sns_email_json(notification))
    assert (bounce.is_bounce, bounce.problems) == (False, (note,))


@pytest.mark.parametrize("body", [
    b'{"notificationType": "Bounce", "bounce": ',  # cut short
    b'{"notificationType": ' + b"[" * 100_000,  # nested past the interpreter's limit
    b'"notificationType" but no JSON at all',
    b'{"notificationType": "Bounce", "bounce": {"bouncedRecipients": [1, "x", {}]}}',
])
def test_broken_notifications_never_raise(body: bytes) -> None:
    bounce = explain(SNS_HEAD + body)
    assert bounce.recipients == ()


# ---- notices of Japanese carriers and providers ---------------------------------------

AU_HEAD = """\
From: MAILER-DAEMON@ezweb.example.jp
To: alice@example.com
Subject: Mail System Error - Returned Mail
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"

次のあて先へのメッセージはエラーのため送信できませんでした。

"""


def test_au_lists_each_recipient_with_the_smtp_session() -> None:
    """au (KDDI): "Recipient: <address>", our command, the remote server's reply."""
    raw = (AU_HEAD + """\
Each of the following recipients was rejected by a remote
mail server.

    Recipient: <bob@example.net>
    >>> RCPT TO:<bob@example.net>
    <<< 550 <bob@example.net>: User unknown

    Recipient: <carol@example.org>
    >>> MAIL FROM:<alice@example.com>
    <<< 550 5.7.1 Mail from 192.0.2.1 refused, see the block list at example.org
""").encode()
    bounce = explain(raw)
    assert bounce.format == "japanese"
    assert [(r.address, r.smtp_code, r.cause, r.diagnostic) for r in bounce.recipients] == [
        ("bob@example.net", "550", Cause.USER_UNKNOWN, "550 <bob@example.net>: User unknown"),
        ("carol@example.org", "550", Cause.BLOCKLISTED,
         "550 5.7.1 Mail from 192.0.2.1 refused, see the block list at example.org"),
    ]


def test_au_one_net_names_the_address_and_its_reason() -> None:
    """au one net: no MAILER-DAEMON, no code; the recipient line and the reason."""
    raw = """\
From: no-reply@example.jp
To: alice@example.com
Subject: =?UTF-8?B?44Oh44O844Or44Ko44Op44O86YCa55+l?=
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"

送信先のメールボックスが一杯のため、送信できませんでした。

Your mail sent on: Thu, 29 Apr 2026 23:45:22 +0900
     Could not be delivered to: <bob@example.net>
     As their mailbox is full.
""".encode()
    bounce = explain(raw)
    assert bounce.is_bounce
    (bob,) = bounce.recipients
    assert (bob.address, bob.permanent, bob.cause, bob.status, bob.status_source) == (
        "bob@example.net", True, Cause.MAILBOX_FULL, "5.2.2", "inferred")


def test_lotus_notes_lists_the_reason_and_the_addresses() -> None:
    raw = b"""\
From: postmaster@notes.example.jp
To: alice@example.com
Subject: Undeliverable message
Content-Type: text/plain; charset=us-ascii

------- Failure Reasons  --------

User not listed in public Name & Address Book
bob@example.net

------- Returned Message --------
From: alice@example.com
To: bob@example.net
Subject: Hello
Message-ID: <m2@example.com>

Hello
"""
    bounce = explain(raw)
    assert bounce.format == "notes"
    (bob,) = bounce.recipients
    assert (bob.address, bob.permanent, bob.cause) == ("bob@example.net", True,
                                                       Cause.USER_UNKNOWN)
    assert bob.diagnostic == "User not listed in public Name & Address Book"
    assert bounce.returned is not None and bounce.returned.message_id == "<m2@example.com>"


@pytest.mark.parametrize(("text", "cause"), [
    ("Sorry, unable to deliver your message to bob@example.net for\nthe following reason:\n\n"
     " 552 Quota violation for bob.forward@example.org\n\nA copy of the original message "
     "below this line:\n", Cause.MAILBOX_FULL),
    ('Delivery of email to this address\n\n"bob@example.net"\n\nhas failed due to a full '
     "mailbox.  We have already made numerous\nattempts to deliver this message.\n",
     Cause.MAILBOX_FULL),
])
def test_notices_that_name_one_address(text: str, cause: Cause) -> None:
    """One address after a fixed sentence, the reason after it. An address the
    reason names (a forward target) is not another failed recipient."""
    raw = (b"From: MAILER-DAEMON@mx.example.net\nTo: alice@example.com\n"
           b"Subject: failure notice\n\n" + text.encode())
    bounce = explain(raw)
    (bob,) = bounce.recipients
    assert (bob.address, bob.cause, bob.permanent) == ("bob@example.net", cause, True)


def test_a_virus_wall_notice_is_a_bounce_that_names_no_recipient() -> None:
    raw = b"""\
From: gateway@example.net
To: alice@example.com
Subject: Mail could not be delivered

****** Message from InterScan E-Mail VirusWall NT ******

The following mail could not be delivered.
Reason:  Exceeded Maximum Delivery Attempts.
"""
    bounce = explain(raw)
    assert (bounce.is_bounce, bounce.format, bounce.recipients) == (True, "interscan", ())
    assert bounce.problems == ("no recipient could be read",)


def test_a_reply_on_unfolded_lines_stays_with_its_field() -> None:
    """A multi-line reply whose later lines are not folded (they start with the
    reply code, not a blank) is still the Diagnostic-Code's."""
    raw = b"""\
From: MAILER-DAEMON@mx.example.net
To: alice@example.com
Subject: Mail Delivery Failure
Content-Type: multipart/report; report-type=delivery-status; boundary=R

--R
Content-Type: text/plain

I was unable to deliver your message.

--R
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Diagnostic-Code: smtp; 550-Please turn on SMTP Authentication in your mail client.
550-mx.example.net [192.0.2.1]:25 is not permitted to
550 relay through this server without authentication.
Status: 5.0.0
Action: failed
Final-Recipient: rfc822; bob@example.net

--R--
"""
    (bob,) = explain(raw).recipients
    assert bob.diagnostic is not None and bob.diagnostic.endswith("without authentication.")
    assert (bob.address, bob.status, bob.cause) == ("bob@example.net", "5.0.0",
                                                    Cause.RELAYING_DENIED)
