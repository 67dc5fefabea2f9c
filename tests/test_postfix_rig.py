"""The private Postfix rig itself, with a null milter instead of trustmilter.

If these fail, the trustmilter Postfix tests mean nothing: they show that
mail is delivered and read back, that a milter's quarantine lands in the
hold queue, that a milter's reply reaches the SMTP client, that XCLIENT
sets the client address and HELO the milter sees, that the queue ID
the milter gets as ``{i}`` is the one in Postfix's log, and that mail
submitted with sendmail(1) passes the non_smtpd milter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import message
from smtp_helpers import send, send_one, smtp_session
from trustmilter.testing.postfix import PostfixInstance, free_port, wait_for_port

HELPERS = Path(__file__).with_name("smtp_helpers.py")


class NullMilter:
    """The null milter subprocess and the events it recorded."""

    def __init__(self, events: Path, port: int) -> None:
        self.events_path = events
        self.port = port

    def events(self, kind: str | None = None) -> list[dict[str, str]]:
        lines = self.events_path.read_text().splitlines() if self.events_path.exists() else []
        parsed = [json.loads(line) for line in lines]
        return [e for e in parsed if kind is None or e["event"] == kind]


@pytest.fixture(scope="module")
def null_milter(postfix: PostfixInstance, tmp_path_factory) -> Iterator[NullMilter]:
    """The null milter on a free port, with Postfix pointed at it."""
    events = tmp_path_factory.mktemp("null-milter") / "events.jsonl"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HELPERS), "null-milter", f"inet:{port}@127.0.0.1", str(events)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 15), "null milter did not listen"
        postfix.set_milters(f"inet:127.0.0.1:{port}", non_smtpd=True)
        yield NullMilter(events, port)
    finally:
        # The null milter keeps no state worth a graceful shutdown.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def clean(postfix: PostfixInstance, null_milter: NullMilter) -> PostfixInstance:
    """The module's instance with an empty Maildir, queue and event log."""
    postfix.reset()
    null_milter.events_path.unlink(missing_ok=True)
    return postfix


def test_message_is_delivered_with_the_milter_header(clean: PostfixInstance) -> None:
    out = send_one(clean.smtp_port, message(subject="plain"))
    assert out.final.code == 250, out
    (delivered,) = clean.wait_delivered(1)
    assert delivered.header("X-Null-Milter") == ["seen"]
    assert delivered.header("Subject") == ["plain"]
    assert delivered.header("Delivered-To") == ["support@example.org"]


def test_xclient_sets_the_address_and_helo_the_milter_sees(
    clean: PostfixInstance, null_milter: NullMilter
) -> None:
    send_one(clean.smtp_port, message(), client_ip="203.0.113.5", helo="mx.example.net")
    connects = null_milter.events("connect")
    assert connects[-1]["addr"] == "203.0.113.5"
    assert null_milter.events("helo")[-1]["helo"] == "mx.example.net"
    clean.wait_for_log(r"client=unknown\[203\.0\.113\.5\]")


def test_quarantine_lands_in_the_hold_queue(clean: PostfixInstance) -> None:
    out = send_one(clean.smtp_port, message(subject="please hold this"))
    assert out.final.code == 250
    held = clean.hold_queue()
    assert len(held) == 1
    assert held[0]["sender"] == "alice@example.com"
    assert [r["address"] for r in held[0]["recipients"]] == ["support@example.org"]  # type: ignore[index, union-attr]
    assert clean.delivered() == []
    clean.wait_for_log(rf"{held[0]['queue_id']}: milter-hold: END-OF-MESSAGE")


def test_milter_reply_reaches_the_client_at_rcpt(clean: PostfixInstance) -> None:
    out = send_one(clean.smtp_port, message(), rcpts=("reject@example.org", "ok@example.org"))
    assert out.rcpts[0].code == 550 and out.rcpts[0].text.startswith("5.7.1 null milter refuses")
    assert out.rcpts[1].code == 250
    assert out.data is not None and out.data.code == 250
    clean.wait_delivered(1)


def test_queue_id_macro_matches_the_log(clean: PostfixInstance, null_milter: NullMilter) -> None:
    send_one(clean.smtp_port, message())
    clean.wait_delivered(1)
    (eom,) = null_milter.events("eom")
    assert eom["i"], "Postfix sends {i} at end of message"
    clean.wait_for_log(rf"{eom['i']}: to=<support@example.org>.*status=sent")


def test_sendmail_submission_passes_the_non_smtpd_milter_as_localhost(
    clean: PostfixInstance, null_milter: NullMilter
) -> None:
    """Local submission (a program on the host) reaches the milter from 127.0.0.1."""
    raw = message(subject="hold this local one", message_id="<local-1@example.org>")
    clean.sendmail(raw, "agent@example.org", ["colleague@example.org"])
    queue_id = clean.queue_id_for("<local-1@example.org>")
    clean.wait_for_log(rf"{queue_id}: milter-hold: ")
    [mail] = [e for e in null_milter.events("mail") if e["i"] == queue_id]
    assert mail["sender"].strip("<>") == "agent@example.org"
    assert {"event": "connect", "hostname": "localhost", "addr": "127.0.0.1"} in \
        null_milter.events("connect")
    assert [e["queue_id"] for e in clean.hold_queue()] == [queue_id]


def test_two_transactions_on_one_connection(clean: PostfixInstance) -> None:
    with smtp_session(clean.smtp_port) as smtp:
        first = send(smtp, "alice@example.com", ["support@example.org"], message(subject="hold 1"))
        second = send(smtp, "alice@example.com", ["support@example.org"], message(subject="two"))
    assert first.final.code == second.final.code == 250
    assert len(clean.hold_queue()) == 1
    assert clean.wait_delivered(1)[0].header("Subject") == ["two"]


def test_milter_down_follows_milter_default_action(postfix_installed: None) -> None:
    """A second, short-lived instance: the module's one keeps its milter."""
    import shutil
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="trustmilter-postfix-"))
    dead = f"inet:127.0.0.1:{free_port()}"
    try:
        with PostfixInstance(workdir, milter_spec=dead) as instance:
            out = send_one(instance.smtp_port, message())
            assert 400 <= out.final.code < 500, out
            instance.set_milters(dead, default_action="accept")
            out = send_one(instance.smtp_port, message())
            assert out.final.code == 250, out
            assert len(instance.wait_delivered(1)) == 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
