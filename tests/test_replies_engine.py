"""Our own mail as the reference, through the engine with the shipped policy.

A notification leaves through the outbound path (a real Transaction from
local submission: the token stamped, its Message-ID remembered once it is
accepted), then strangers answer it through inbound Transactions: the
customer's reply is accepted with reply.ours (also when a list marked it as
bulk), an out-of-office answer is held at once (reply-automatic), a bounce
returning the delivered copy's header is recognised by its token, and a
forged reply naming a Message-ID we never sent gets nothing. The shipped
policy.yaml with a key file set, the real DNS test server, one store.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Disposition, MessageOutcome, Transaction, VerdictRecord
from trustmilter.mail.token import message_digest, token_matches
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"
KEY = b"0123456789abcdef" * 4
LOCAL = Client(None, None, None)  # sendmail(1) on the help desk's host
CUSTOMER = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")
NOTICE_ID = "<ticket-4711.1@helpdesk.example.org>"
ZONE = GOOD_SENDER + key_zone(rsa_key(1024), "sel", "example.com")


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "token.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def app_and_store(dns_server, key_file: str) -> Iterator[tuple[object, MemoryStore]]:
    dns_server.load(ZONE)
    text = SHIPPED.read_text().replace('    key_file: ""\n', f"    key_file: {key_file}\n")
    settings = parse_settings(text, "policy.yaml")
    settings = replace(settings, authserv_id="mx.example.org", dns=replace(
        settings.dns, nameservers=(dns_server.nameserver,), timeout=0.5, lifetime=1.0))
    store = MemoryStore()
    with ThreadPoolExecutor(8) as pool:
        yield build_app(settings, pool, state=store), store


def transact(app, client: Client, sender: str, rcpt: str, raw: bytes
             ) -> tuple[MessageOutcome, VerdictRecord]:
    records: list[VerdictRecord] = []
    tx = Transaction(app, client, sender, None, observer=records.append)
    assert tx.opening() is None and tx.recipient(rcpt) is None
    outcome = tx.finish(Message(raw), "QID1")
    [record] = records
    return outcome, record


def notification() -> bytes:
    return message(from_="Help Desk <support@example.org>", to="carol@example.com",
                   subject="[#4711] Your ticket was updated", message_id=NOTICE_ID)


def send_notification(app) -> bytes:
    """Our notification out through the outbound path; the copy as delivered."""
    outcome, record = transact(app, LOCAL, "support@example.org", "carol@example.com",
                               notification())
    assert outcome.disposition is Disposition.ACCEPT
    assert record.direction is not None and record.direction.value == "outbound"
    assert record.results.first("sent").outcome.value == "pass"
    top = "".join(f"{name}: {value}\r\n" for name, value in outcome.add_headers).encode()
    return top + notification()


def answer(*headers: str, from_: str = "Carol <carol@example.com>",
           subject: str = "Re: [#4711] Your ticket was updated") -> bytes:
    return sign(message(from_=from_, subject=subject, extra_headers=headers,
                        message_id="<answer-1@example.com>"), rsa_key(1024), "example.com")


def findings(record: VerdictRecord) -> set[str]:
    return {f.name for r in record.results.all() for f in r.findings}


def test_the_notification_is_stamped_and_remembered(app_and_store) -> None:
    app, store = app_and_store
    delivered = Message(send_notification(app))
    [token] = delivered.header_values("X-Trustmilter-Token")
    assert token_matches(KEY, token, NOTICE_ID.strip("<>"), delivered.header("Date"))
    # Remembered as a keyed digest only; the envelope sender's digest with it.
    [sent] = store.sent_messages([message_digest(KEY, NOTICE_ID.strip("<>"))], time.time())
    assert sent.sender and "support" not in sent.sender


def test_the_customers_reply_is_accepted_with_reply_ours(app_and_store) -> None:
    app, _ = app_and_store
    send_notification(app)
    outcome, record = transact(app, CUSTOMER, "carol@example.com", "support@example.org",
                               answer(f"In-Reply-To: {NOTICE_ID}", f"References: {NOTICE_ID}"))
    assert outcome.disposition is Disposition.ACCEPT
    assert "reply.ours" in findings(record)
    # Also when a list relaying it marks it as bulk: reply.ours lifts auto-bulk.
    outcome, record = transact(app, CUSTOMER, "carol@example.com", "support@example.org",
                               answer(f"In-Reply-To: {NOTICE_ID}", "Precedence: list",
                                      "List-Id: <customers.example.com>"))
    assert outcome.disposition is Disposition.ACCEPT
    assert {"reply.ours", "auto.bulk"} <= findings(record)


def test_an_out_of_office_answer_is_held_at_once(app_and_store) -> None:
    app, _ = app_and_store
    send_notification(app)
    outcome, record = transact(
        app, CUSTOMER, "carol@example.com", "support@example.org",
        answer(f"In-Reply-To: {NOTICE_ID}", "Auto-Submitted: auto-replied",
               subject="Out of Office: [#4711] Your ticket was updated"))
    assert outcome.disposition is Disposition.QUARANTINE
    assert record.verdict.hits[0].rule == "reply-automatic"
    assert "reply-automatic" in (outcome.quarantine_reason or "")


def test_a_bounce_of_it_is_recognised_by_its_token(app_and_store) -> None:
    app, _ = app_and_store
    delivered = send_notification(app)
    header = delivered.split(b"\r\n\r\n", 1)[0]
    dsn = (b"From: Mail Delivery System <MAILER-DAEMON@example.com>\r\n"
           b"To: support@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
           b"Date: Mon, 01 Jan 2024 10:05:00 +0000\r\nMessage-ID: <dsn-1@example.com>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
           b"report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\nCould not be delivered.\r\n"
           b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
           b"Reporting-MTA: dns; mail.example.com\r\n\r\n"
           b"Final-Recipient: rfc822; carol@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" + header + b"\r\n--b1--\r\n")
    outcome, record = transact(app, CUSTOMER, "", "support@example.org",
                               sign(dsn, rsa_key(1024), "example.com"))
    assert "reply.ours_bounce" in findings(record)
    assert outcome.disposition is Disposition.QUARANTINE  # auto-bounce: the bounce work's rule


def test_a_forged_reply_naming_a_message_we_never_sent_gets_nothing(app_and_store) -> None:
    app, _ = app_and_store
    send_notification(app)
    outcome, record = transact(
        app, CUSTOMER, "carol@example.com", "support@example.org",
        answer("In-Reply-To: <ticket-4712.1@helpdesk.example.org>", "Precedence: bulk"))
    assert not any(name.startswith("reply.") for name in findings(record))
    assert outcome.disposition is Disposition.QUARANTINE  # auto-bulk, as for anyone


def test_without_a_key_our_mail_passes_as_before(dns_server) -> None:
    dns_server.load(ZONE)
    settings = parse_settings(SHIPPED.read_text(), "policy.yaml")
    with ThreadPoolExecutor(4) as pool:
        app = build_app(settings, pool, state=MemoryStore())
        outcome, record = transact(app, LOCAL, "support@example.org", "carol@example.com",
                                   notification())
    assert outcome.disposition is Disposition.ACCEPT and record.direction is None
    assert not any(name == "X-Trustmilter-Token" for name, _ in outcome.add_headers)
