"""Notices the reader once misread, each as a minimal sample written here after
a real one: a success notice and a challenge dressed as bounces, GroupWise's
list, a refusal dressed as an auto-reply, a delay warning that counts the
hours so far, a stored copy that begins with blank lines, and flufl.bounce's
traceback kept out of our log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from trustmilter.bounce import Cause, explain
from trustmilter.bounce.stored import message_in_file
from trustmilter.cli import main

HEAD = b"From: MAILER-DAEMON@mx.example.net\nTo: alice@example.com\n"


def report(action: bytes, status: bytes, diagnostic: bytes = b"", text: bytes = b"") -> bytes:
    return HEAD + b"""\
Subject: Delivery report
Content-Type: multipart/report; report-type=delivery-status; boundary=R

--R
Content-Type: text/plain

""" + text + b"""

--R
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; bob@example.net
Action: """ + action + b"\nStatus: " + status + b"\n" + diagnostic + b"""
--R--
"""


SUCCESS_NOTICE = report(b"relayed", b"2.1.5", text=b"This is a return receipt.")
CHALLENGE = report(b"failed", b"4.7.0", b"Diagnostic-Code: X-Notice; Sender not pre-approved.\n",
                   b"Your message about \"Offers\" has been waitlisted.\n"
                   b"Please add yourself to my Guest List so your messages will go to my Inbox.")
GROUPWISE = HEAD + b"""\
Subject: Message status - undeliverable
Content-Type: text/plain

The message that you sent was undeliverable to the following:

\tbob@example.net (user not found)
\tcarol@example.org (mailbox full)

Possible causes are listed below.
"""


@pytest.mark.parametrize("action", [b"relayed", b"delivered", b"expanded"])
def test_a_report_of_success_is_no_bounce(action: bytes) -> None:
    """RFC 3464 §2.3.3: delivered, relayed, expanded report no failure."""
    bounce = explain(report(action, b"2.1.5", text=b"This is a return receipt."))
    assert not bounce.is_bounce
    assert bounce.problems == ("a notice of successful delivery (RFC 3464), not a bounce",)


def test_a_failure_beside_a_success_is_still_a_bounce() -> None:
    raw = report(b"relayed", b"2.0.0").replace(b"--R--", b"""\
Final-Recipient: rfc822; carol@example.org
Action: failed
Status: 5.1.1

--R--""")
    bounce = explain(raw)
    assert bounce.is_bounce
    assert [r.address for r in bounce.recipients if r.failed] == ["carol@example.org"]


def test_a_challenge_is_no_bounce() -> None:
    """A challenge-response filter holds the mail until the sender confirms:
    nothing was refused (built as a failed report with a 4.7.0, as Boxbe's is)."""
    bounce = explain(CHALLENGE)
    assert not bounce.is_bounce
    assert "challenge" in bounce.problems[0]
    plain = HEAD + b"Subject: Please confirm\n\nYour message is held until you confirm it.\n"
    assert not explain(plain).is_bounce


def test_a_refusal_that_names_a_list_of_senders_is_a_bounce() -> None:
    """A server that refused with 5.x.x is no challenge, whatever its words."""
    raw = report(b"failed", b"5.7.1",
                 b"Diagnostic-Code: smtp; 550 Sender not pre-approved by this server\n")
    bounce = explain(raw)
    assert bounce.is_bounce
    assert [(r.address, r.permanent) for r in bounce.recipients] == [("bob@example.net", True)]


def test_groupwise_lists_each_address_with_its_reason() -> None:
    bounce = explain(GROUPWISE)
    assert bounce.format == "groupwise"
    assert [(r.address, r.cause, r.permanent) for r in bounce.recipients] == [
        ("bob@example.net", Cause.USER_UNKNOWN, True),
        ("carol@example.org", Cause.MAILBOX_FULL, True)]


AUTO_REPLY_HEAD = b"From: <>\nTo: alice@example.com\nAuto-Submitted: auto-replied\n\n"


def test_a_refusal_dressed_as_an_auto_reply_is_a_bounce() -> None:
    """Accepted, then refused in a note to the sender: a late bounce."""
    bounce = explain(AUTO_REPLY_HEAD
                     + b"You sent mail to bob@example.net. That's not a valid user here.\n")
    assert bounce.is_bounce
    assert [(r.address, r.cause, r.permanent) for r in bounce.recipients] == [
        ("bob@example.net", Cause.USER_UNKNOWN, True)]


def test_an_auto_reply_that_names_the_address_is_no_bounce() -> None:
    bounce = explain(AUTO_REPLY_HEAD + b"You sent mail to bob@example.net. I am away until "
                     b"Monday and will read it then.\n")
    assert not bounce.is_bounce


def test_a_warning_that_counts_the_hours_so_far_is_a_delay() -> None:
    """"could not be delivered for 0 days, 12 hours" is time tried, not given up;
    a recipient still tried has not expired either (no MIME: the text alone)."""
    raw = HEAD + b"""\
Subject: Delayed Mail (still being retried)

# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #

Your message could not be delivered for 0 days, 12 hours, 0 minutes.
It will be retried until it is 1 days, 0 hours, 0 minutes old.

<bob@example.net>: 421 4.4.0 [internal] no MXs for this domain could be reached at this time
"""
    [bob] = explain(raw).recipients
    assert (bob.address, bob.permanent, bob.cause) == (
        "bob@example.net", False, Cause.UNREACHABLE)
    final = raw.replace(b"It will be retried until", b"Message will be deleted from queue;")
    assert explain(final).recipients[0].permanent


STORED_DSN = report(b"failed", b"5.1.1")


def test_a_stored_copy_is_read_after_the_blank_lines_it_begins_with() -> None:
    """RFC 5322 §2.1: a first line that is empty ends an empty header section.
    An MTA hands the milter just that, and explain reads it so; a file that
    begins so is a stored copy, and the message is what follows."""
    stored = b"\n" + b" " * 255 + b"\r\n" + STORED_DSN
    assert not explain(stored).is_bounce
    assert message_in_file(stored) == STORED_DSN
    assert explain(message_in_file(stored)).recipients[0].address == "bob@example.net"
    # Only blank lines before a header section go: a body alone stays as it is.
    body_only = b"\n  \nYou sent mail to bob@example.net.\n"
    assert message_in_file(body_only) == body_only
    assert message_in_file(STORED_DSN) == STORED_DSN


def test_explain_bounce_reads_a_stored_copy(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(b"\r\n \t \r\n" + STORED_DSN.replace(b"\n", b"\r\n"))
    assert main(["explain-bounce", str(path), "--json"]) == 0
    read = json.loads(capsys.readouterr().out)
    assert read["is_bounce"] is True
    assert [r["address"] for r in read["recipients"]] == ["bob@example.net"]


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_detector_that_raises_is_one_line_of_ours() -> None:
    """flufl.bounce logs a traceback when a detector raises (Yale's, on a message
    without From), then raises again: only our one line reaches the handlers
    the program sets up (the command line's and the daemon's, on the root logger
    and below it)."""
    root, flufl_log = logging.getLogger(), logging.getLogger("flufl.bounce")
    ours, theirs = Kept(), Kept()
    root.addHandler(ours)
    flufl_log.addHandler(theirs)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        explain(b"Subject: Undelivered Mail Returned to Sender\n\n"
                b"Sorry, your message to bob@example.net could not be sent.\n")
    finally:
        root.setLevel(level)
        root.removeHandler(ours)
        flufl_log.removeHandler(theirs)
    # The case is real: flufl.bounce did log the traceback, at its own logger.
    assert any(r.exc_info for r in theirs.records)
    [line] = ours.records
    assert line.name == "trustmilter.bounce.recipients" and line.exc_info is None
    assert "\n" not in line.getMessage() and "IndexError" in line.getMessage()
