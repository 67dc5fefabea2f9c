"""Unauthenticated From: nothing authenticates the From domain, through the DNS test server.

The check needs all three: no aligned SPF or DKIM pass, no DMARC record, no
SPF record of the From domain's own. The unit tests run the real DMARC check
first (its record lookup through the test server) on SPF/DKIM evidence; the
transaction tests run every check and the shipped policy, as the milter does.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import make_ctx
from keys import key_zone, message, rsa_key, sign
from trustmilter.checks import author, dmarc
from trustmilter.checks.author import AuthorCheck, is_spf_record
from trustmilter.checks.dkim import DkimEvidence
from trustmilter.checks.registry import SECTIONS
from trustmilter.checks.spf import SpfEvidence
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Disposition, Transaction
from trustmilter.model import Message
from trustmilter.results import CheckResult, Outcome
from trustmilter.state.memory import MemoryStore

# example.com: a provider whose envelope domain passes SPF for 192.0.2.10.
# nospf.example.org: exists, publishes nothing (the spoofable kind).
# withspf / withdmarc: publish one of the two. broken: its TXT fails.
ZONE = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN MX  10 mail.example.com.
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
nospf.example.org.         300 IN A   192.0.2.20
nospf.example.org.         300 IN TXT "google-site-verification=abc"
withspf.example.org.       300 IN A   192.0.2.21
withspf.example.org.       300 IN TXT "v=spf1 mx -all"
withdmarc.example.org.     300 IN A   192.0.2.22
_dmarc.withdmarc.example.org. 300 IN TXT "v=DMARC1; p=none"
broken.example.org.        300 IN A   192.0.2.23
$SERVFAIL broken.example.org. TXT
$TIMEOUT  slow.example.org. TXT
slow.example.org.          300 IN A   192.0.2.24
example.net.               300 IN MX  10 mx.example.net.
example.org.               300 IN MX  10 mx.example.net.
"""


def spf_pass(domain):
    return CheckResult("spf.mailfrom", Outcome.PASS, method="spf",
                       evidence=SpfEvidence(domain, "mailfrom"))


def dkim_pass(domain):
    return CheckResult("dkim", Outcome.PASS, method="dkim", evidence=DkimEvidence(domain, "sel"))


def judge(resolver, from_, earlier=()):
    """The author result for From `from_`, after the real DMARC check on `earlier`."""
    raw = message(from_=from_)

    def ctx(results):
        return make_ctx(resolver, ip="192.0.2.10", mail_from="bounce@example.com",
                        message=raw, results=results)

    [verdict] = dmarc.DmarcCheck(dmarc.Config()).run(ctx(earlier))
    [result] = AuthorCheck(author.Config()).run(ctx((*earlier, verdict)))
    assert result.check == "author" and result.method is None
    return result


def found(result):
    return [f.name for f in result.findings]


@pytest.fixture
def zone(dns_server):
    dns_server.load(ZONE)
    return dns_server


def test_registered_after_dmarc_and_reads_its_evidence():
    section = next(s for s in SECTIONS if s.name == "author")
    assert section.checks == (AuthorCheck,)
    assert set(AuthorCheck.spec.requires) == {"spf.mailfrom", "dkim", "dmarc"}
    names = [s.name for s in SECTIONS]
    assert names.index("dmarc") < names.index("author")


def test_spoofed_from_without_spf_through_a_passing_envelope_domain(zone, resolver):
    """The first kind of mail not trusted: SPF passes, but for someone else's domain."""
    result = judge(resolver, "ceo@nospf.example.org", (spf_pass("example.com"),))
    assert result.outcome is Outcome.FAIL
    assert found(result) == ["author.unauthenticated"]
    assert "nospf.example.org" in result.findings[0].detail
    assert ("nospf.example.org", "TXT") in zone.queries


def test_a_nonexistent_from_domain_has_no_spf_either(zone, resolver):
    """NXDOMAIN for the From domain's TXT: no record (names reports the domain itself)."""
    result = judge(resolver, "a@gone.example.org", (spf_pass("example.com"),))
    assert found(result) == ["author.unauthenticated"]


def test_aligned_dkim_pass_is_authentication(zone, resolver):
    result = judge(resolver, "ceo@nospf.example.org",
                   (spf_pass("example.com"), dkim_pass("nospf.example.org")))
    assert result.outcome is Outcome.PASS
    assert result.findings == ()


def test_relaxed_alignment_counts(zone, resolver):
    """A pass for the organisational domain authenticates a subdomain's From."""
    result = judge(resolver, "a@news.nospf.example.org", (spf_pass("nospf.example.org"),))
    assert result.outcome is Outcome.PASS


def test_a_dmarc_record_takes_it_out_of_this_check(zone, resolver):
    """p=none published: DMARC judges (dmarc.fail), not this check."""
    result = judge(resolver, "a@withdmarc.example.org", (spf_pass("example.com"),))
    assert result.outcome is Outcome.NONE
    assert result.findings == ()


def test_an_own_spf_record_takes_it_out_of_this_check(zone, resolver):
    """The small business with SPF and no DMARC is not caught."""
    result = judge(resolver, "a@withspf.example.org", (spf_pass("example.com"),))
    assert result.outcome is Outcome.NONE
    assert result.findings == ()


@pytest.mark.parametrize("domain", ["broken.example.org", "slow.example.org"])
def test_a_temporary_failure_is_never_no_record(zone, resolver, domain):
    """SERVFAIL or timeout on the From domain's TXT: temperror, no finding."""
    result = judge(resolver, f"a@{domain}", (spf_pass("example.com"),))
    assert result.outcome is Outcome.TEMPERROR
    assert result.findings == ()


def test_dmarc_temperror_is_undecided(dns_server, resolver):
    dns_server.load(ZONE + "$SERVFAIL _dmarc.nospf.example.org. TXT\n")
    result = judge(resolver, "ceo@nospf.example.org", (spf_pass("example.com"),))
    assert result.outcome is Outcome.TEMPERROR
    assert result.findings == ()


def test_skipped_without_dmarc_or_single_from(zone, resolver):
    raw = message(from_="a@nospf.example.org")
    ctx = make_ctx(resolver, mail_from="b@example.com", message=raw)
    [result] = AuthorCheck(author.Config()).run(ctx)
    assert result.outcome is Outcome.SKIPPED  # no dmarc result to read
    two_froms = b"From: a@nospf.example.org\r\n" + raw
    ctx = make_ctx(resolver, mail_from="b@example.com", message=two_froms)
    [verdict] = dmarc.DmarcCheck(dmarc.Config()).run(ctx)
    ctx = make_ctx(resolver, mail_from="b@example.com", message=two_froms, results=(verdict,))
    [result] = AuthorCheck(author.Config()).run(ctx)
    assert result.outcome is Outcome.SKIPPED


@pytest.mark.parametrize(("txt", "spf"), [
    ("v=spf1 -all", True), ("V=SPF1 mx", True), ("v=spf1", True), ("v=spf10 a", False),
    ("spf1", False), ("", False), ("v=DMARC1; p=none", False),
])
def test_spf_record_recognition(txt, spf):
    """RFC 7208 §4.5: "v=spf1" then a space or the end."""
    assert is_spf_record(txt) is spf


# ---- the whole transaction, the shipped policy --------------------------------

PROVIDER = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")


@pytest.fixture
def app(dns_server):
    settings = parse_settings(
        "authserv_id: mx.example.net\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n",
        "test-policy.yaml",
    )
    with ThreadPoolExecutor(8) as pool:
        yield build_app(settings, pool, state=MemoryStore())


def deliver(app, raw, sender="bounce@example.com"):
    tx = Transaction(app, PROVIDER, sender)
    assert tx.opening() is None
    assert tx.recipient("support@example.net") is None
    return tx.finish(Message(raw), "QID")


def test_spoof_without_spf_is_held_by_the_shipped_policy(zone, app):
    """Before: spf pass, dkim none, dmarc none = 2 points, accepted unmarked. Now held."""
    outcome = deliver(app, message(from_="CEO <ceo@nospf.example.org>"))
    assert outcome.disposition is Disposition.QUARANTINE
    signals = outcome.record.results.signals()
    assert "author.unauthenticated" in signals and "dmarc.fail" not in signals
    assert any(hit.rule == "from-unauthenticated" for hit in outcome.record.verdict.hits)


@pytest.mark.parametrize("from_", ["a@withspf.example.org", "a@withdmarc.example.org"])
def test_published_spf_or_dmarc_is_not_held(zone, app, from_):
    outcome = deliver(app, message(from_=from_))
    assert outcome.disposition is Disposition.ACCEPT
    assert "author.unauthenticated" not in outcome.record.results.signals()


def test_aligned_dkim_signature_is_not_held(dns_server, app):
    key = rsa_key(1024)
    dns_server.load(ZONE + key_zone(key, "sel", "nospf.example.org"))
    outcome = deliver(app, sign(message(from_="ceo@nospf.example.org"), key, "nospf.example.org"))
    assert outcome.disposition is Disposition.ACCEPT
    signals = outcome.record.results.signals()
    assert "author.pass" in signals and "author.unauthenticated" not in signals
