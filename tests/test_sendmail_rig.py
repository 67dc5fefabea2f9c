"""The private Sendmail rig itself: its pure parts, then a real run with a null milter.

If these fail, test_sendmail_trustmilter.py means nothing: they show that
the shipped .mc is used as shipped but for its socket, that ``mailq``
output is read right, and, with a milter that takes no decisions, that
mail is delivered and read back, that a milter's reply and quarantine
reach the client and ``mailq -qQ``, that the milter sees the loopback
address a test connects from with the name the rig's hosts file gives
it, and that the macro ``i`` the shipped .mc asks for is Sendmail's
queue ID at MAIL FROM and at end of message.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import message
from smtp_helpers import SMTP_TIMEOUT, send
from trustmilter.testing.postfix import free_port, wait_for_port
from trustmilter.testing.sendmail import (
    QueueEntry,
    SendmailError,
    SendmailInstance,
    parse_mailq,
    with_filter_equates,
)

HELPERS = Path(__file__).with_name("smtp_helpers.py")
SHIPPED_MC = Path(__file__).resolve().parents[1] / "packaging" / "sendmail" / "trustmilter.mc"
CLIENT_IP, CLIENT_NAME = "127.0.0.10", "mail.example.com"

# Sendmail 8.17's mailq -qQ, as this rig produced it (tabs kept).
MAILQ_QUARANTINE = """\
\t\t/tmp/w/queue (2 requests)
-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------
6B77StEj011286        6 Mon Dec  7 07:28 <alice@example.com>
     QUARANTINE: null milter hold
                 (<reject@example.org>... null milter refuses this recipient)
\t\t\t\t\t <support@example.org>
\t\t\t\t\t <sales@example.org>
6B77StEk011290*     512 Mon Dec  7 07:29 <>
     QUARANTINE: DMARC policy quarantine
\t\t\t\t\t <bob@example.org>
\t\tTotal requests: 2
"""


# ---- pure parts --------------------------------------------------------------


def test_mailq_entries_with_reasons_and_recipients() -> None:
    assert parse_mailq(MAILQ_QUARANTINE) == [
        QueueEntry("6B77StEj011286", "alice@example.com",
                   ("support@example.org", "sales@example.org"), "null milter hold"),
        QueueEntry("6B77StEk011290", "", ("bob@example.org",), "DMARC policy quarantine"),
    ]  # fmt: skip


def test_empty_mailq() -> None:
    assert parse_mailq("\t\t/tmp/w/queue is empty\n\t\tTotal requests: 0\n") == []


def test_filter_equates_change_only_what_is_asked() -> None:
    shipped = SHIPPED_MC.read_text()
    changed = with_filter_equates(shipped, S="inet:9999@127.0.0.1")
    (line,) = [ln for ln in changed.splitlines() if ln.startswith("INPUT_MAIL_FILTER(")]
    assert line == "INPUT_MAIL_FILTER(`trustmilter', `S=inet:9999@127.0.0.1, F=T, T=C:30s;S:30s;R:60s;E:5m')dnl"
    # Everything else, the macro lists included, is the shipped text.
    assert changed.replace(line, "") == re.sub(r"^INPUT_MAIL_FILTER\(.*$", "", shipped, flags=re.M)
    assert "F=, " in with_filter_equates(shipped, F="")


def test_filter_equates_need_an_input_mail_filter_line() -> None:
    with pytest.raises(SendmailError, match="INPUT_MAIL_FILTER"):
        with_filter_equates("dnl nothing here\n", S="inet:1@127.0.0.1")


# ---- a real Sendmail with the null milter -------------------------------------


class NullMilter:
    """The null milter subprocess (tests/smtp_helpers.py) and the events it recorded."""

    def __init__(self, events: Path) -> None:
        self.events_path = events

    def events(self, kind: str) -> list[dict[str, str]]:
        lines = self.events_path.read_text().splitlines() if self.events_path.exists() else []
        return [event for event in map(json.loads, lines) if event["event"] == kind]


@pytest.fixture(scope="module")
def null_rig(
    sendmail_prefix: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SendmailInstance, NullMilter]]:
    events = tmp_path_factory.mktemp("null-milter") / "events.jsonl"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HELPERS), "null-milter", f"inet:{port}@127.0.0.1", str(events)],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    sendmail = SendmailInstance(
        tmp_path_factory.mktemp("sendmail"), f"inet:{port}@127.0.0.1", prefix=sendmail_prefix,
        client_names={CLIENT_IP: CLIENT_NAME}, mc_path=SHIPPED_MC,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 15), "null milter did not listen"
        sendmail.start()
        yield sendmail, NullMilter(events)
    finally:
        sendmail.stop()
        # The null milter keeps no state worth a graceful shutdown.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def session(port: int) -> Iterator[smtplib.SMTP]:
    smtp = smtplib.SMTP(local_hostname=CLIENT_NAME, timeout=SMTP_TIMEOUT,
                        source_address=(CLIENT_IP, 0))  # fmt: skip
    try:
        assert smtp.connect("127.0.0.1", port)[0] == 220
        smtp.ehlo(CLIENT_NAME)
        yield smtp
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()


def test_delivery_reply_quarantine_and_macros_through_the_null_milter(
    null_rig: tuple[SendmailInstance, NullMilter],
) -> None:
    sendmail, milter = null_rig
    sendmail.reset()
    with session(sendmail.smtp_port) as smtp:
        plain = send(smtp, "alice@example.com", ["support@example.org"],
                     message(subject="plain"))  # fmt: skip
        held = send(smtp, "bob@example.com", ["sales@example.org", "reject@example.org"],
                    message(subject="hold me"))  # fmt: skip

    assert plain.final.code == 250, plain
    (delivered,) = sendmail.wait_delivered(1)
    assert delivered.header("Delivered-To") == ["support@example.org"]
    assert delivered.header("X-Null-Milter") == ["seen"]
    assert delivered.header("Subject") == ["plain"]

    assert [str(reply) for reply in held.rcpts] == [
        "250 2.1.5 <sales@example.org>... Recipient ok",
        "550 5.7.1 <reject@example.org>... null milter refuses this recipient",
    ]
    assert held.data is not None and held.data.code == 250
    held_id = held.data.text.split()[1]
    assert sendmail.quarantined() == [
        QueueEntry(held_id, "bob@example.com", ("sales@example.org",), "null milter hold")
    ]
    sendmail.wait_idle()
    assert sendmail.queue() == [] and len(sendmail.delivered()) == 1

    # (The rig's own greeting probes come from 127.0.0.1.)
    connects = [event for event in milter.events("connect") if event["addr"] != "127.0.0.1"]
    assert {(event["addr"], event["hostname"]) for event in connects} == {(CLIENT_IP, CLIENT_NAME)}
    # The shipped .mc's macro lists: i at MAIL FROM and at end of message.
    plain_id = plain.data.text.split()[1] if plain.data else ""
    assert [event["i"] for event in milter.events("mail")] == [plain_id, held_id]
    assert [event["i"] for event in milter.events("eom")] == [plain_id, held_id]
