"""Forwarded mail through the engine, DNS through the test server: trusted ARC
sealers and gateways explain the local failures forwarding causes; the hop
before a trusted forwarder is authenticated in its place."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import pytest

from keys import key_zone, message, rsa_key, seal, sign
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Disposition, Transaction
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

FORWARDER = "forwarder.example.net"
FORWARDER_ZONE = f"""
{FORWARDER}.               300 IN A   198.51.100.25
{FORWARDER}.               300 IN MX  10 mx.{FORWARDER}.
{FORWARDER}.               300 IN TXT "v=spf1 ip4:198.51.100.25 -all"
mx.{FORWARDER}.            300 IN A   198.51.100.25
25.100.51.198.in-addr.arpa. 300 IN PTR mx.{FORWARDER}.
example.org.               300 IN MX  10 mx.example.org.
example.org.               300 IN A   192.0.2.20
"""
FORWARDING_CLIENT = Client(ipaddress.ip_address("198.51.100.25"), f"mx.{FORWARDER}",
                           f"mx.{FORWARDER}")
FOOTER = b"--\r\nforwarded by the customer's server\r\n"
RECORDED = ("dkim=pass header.d=example.com; spf=pass smtp.mailfrom=alice@example.com;"
            " dmarc=pass header.from=example.com")


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as executor:
        yield executor


def make_app(dns_server, pool, extra: str = ""):
    settings = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        + extra,
        "test-policy.yaml",
    )
    return build_app(settings, pool, state=MemoryStore())


def deliver(app, client, raw, sender="alice@example.com"):
    """One whole transaction that reaches end of message; its outcome."""
    tx = Transaction(app, client, sender)
    assert tx.opening() is None
    assert tx.recipient("support@example.org") is None
    return tx.finish(Message(raw), "QID1")


def sealed_forward(recorded: str = RECORDED) -> bytes:
    """The author's signed mail, changed by the forwarder (a footer breaks the
    signature) and sealed by it, as the forwarder's A-R recorded it."""
    key = rsa_key()
    return seal(sign(message(), key, "example.com") + FOOTER, key, FORWARDER, recorded)


def keys():
    key = rsa_key()
    return key_zone(key, "sel", "example.com") + key_zone(key, "arc", FORWARDER)


# --- (b) a trusted ARC sealer's passes replace the local failures ----------


def test_a_trusted_sealers_dmarc_pass_takes_the_local_failures_out_of_the_score(
        dns_server, pool):
    """dkim.fail + dmarc.fail + spf.mailfrom.fail (9 points) no longer quarantine."""
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE + keys())
    app = make_app(dns_server, pool, f"checks: {{arc: {{trusted_sealers: [{FORWARDER}]}}}}\n")
    outcome = deliver(app, FORWARDING_CLIENT, sealed_forward())
    record = outcome.record
    signals = record.results.signals()
    assert {"spf.mailfrom.fail", "dkim.fail", "dmarc.fail", "arc.trusted_pass"} <= signals
    assert outcome.disposition is Disposition.ACCEPT
    assert record.verdict.score < 3
    assert {"dkim.fail", "dmarc.fail", "spf.mailfrom.fail"} <= set(record.verdict.explained)
    assert not {"dkim.fail", "dmarc.fail", "spf.mailfrom.fail"} & set(record.verdict.reasons)
    assert dict(record.pairs())["explained"].startswith("dkim.fail,dmarc.fail")


def test_the_same_forward_without_a_trusted_sealer_is_judged_on_its_failures(dns_server, pool):
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE + keys())
    app = make_app(dns_server, pool)
    outcome = deliver(app, FORWARDING_CLIENT, sealed_forward())
    assert outcome.disposition is Disposition.REJECT  # example.com publishes p=reject
    assert outcome.record.verdict.explained == ()


def test_a_sealer_that_saw_the_signature_fail_does_not_explain_it(dns_server, pool):
    """Only the methods it recorded as pass: a signature broken before it stays broken."""
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE + keys())
    app = make_app(dns_server, pool, f"checks: {{arc: {{trusted_sealers: [{FORWARDER}]}}}}\n")
    recorded = ("dkim=fail header.d=example.com; spf=pass smtp.mailfrom=alice@example.com;"
                " dmarc=pass header.from=example.com")
    verdict = deliver(app, FORWARDING_CLIENT, sealed_forward(recorded)).record.verdict
    assert "dkim.fail" not in verdict.explained and "dkim.fail" in verdict.reasons
    assert {"dmarc.fail", "spf.mailfrom.fail"} <= set(verdict.explained)


def test_a_trusted_gateways_recorded_passes_explain_the_same(dns_server, pool):
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE + keys())
    app = make_app(dns_server, pool, "trusted_authserv_ids: [mx.forwarder.example.net]\n")
    key = rsa_key()
    raw = (f"Authentication-Results: mx.{FORWARDER}; {RECORDED}\r\n".encode()
           + sign(message(), key, "example.com") + FOOTER)
    outcome = deliver(app, FORWARDING_CLIENT, raw)
    assert outcome.disposition is Disposition.ACCEPT
    assert {"dkim.fail", "dmarc.fail", "spf.mailfrom.fail"} <= set(
        outcome.record.verdict.explained)
