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
    # example.com publishes p=reject; from a host in good standing that is held,
    # not refused (RFC 9989 §7.4: not on p=reject alone).
    assert outcome.disposition is Disposition.QUARANTINE
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


# --- (a) the hop before a trusted forwarder --------------------------------

OUR_STAMP = (f"Received: from mx.{FORWARDER} (mx.{FORWARDER} [198.51.100.25])"
             " by mx.example.org (Postfix) with ESMTPS id 4Q1; Mon, 01 Jan 2024 10:00:02 +0000")
ORIGIN_STAMP = (f"Received: from mail.example.com (mail.example.com [192.0.2.10])"
                f" by mx.{FORWARDER} (Postfix) with ESMTPS id 9Z8;"
                " Mon, 01 Jan 2024 10:00:01 +0000")
TRUST_FORWARDER = f"trusted_forwarders: [.{FORWARDER}]\n"


def forwarded_plain(*stamps: str) -> bytes:
    """Unsigned mail from alice@example.com, forwarded unchanged."""
    return message(extra_headers=stamps)


def test_a_trusted_forwarders_original_hop_that_passes_spf_is_accepted(dns_server, pool):
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE)
    app = make_app(dns_server, pool, TRUST_FORWARDER)
    outcome = deliver(app, FORWARDING_CLIENT, forwarded_plain(OUR_STAMP, ORIGIN_STAMP))
    results = outcome.record.results
    assert results.first("spf.mailfrom").outcome.value == "fail"  # the forwarder, kept
    assert results.first("forwarded.spf.mailfrom").outcome.value == "pass"
    assert results.first("forwarded.iprev").outcome.value == "pass"
    assert results.first("forwarded").outcome.value == "pass"
    assert outcome.disposition is Disposition.ACCEPT, outcome.record.verdict
    assert {"spf.mailfrom.fail", "dmarc.fail"} <= set(outcome.record.verdict.explained)
    # Authentication-Results says which hop each clause judged.
    header = dict(outcome.add_headers)["Authentication-Results"]
    assert "policy.iprev=192.0.2.10" in header
    assert f"hop before trusted forwarder {FORWARDER}" in header or \
        f"hop before trusted forwarder mx.{FORWARDER}" in header


def test_the_same_from_an_untrusted_relay_is_judged_on_the_relay(dns_server, pool):
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE)
    app = make_app(dns_server, pool)
    outcome = deliver(app, FORWARDING_CLIENT, forwarded_plain(OUR_STAMP, ORIGIN_STAMP))
    assert "forwarded" not in outcome.record.results
    assert outcome.disposition is Disposition.QUARANTINE  # SPF fails, p=reject: held (§7.4)
    assert outcome.record.verdict.explained == ()


def test_a_forged_received_field_from_an_untrusted_client_changes_nothing(dns_server, pool):
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE)
    app = make_app(dns_server, pool, TRUST_FORWARDER)
    stranger = Client(ipaddress.ip_address("203.0.113.5"), None, "mail.example.com")
    forged = deliver(app, stranger, forwarded_plain(ORIGIN_STAMP)).record
    plain = deliver(app, stranger, forwarded_plain()).record
    assert "forwarded" not in forged.results
    assert forged.results.signals() == plain.results.signals()
    assert (forged.verdict.action, forged.verdict.score) == (plain.verdict.action,
                                                             plain.verdict.score)


def test_a_trusted_forwarders_original_hop_that_fails_spf_is_held(dns_server, pool):
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE)
    app = make_app(dns_server, pool, TRUST_FORWARDER)
    bad = ORIGIN_STAMP.replace("192.0.2.10", "203.0.113.66")
    outcome = deliver(app, FORWARDING_CLIENT, forwarded_plain(OUR_STAMP, bad))
    results = outcome.record.results
    assert results.first("forwarded.spf.mailfrom").outcome.value == "fail"
    assert "dmarc.fail" not in outcome.record.verdict.explained
    # p=reject, nothing explains it, and the hop before has no PTR: refused (RFC 9989 §7.4)
    assert outcome.disposition is Disposition.REJECT


# --- the invalid-DKIM decision ---------------------------------------------

GOOD = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")


def test_an_invalid_dkim_signature_with_an_aligned_spf_pass_is_held(dns_server, pool):
    """"Not trusted": mail with an invalid DKIM signature, like a failed SPF check."""
    key = rsa_key()
    dns_server.load(GOOD_SENDER + FORWARDER_ZONE + key_zone(key, "sel", "example.com"))
    app = make_app(dns_server, pool)
    broken = sign(message(), key, "example.com") + b"changed after signing\r\n"
    outcome = deliver(app, GOOD, broken)
    verdict = outcome.record.verdict
    assert {"dkim.fail", "dmarc.pass", "spf.mailfrom.pass"} <= outcome.record.results.signals()
    assert outcome.disposition is Disposition.QUARANTINE
    assert [h.rule for h in verdict.hits] == ["dkim-invalid"]
    intact = deliver(app, GOOD, sign(message(), key, "example.com"))
    assert intact.disposition is Disposition.ACCEPT
