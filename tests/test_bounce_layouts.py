"""Layouts of real bounces the reader once missed, each as a minimal sample
written here: a reply cut to its first line, a human-readable part labelled
delivery-status, a forwarded message's sender in Exim's text, one-line and
labelled notices, au's older English notice, a queue timeout in the subject."""

from __future__ import annotations

from trustmilter.bounce import Cause, explain
from trustmilter.bounce.recipients import continued_reply

HEAD = b"From: MAILER-DAEMON@mx.example.net\nTo: alice@example.com\n"


def test_a_reply_cut_to_its_first_line_is_read_whole_from_the_transcript() -> None:
    """Sendmail puts only the first line of a multi-line reply in Diagnostic-Code
    ("550-" says more follow, RFC 5321 §4.2.1); the transcript has the rest."""
    raw = HEAD + b"""\
Subject: Returned mail: see transcript for details
Content-Type: multipart/report; report-type=delivery-status; boundary=R

--R
Content-Type: text/plain

   ----- The following addresses had permanent fatal errors -----
<bob@example.net>
    (reason: 550-5.7.1 [192.0.2.1      7] Our system has detected that this message is)

   ----- Transcript of session follows -----
<<< 550-5.7.1 [192.0.2.1      7] Our system has detected that this message is
<<< 550-5.7.1 likely unsolicited mail. To reduce the amount of spam sent to us,
<<< 550 5.7.1 this message has been blocked.

--R
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: RFC822; bob@example.net
Action: failed
Status: 5.7.1
Diagnostic-Code: SMTP; 550-5.7.1 [192.0.2.1       7] Our system has detected that this message is

--R--
"""
    (bob,) = explain(raw).recipients
    assert bob.cause is Cause.SPAM_OR_CONTENT
    assert bob.diagnostic is not None and bob.diagnostic.endswith("this message has been blocked.")


def test_a_reply_that_is_whole_or_absent_from_the_text_stays_as_it_is() -> None:
    assert continued_reply("550 5.1.1 unknown\n", "550 5.1.1 unknown") is None
    assert continued_reply("nothing here\n", "550-5.7.1 first line") is None
    assert continued_reply("550-5.7.1 first line\nno reply\n", "550-5.7.1 first line") is None
    assert continued_reply("550-5.7.1 first line\n550 5.7.1 last\n",
                           "550-5.7.1   first line") == "550-5.7.1 first line last"


def test_a_human_readable_part_labelled_delivery_status_is_the_text() -> None:
    """InterMail labels its human-readable part message/delivery-status too: the
    report is the part with status fields, the reason is in the other."""
    raw = HEAD + b"""\
Subject: Mail System Error - Returned Mail
Content-Type: multipart/report; report-type=delivery-status; boundary=R

--R
Content-Type: message/delivery-status;

This Message was undeliverable due to the following reason:

<bob@example.net> has restricted SMS e-mail

--R
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Original-Recipient: rfc822;bob@example.net
Final-Recipient: RFC822; <bob@example.net>
Action: failed
Status: 5.3.0

--R--
"""
    bounce = explain(raw)
    assert (bounce.format, bounce.reporting_mta) == ("rfc3464", "mx.example.net")
    (bob,) = bounce.recipients
    assert (bob.address, bob.status, bob.cause) == ("bob@example.net", "5.3.0", Cause.POLICY)


def test_exim_names_the_sender_of_a_forwarded_message_above_its_list() -> None:
    raw = HEAD + b"""\
Subject: Mail delivery failed

This message was created automatically by mail delivery software.

A message sent by

  <news+12AB@lists.example.org>

could not be delivered to one or more of its recipients. The following
address(es) failed:

  bob.b@example.net
    (ultimately generated from bob@example.com)
    all hosts have been failing for a long time and were last tried after this message arrived

------ This is a copy of the message, including all the headers. ------
"""
    (bob,) = explain(raw).recipients
    assert (bob.address, bob.final_recipient, bob.cause) == (
        "bob@example.com", "bob.b@example.net", Cause.UNREACHABLE)


def test_a_one_line_notice_of_failed_attempts() -> None:
    raw = HEAD + b"Subject: Undeliverable Mail\n\nDelivery failed 10 attempts: bob@example.net\n" \
        b"\n\nOriginal message follows.\n\nTo: bob@example.net\n"
    (bob,) = explain(raw).recipients
    assert (bob.address, bob.permanent, bob.cause) == ("bob@example.net", True, Cause.EXPIRED)


def test_a_notice_in_labelled_lines() -> None:
    raw = HEAD + b"""\
Subject: email bounce notification

Your message was rejected and discarded.

reject reason: Mailbox full
target mail address: bob@example.net

------------------------------------------------------------------------
bounced E-Mail:

To: carol@example.org
"""
    (bob,) = explain(raw).recipients
    assert (bob.address, bob.cause) == ("bob@example.net", Cause.MAILBOX_FULL)


def test_one_label_alone_makes_no_bounce() -> None:
    raw = b"From: alice@example.com\nTo: bob@example.net\nSubject: hello\n\n" \
        b"target mail address: carol@example.org\n"
    assert not explain(raw).is_bounce


def test_au_older_english_notice_lists_the_address_above_its_sentence() -> None:
    raw = b"""\
From: <Postmaster@ezweb.example.jp>
To: <alice@example.com>
Subject: Mail System Error - Returned Mail
Content-Type: text/plain; charset=iso-2022-jp

<bob@ezweb.example.jp>

Each of the following recipients was rejected by a remote mail server.
---------------------------------------------------
From: alice@example.com
To: carol@example.org
"""
    bounce = explain(raw)
    (bob,) = bounce.recipients
    assert (bob.address, bob.permanent, bob.cause) == ("bob@ezweb.example.jp", True,
                                                       Cause.UNKNOWN)


def test_a_transient_reason_given_up_when_the_time_ran_out_is_expired() -> None:
    """Action failed with 4.0.0 after "Cannot send message for 5 days": the
    connection timed out on the last try, but the queue time is why it failed.
    Without such words the last try's reason stands."""
    def dsn(subject: bytes) -> bytes:
        return HEAD + b"Subject: " + subject + b"""
Content-Type: multipart/report; report-type=delivery-status; boundary=R

--R

Delivery problems.

--R
content-type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822;bob@example.net
Action: failed
Status: 4.0.0
Diagnostic-Code: smtp; 426 connection timed out

--R--
"""
    (bob,) = explain(dsn(b"Returned mail: Cannot send message for 5 days")).recipients
    assert (bob.permanent, bob.cause) == (True, Cause.EXPIRED)
    (bob,) = explain(dsn(b"Undelivered Mail Returned to Sender")).recipients
    assert (bob.permanent, bob.cause) == (True, Cause.UNREACHABLE)
