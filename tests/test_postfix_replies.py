"""Our own mail as the reference, end to end: a private Postfix with trustmilter as
both its smtpd_milters and its non_smtpd_milters.

A help desk on the host submits a notification with sendmail(1): it passes
the milter as outbound mail, is stamped with our token and remembered (an
SQLite state store, as shipped). Its delivered copy gives the Message-ID
and the token a real answer would name or return. Then strangers answer
over SMTP (XCLIENT: 192.0.2.10, SPF/DKIM/DMARC in order, so only the signal
a test puts in can hold a message): the customer's reply is accepted with
reply.ours in the verdict line; an out-of-office answer is held at once
(reply-automatic, not after the rate tiers' 20); a bounce returning the
delivered header is recognised by its token (reply.ours_bounce); a forged
reply naming a Message-ID we never sent gets nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import Outcome, send_one
from trustmilter.mail.token import message_id, token_matches
from trustmilter.testing.daemon import DaemonProcess, Verdict, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import DeliveredMessage, PostfixInstance
from zones import GOOD_SENDER

AUTHSERV_ID = "mx.example.org"
KEY = b"f00dfeedcafebabe" * 4
ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
""" + key_zone(rsa_key(1024), "sel", "example.com")
CLIENT = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess


@pytest.fixture(scope="module")
def rig(postfix: PostfixInstance, _dns_test_server: DnsTestServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("replies")
    key = workdir / "token.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    policy = write_policy(
        workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
        dns={"cache_size": 0},
        state={"backend": "sqlite", "sqlite_path": str(workdir / "state" / "state.sqlite3")},
        checks={"replies": {"key_file": str(key)}},
    )
    daemon = DaemonProcess.start(policy, workdir / "trustmilter.log")
    try:
        postfix.set_milters(daemon.postfix_spec, default_action="tempfail", non_smtpd=True)
        yield Rig(postfix, daemon)
    finally:
        postfix.set_milters("", non_smtpd=False)
        assert daemon.stop() == 0, "SIGTERM: clean exit\n" + daemon.log_tail()


@pytest.fixture
def mta(rig: Rig, dns_server: DnsTestServer) -> Rig:
    rig.postfix.reset()
    dns_server.load(ZONE)
    return rig


def notify(rig: Rig) -> DeliveredMessage:
    """The help desk's notification, submitted locally; its copy as delivered."""
    ident = f"<ticket-4711.{uuid.uuid4().hex[:8]}@helpdesk.example.org>"
    raw = message(from_="Help Desk <support@example.org>", to="carol@example.org",
                  subject="[#4711] Your ticket was updated", message_id=ident)
    rig.postfix.sendmail(raw, "support@example.org", ["carol@example.org"])
    queue_id = rig.postfix.queue_id_for(ident)
    fields = rig.daemon.wait_verdict(queue_id).fields
    assert (fields["direction"], fields["action"], fields["sent"]) == (
        "outbound", "accept", "pass"), fields
    [delivered] = [m for m in rig.postfix.wait_delivered(1) if m.header("Message-ID") == [ident]]
    return delivered


def answer(*headers: str, subject: str = "Re: [#4711] Your ticket was updated") -> bytes:
    return sign(message(from_="Carol <carol@example.com>", subject=subject,
                        extra_headers=headers, message_id=f"<{uuid.uuid4().hex}@example.com>"),
                rsa_key(1024), "example.com")


def fate(rig: Rig, out: Outcome) -> tuple[str, Verdict]:
    """accept or hold, as Postfix saw it, and the verdict line."""
    assert out.data is not None and out.data.code == 250, out
    queue_id = out.data.text.split("queued as ")[1].split()[0]
    rig.postfix.wait_idle()
    held = queue_id in {e["queue_id"] for e in rig.postfix.hold_queue()}
    return ("hold" if held else "accept"), rig.daemon.wait_verdict(queue_id)


def test_our_notification_goes_out_stamped(mta: Rig) -> None:
    delivered = notify(mta)
    [ident] = delivered.header("Message-ID")
    [token] = delivered.header("X-Trustmilter-Token")
    [date] = delivered.header("Date")
    assert token_matches(KEY, token, message_id(ident) or "", date)


def test_replies_and_bounces_of_our_notification(mta: Rig) -> None:
    """One notification, then every kind of answer to it, as the issue lists them."""
    delivered = notify(mta)
    [ident] = delivered.header("Message-ID")
    port = mta.postfix.smtp_port

    # The customer answers the agent: accepted, reply.ours in the verdict line.
    reply = send_one(port, answer(f"In-Reply-To: {ident}", f"References: {ident}"),
                     mail_from="carol@example.com", **CLIENT)
    where, verdict = fate(mta, reply)
    assert where == "accept" and verdict.fields["action"] == "accept", verdict
    assert "reply.ours" in verdict.fields["findings"].split(","), verdict

    # An out-of-office answer to it: the two machines, held at the first one.
    away = send_one(port, answer(f"In-Reply-To: {ident}", "Auto-Submitted: auto-replied",
                                 subject="Out of Office: [#4711] Your ticket was updated"),
                    mail_from="carol@example.com", **CLIENT)
    where, verdict = fate(mta, away)
    assert where == "hold", verdict
    assert verdict.fields["rules"].split(",")[0] == "reply-automatic", verdict

    # A bounce returning its header: recognised by our token.
    header = delivered.raw.split(b"\n\n", 1)[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    dsn = (b"From: Mail Delivery System <MAILER-DAEMON@example.com>\r\n"
           b"To: support@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
           b"Date: Mon, 01 Jan 2024 10:05:00 +0000\r\n"
           b"Message-ID: <" + uuid.uuid4().hex.encode() + b"@example.com>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
           b"report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\nCould not be delivered.\r\n"
           b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
           b"Reporting-MTA: dns; mail.example.com\r\n\r\n"
           b"Final-Recipient: rfc822; carol@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" + header + b"\r\n--b1--\r\n")
    bounce = send_one(port, sign(dsn, rsa_key(1024), "example.com"), mail_from="", **CLIENT)
    where, verdict = fate(mta, bounce)
    assert "reply.ours_bounce" in verdict.fields["findings"].split(","), verdict
    assert where == "hold"  # a bounce is still held (auto-bounce); the bounce work decides more

    # A forged reply naming a Message-ID we never sent: nothing.
    forged = send_one(port, answer("In-Reply-To: <ticket-4711.0@helpdesk.example.org>",
                                   "Precedence: bulk"),
                      mail_from="carol@example.com", **CLIENT)
    where, verdict = fate(mta, forged)
    assert not any(f.startswith("reply.") for f in verdict.fields["findings"].split(","))
    assert where == "hold" and "auto-bulk" in verdict.fields["rules"].split(",")


def test_the_state_keeps_digests_only(mta: Rig) -> None:
    """What the store holds of the notification: no Message-ID, no address in clear."""
    import sqlite3

    delivered = notify(mta)
    [ident] = delivered.header("Message-ID")
    path = Path(mta.daemon.log_path).parent / "state" / "state.sqlite3"
    with sqlite3.connect(path) as db:
        rows = [record for (record,) in db.execute("SELECT record FROM sent")]
    assert rows
    stored = "\n".join(rows)
    assert (message_id(ident) or "x") not in stored and "support@" not in stored


def test_a_notification_without_message_id_gets_postfixs_and_is_stamped(mta: Rig) -> None:
    """A program that writes neither Message-ID nor Date: cleanup(8) adds both
    before the milter sees the header, so the token covers what goes out."""
    subject = f"Notice {uuid.uuid4().hex[:8]}"
    raw = (f"From: Help Desk <support@example.org>\r\nTo: carol@example.org\r\n"
           f"Subject: {subject}\r\n\r\nYour ticket was updated.\r\n").encode()
    mta.postfix.sendmail(raw, "support@example.org", ["carol@example.org"])
    [delivered] = [m for m in mta.postfix.wait_delivered(1) if m.header("Subject") == [subject]]
    [ident] = delivered.header("Message-ID")
    [token] = delivered.header("X-Trustmilter-Token")
    assert token_matches(KEY, token, message_id(ident) or "", delivered.header("Date")[0])
