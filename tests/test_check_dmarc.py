"""DMARC under ``standard: rfc7489``: discovery, alignment, policy, via the DNS test server.

These are the RFC 7489 tests from before RFC 9989, run behind the switch
unchanged. test_check_dmarc_rfc9989.py runs the ones whose answer RFC 9989
keeps under the default standard and tests what it changes."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from helpers import domain_tools, make_ctx
from keys import message
from trustmilter.checks import dmarc
from trustmilter.checks.dkim import DkimEvidence
from trustmilter.checks.dmarc import (
    DmarcCheck,
    Policy,
    aligned,
    author_domains,
    is_dmarc_record,
    parse_record,
    sampled_in,
)
from trustmilter.checks.spf import SpfEvidence
from trustmilter.domains import domain_of
from trustmilter.model import Message
from trustmilter.results import CheckResult, Outcome

ZONE = """
_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"
_dmarc.strict.example.net. 300 IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
_dmarc.nosp.example.org.   300 IN TXT "v=DMARC1; p=quarantine"
_dmarc.example.net.        300 IN TXT "v=DMARC1; p=quarantine"
_dmarc.example.co.uk.      300 IN TXT "v=DMARC1; p=reject"
_dmarc.bad.example.org.    300 IN TXT "v=DMARC1; p=bogus"
_dmarc.badrua.example.org. 300 IN TXT "v=DMARC1; p=bogus; rua=mailto:r@example.org"
_dmarc.two.example.org.    300 IN TXT "v=DMARC1; p=reject"
_dmarc.two.example.org.    300 IN TXT "v=DMARC1; p=none"
_dmarc.order.example.org.  300 IN TXT "p=reject; v=DMARC1"
_dmarc.zero.example.org.   300 IN TXT "v=DMARC1; p=reject; pct=0"
_dmarc.half.example.org.   300 IN TXT "v=DMARC1; p=reject; pct=50"
_dmarc.other.example.org.  300 IN TXT "some-verification=xyz"
$SERVFAIL _dmarc.temp.example.net. TXT
"""


RFC7489 = dmarc.Config(standard="rfc7489")


def spf_result(outcome, domain):
    return CheckResult("spf.mailfrom", outcome, method="spf",
                       evidence=SpfEvidence(domain, "mailfrom"))


def dkim_result(outcome, d):
    return CheckResult("dkim", outcome, method="dkim", evidence=DkimEvidence(d, "sel"))


def run(resolver, from_="alice@example.com", results=(), raw=None, config=None):
    """The single dmarc result for a message From `from_` with earlier `results`."""
    raw = raw if raw is not None else message(from_=from_)
    ctx = make_ctx(resolver, ip="192.0.2.4", helo="mail.example.com", mail_from="a@example.com",
                   message=raw, results=results)
    [result] = DmarcCheck(config or RFC7489).run(ctx)
    assert (result.check, result.method) == ("dmarc", "dmarc")
    return result


def names(result):
    return {f.name for f in result.findings}


def asked(dns_server):
    return [str(n).rstrip(".").lower() for n, _t in dns_server.queries]


@pytest.fixture
def zone(dns_server):
    dns_server.load(ZONE)
    return dns_server


def test_spf_relaxed_alignment_passes(zone, resolver):
    """RFC 7489 §3.1.2: relaxed SPF alignment is the same organisational domain."""
    result = run(resolver, results=[spf_result(Outcome.PASS, "bounces.example.com")])
    assert result.outcome is Outcome.PASS
    assert names(result) == {"dmarc.spf_aligned"}
    assert result.prop("header.from") == "example.com"
    assert result.prop("policy.dmarc") == "none"
    assert asked(zone) == ["_dmarc.example.com"]


def test_dkim_relaxed_alignment_passes(zone, resolver):
    """RFC 7489 §3.1.1: relaxed DKIM alignment; SPF failing does not matter (§4.2)."""
    result = run(resolver, results=[spf_result(Outcome.FAIL, "example.com"),
                                    dkim_result(Outcome.PASS, "mail.example.com")])
    assert result.outcome is Outcome.PASS
    assert names(result) == {"dmarc.dkim_aligned"}


def test_strict_alignment_needs_identical_domains(zone, resolver):
    """RFC 7489 §3.1.1/§3.1.2: adkim=s / aspf=s require an exact match."""
    sub = [spf_result(Outcome.PASS, "mail.strict.example.net"),
           dkim_result(Outcome.PASS, "mail.strict.example.net")]
    result = run(resolver, "a@strict.example.net", sub)
    assert result.outcome is Outcome.FAIL
    assert "dmarc.policy.reject" in names(result)
    exact = [dkim_result(Outcome.PASS, "strict.example.net")]
    assert run(resolver, "a@strict.example.net", exact).outcome is Outcome.PASS
    exact_spf = [spf_result(Outcome.PASS, "strict.example.net")]
    assert run(resolver, "a@strict.example.net", exact_spf).outcome is Outcome.PASS


def test_unaligned_passes_fail_with_p(zone, resolver):
    """RFC 7489 §6.6.2: passes for other domains do not count; p= applies to the domain itself."""
    results = [spf_result(Outcome.PASS, "example.net"), dkim_result(Outcome.PASS, "example.org")]
    result = run(resolver, results=results)
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.reject"}
    assert result.prop("policy.dmarc") == "reject"


def test_subdomain_gets_sp_from_org_record(zone, resolver):
    """RFC 7489 §6.3 sp= and §6.6.3 step 3: a subdomain without its own record uses the org's sp."""
    result = run(resolver, "a@news.example.com")
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.quarantine", "dmarc.org_domain_record"}
    assert asked(zone) == ["_dmarc.news.example.com", "_dmarc.example.com"]


def test_subdomain_without_sp_gets_p(zone, resolver):
    """RFC 7489 §6.3: without sp= the p= policy applies to subdomains."""
    result = run(resolver, "a@deep.sub.example.net")
    assert names(result) == {"dmarc.policy.quarantine", "dmarc.org_domain_record"}
    assert asked(zone) == ["_dmarc.deep.sub.example.net", "_dmarc.example.net"]


def test_org_domain_fallback_multi_label_suffix(zone, resolver):
    """RFC 7489 §3.2: the organisational domain of mail.example.co.uk is example.co.uk (PSL)."""
    result = run(resolver, "a@mail.example.co.uk")
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.reject", "dmarc.org_domain_record"}
    assert asked(zone) == ["_dmarc.mail.example.co.uk", "_dmarc.example.co.uk"]


def test_no_record_is_none(zone, resolver):
    """RFC 7489 §6.6.3 step 5: no record at either level: DMARC does not apply."""
    result = run(resolver, "a@other.example.org")
    assert result.outcome is Outcome.NONE
    assert not result.findings


def test_several_records_is_none(zone, resolver):
    """RFC 7489 §6.6.3 step 5: more than one record ends discovery (no fallback)."""
    assert run(resolver, "a@two.example.org").outcome is Outcome.NONE
    assert asked(zone) == ["_dmarc.two.example.org"]


def test_version_must_come_first(zone, resolver):
    """RFC 7489 §6.3/§6.6.3 step 4: a record not starting with v=DMARC1 is discarded."""
    assert run(resolver, "a@order.example.org").outcome is Outcome.NONE


def test_malformed_policy(zone, resolver):
    """RFC 7489 §6.6.3 step 6: invalid p= is permerror (§11.2), or p=none when rua= is valid."""
    assert run(resolver, "a@bad.example.org").outcome is Outcome.PERMERROR
    result = run(resolver, "a@badrua.example.org")
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.none"}


def test_pct_zero_samples_out_to_quarantine(zone, resolver):
    """RFC 7489 §6.6.4: a message left out by pct gets the next lower policy."""
    result = run(resolver, "a@zero.example.org")
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.quarantine", "dmarc.pct_sampled_out"}


def test_pct_sampling_is_deterministic(zone, resolver):
    """RFC 7489 §6.6.4 sampling, made reproducible by hashing From domain and Message-ID."""
    outcomes = set()
    for n in range(12):
        msg_id = f"<{n}@example.org>"
        raw = message(from_="a@half.example.org", message_id=msg_id)
        result = run(resolver, raw=raw)
        expected = "reject" if sampled_in(50, "half.example.org", msg_id) else "quarantine"
        assert result.prop("policy.dmarc") == expected
        assert run(resolver, raw=raw).prop("policy.dmarc") == expected  # same message, same answer
        outcomes.add(expected)
    assert outcomes == {"reject", "quarantine"}


def test_record_lookup_temperror(zone, resolver):
    """RFC 7489 §6.6.3: a transient DNS failure leaves the result undecided: temperror."""
    result = run(resolver, "a@temp.example.net", [spf_result(Outcome.FAIL, "temp.example.net")])
    assert result.outcome is Outcome.TEMPERROR
    assert not result.findings


def test_aligned_temperror_makes_temperror(zone, resolver):
    """RFC 7489 §6.6.2: no aligned pass and an aligned identifier temperror: policy not applied."""
    aligned_temp = [spf_result(Outcome.TEMPERROR, "example.com"),
                    dkim_result(Outcome.FAIL, "example.com")]
    assert run(resolver, results=aligned_temp).outcome is Outcome.TEMPERROR
    unaligned_temp = [dkim_result(Outcome.TEMPERROR, "example.net")]
    assert run(resolver, results=unaligned_temp).outcome is Outcome.FAIL
    with_pass = [dkim_result(Outcome.TEMPERROR, "example.com"),
                 spf_result(Outcome.PASS, "example.com")]
    assert run(resolver, results=with_pass).outcome is Outcome.PASS


def test_null_sender_spf_identity_is_the_helo_domain(zone, resolver):
    """RFC 7489 §4.1 + RFC 7208 §2.4: for MAIL FROM:<> spf.mailfrom checked postmaster@HELO."""
    result = run(resolver, results=[spf_result(Outcome.PASS, "mail.example.com")])
    assert result.outcome is Outcome.PASS


def test_from_field_problems(zone, resolver):
    """RFC 7489 §6.6.1: no single From field means no Author Domain (permerror)."""
    two_froms = message(extra_headers=("From: b@example.net",))
    assert run(resolver, raw=two_froms).outcome is Outcome.PERMERROR
    no_from = b"To: x@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    assert run(resolver, raw=no_from).outcome is Outcome.PERMERROR


def test_several_authors_take_the_strictest(zone, resolver):
    """RFC 7489 §6.6.1: each From domain is checked; the strictest failing policy wins."""
    raw = message(from_="a@nosp.example.org, b@example.com")
    result = run(resolver, raw=raw, results=[spf_result(Outcome.PASS, "nosp.example.org")])
    assert result.outcome is Outcome.FAIL
    assert result.prop("header.from") == "example.com"
    assert "dmarc.policy.reject" in names(result)


def test_skipped_without_message(resolver):
    """Before end of message there is nothing to check."""
    ctx = make_ctx(resolver, message=None)
    assert DmarcCheck(RFC7489).run(ctx)[0].outcome is Outcome.SKIPPED


def test_pure_record_parsing():
    """RFC 7489 §6.3/§6.4: tags, defaults, and bad optional values falling back."""
    assert is_dmarc_record("v=DMARC1; p=none")
    assert is_dmarc_record("V = DMARC1;p=none")
    assert not is_dmarc_record("v=dmarc1; p=none")  # %x44 %x4d...: the value is case-sensitive
    assert not is_dmarc_record("p=none; v=DMARC1")
    record = parse_record(
        "v=DMARC1; p=Quarantine; sp=none; adkim=s; aspf=x; pct=250; rua=mailto:a@b.example"
    )
    assert (record.p, record.sp, record.adkim, record.aspf, record.pct, record.has_rua) == (
        Policy.QUARANTINE, Policy.NONE, "s", "r", 100, True)
    assert parse_record("v=DMARC1").p is None
    assert parse_record("v=DMARC1; p=reject; sp=maybe").sp_invalid
    assert Policy.REJECT.milder is Policy.QUARANTINE and Policy.QUARANTINE.milder is Policy.NONE


def test_pure_alignment():
    """RFC 7489 §3.1: relaxed = same org domain (public suffix list), strict = equal."""
    org = domain_tools().org_domain
    assert aligned("mail.example.co.uk", "example.co.uk", "r", org)
    assert not aligned("other.co.uk", "example.co.uk", "r", org)
    assert not aligned("mail.example.com", "example.com", "s", org)
    assert aligned("Example.COM.", "example.com", "s", org)
    assert sampled_in(100, "x.example", "") and not sampled_in(0, "x.example", "<a@b>")


def _old_author_domains(raw: bytes) -> list[str] | str:
    """author_domains as it was (`in` on a list), as the reference."""
    fields = Message(raw).header_values("From")
    if len(fields) != 1:
        return "no From field" if not fields else f"{len(fields)} From fields"
    domains: list[str] = []
    for _name, address in email.utils.getaddresses(fields):
        domain = domain_of(address)
        if domain and domain not in domains:
            domains.append(domain)
    return domains or "From field has no address with a domain"


def _ordinary_from(rng: random.Random) -> str:
    """A well-formed From value (RFC 5322 §3.4) of the shapes real mail uses."""
    def mailbox() -> str:
        address = f"{rng.choice(['a', 'b.c', 'no-reply', 'x+tag'])}@" + rng.choice(
            ["x.example", "Y.Example", "mail.z.example", "[192.0.2.1]"])
        return rng.choice([
            address, f"<{address}>", f"Name <{address}>", f'"Last, First" <{address}>',
            f"{address} (comment)", f"=?utf-8?q?J=C3=BCrgen?= <{address}>",
            f"First (the (nested) one) Last <{address}>", f'"q\\"x" <{address}>',
        ])
    items = [mailbox() for _ in range(rng.randrange(1, 4))]
    if rng.random() < 0.2:
        items = [f"Team: {', '.join(items)};"]
    return rng.choice([", ", ",", " ,\t"]).join(items)


def test_author_domains_same_as_the_stdlib_for_ordinary_froms() -> None:
    """On well-formed From fields the one linear parser finds what the stdlib's
    getaddresses found, so ordinary mail keeps its DMARC verdict."""
    rng = random.Random(7489)
    for _ in range(3000):
        value = _ordinary_from(rng)
        raw = b"From: " + value.encode() + b"\r\n\r\nx"
        assert author_domains(Message(raw)) == _old_author_domains(raw), value


def test_author_domains_linear_in_distinct_domains() -> None:
    """`in` on a list made 100 KB of distinct From domains take 0.24 s (16 s at 1 MB,
    over 2 minutes at this size). A guard against that regression, not a speed
    measurement: the bound is about 50 times what it takes now."""
    raw = b"From: " + b",".join(b"a@d%d.example" % i for i in range(200_000)) + b"\r\n\r\nx"
    started = time.monotonic()
    domains = author_domains(Message(raw))
    assert time.monotonic() - started < 60
    assert len(domains) == 200_000


def test_a_from_nested_deeply_has_its_author_domain(resolver) -> None:
    """The stdlib's address parser recursed once per comment level: thousands of
    "(" raised RecursionError (first a temperror with a traceback, then a
    permerror). Comments nest and mean nothing (RFC 5322 §3.2.2), so the
    author is a@example.com, as the loop and names checks see it."""
    raw = b"From: " + b"(" * 5000 + b"x" + b")" * 5000 + b" <a@example.com>\r\n\r\nx"
    assert author_domains(Message(raw)) == ["example.com"]
    [result] = DmarcCheck(dmarc.Config()).run(make_ctx(resolver, message=raw))
    assert result.outcome is Outcome.NONE
    assert dict(result.props)["header.from"] == "example.com"


