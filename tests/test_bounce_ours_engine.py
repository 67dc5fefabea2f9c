"""Ours or not, through the engine: whole transactions with the DNS test server.

A report from our own MTA is ours; one that only claims to be (a From of
ours inside, from a stranger's MTA) is "claims" and records nothing; one
returning our valid token, or our DKIM signature, is ours; a forged token is
not; and a bounce the milter refuses records nothing, however ours it is.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from test_engine_transaction import pool, transact  # noqa: F401  (pool: a fixture)
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Disposition
from trustmilter.mail.token import make_token
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

KEY = b"f00dfeedcafebabe" * 4
OUR_KEY = rsa_key(1024)
# The stranger's MTA (mail.example.com, under no DMARC policy: the reports'
# From is its MAILER-DAEMON), our relay, and our DKIM key.
ZONE = GOOD_SENDER.replace('_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject"\n', "") + """
relay.example.org.          300 IN A   198.51.100.30
30.100.51.198.in-addr.arpa. 300 IN PTR relay.example.org.
""" + key_zone(OUR_KEY, "sel", "example.org")
STRANGER = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")
OUR_RELAY = Client(ipaddress.ip_address("198.51.100.30"), "relay.example.org",
                   "relay.example.org")


@pytest.fixture
def app(dns_server, pool, tmp_path: Path):  # noqa: F811
    dns_server.load(ZONE)
    key = tmp_path / "token.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    return make_app(dns_server, pool, key)


def make_app(dns_server, pool, key: Path, extra: str = ""):  # noqa: F811
    policy = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        "checks:\n"
        "  bounce: {own_domains: [example.org], own_mtas: [relay.example.org]}\n"
        f"  replies: {{key_file: '{key}'}}\n" + extra,
        "test-policy.yaml",
    )
    return build_app(policy, pool, state=MemoryStore())


def notification(*extra: str) -> bytes:
    """Our help desk's notification as it went out."""
    return message(from_="Help Desk <support@example.org>", to="bob@example.net",
                   subject="[#4711] Your ticket", extra_headers=extra,
                   message_id=f"<t{uuid.uuid4().hex[:8]}@example.org>")


def stamped() -> bytes:
    raw = notification()
    ident = raw.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()
    token = make_token(KEY, ident, "Mon, 01 Jan 2024 10:00:00 +0000")
    return raw.replace(b"\r\n\r\n", f"\r\nX-Trustmilter-Token: {token}\r\n\r\n".encode(), 1)


def dsn(returned: bytes, reporter: str = "mail.example.com", whole: bool = False) -> bytes:
    """`reporter` says bob@example.net does not exist, returning `returned` (its header,
    unless `whole`)."""
    kind = b"message/rfc822" if whole else b"text/rfc822-headers"
    copy = returned if whole else returned.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return (b"From: Mail Delivery System <MAILER-DAEMON@" + reporter.encode() + b">\r\n"
            b"To: support@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Date: Mon, 01 Jan 2024 10:05:00 +0000\r\n"
            b"Message-ID: <" + uuid.uuid4().hex.encode() + b"@" + reporter.encode() + b">\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            b"report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nCould not be delivered.\r\n"
            b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; " + reporter.encode() + b"\r\n\r\n"
            b"Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            b"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: no such user\r\n\r\n"
            b"--b1\r\nContent-Type: " + kind + b"\r\n\r\n" + copy + b"\r\n--b1--\r\n")


def deliver(app, client: Client, raw: bytes):
    """The bounce to our help desk; (disposition, its summary, the findings, records)."""
    _, outcome, _ = transact(app, client, "<>", ["support@example.org"], raw)
    assert outcome is not None
    results = outcome.record.results
    findings = {f.name for r in results.all() for f in r.findings}
    summary = results.first("bounce").summary
    return outcome.disposition, summary, findings, app.state.hard_bounces(time.time())


def test_a_report_from_our_own_mta_is_ours(app) -> None:
    disposition, summary, findings, recorded = deliver(
        app, OUR_RELAY, dsn(notification(), reporter="relay.example.org"))
    assert disposition is Disposition.QUARANTINE  # bounces are held all the same
    assert summary.startswith("own; ours=yes:reporting-mta; reporting-mta=relay.example.org")
    assert summary.endswith("hard=1") and "bounce.ours" in findings
    assert [(b.recipient, b.ours, b.client) for b in recorded] == [
        ("bob@example.net", "reporting-mta", "198.51.100.30")]


def test_one_claiming_to_be_ours_from_a_strangers_mta_is_claims(app) -> None:
    """A From of ours inside, nothing else; and our relay's name written by a stranger."""
    _, summary, findings, recorded = deliver(app, STRANGER, dsn(notification()))
    assert summary.startswith("own; ours=claims; ")
    assert "bounce.own" in findings and "bounce.ours" not in findings
    assert recorded == [] and "hard=" not in summary
    _, summary, _, recorded = deliver(
        app, STRANGER, dsn(notification(), reporter="relay.example.org"))
    assert summary.startswith("own; ours=claims; ") and recorded == []


def test_one_returning_our_valid_token_is_ours(app) -> None:
    _, summary, findings, recorded = deliver(app, STRANGER, dsn(stamped()))
    assert summary.startswith("own; ours=yes:token; ")
    assert {"reply.ours_bounce", "bounce.ours"} <= findings
    assert [(b.recipient, b.ours, b.reporting_mta) for b in recorded] == [
        ("bob@example.net", "token", "mail.example.com")]


def test_a_forged_token_is_not_ours(app) -> None:
    forged = stamped().replace(b"X-Trustmilter-Token: 1.", b"X-Trustmilter-Token: 1.A")
    _, summary, findings, recorded = deliver(app, STRANGER, dsn(forged))
    assert summary.startswith("own; ours=no; ")
    assert "reply.forged_token" in findings and "bounce.ours" not in findings
    assert recorded == []


def test_one_returning_our_dkim_signature_is_ours(app) -> None:
    signed = sign(notification(), OUR_KEY, "example.org")
    _, summary, _, recorded = deliver(app, STRANGER, dsn(signed, whole=True))
    assert summary.startswith("own; ours=yes:dkim; ")
    assert [b.ours for b in recorded] == ["dkim"]


def test_a_bounce_the_milter_refuses_records_nothing(dns_server, pool, tmp_path) -> None:  # noqa: F811
    """However verifiably ours: effects are written for delivered mail only."""
    dns_server.load(ZONE)
    key = tmp_path / "token.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    app = make_app(dns_server, pool, key,
                   "rules:\n  - {name: no-bounces, when: [bounce.ours], action: reject}\n")
    disposition, summary, _, recorded = deliver(
        app, OUR_RELAY, dsn(stamped(), reporter="relay.example.org"))
    assert disposition is Disposition.REJECT
    assert summary.startswith("own; ours=yes:reporting-mta+token; ") and summary.endswith("hard=1")
    assert recorded == []
