"""DMARC under RFC 9989 (the default): the DNS Tree Walk, psd=, np=, t=, pct, via the DNS
test server; the pure parts (walk targets, Organizational Domain selection, tags) as
functions. Each test that RFC 7489 answers differently runs that standard too."""

from __future__ import annotations

import threading
import time

import pytest

from helpers import make_ctx
from keys import message
from trustmilter.checks import dmarc
from trustmilter.checks.dkim import DkimEvidence
from trustmilter.checks.dmarc import DmarcCheck, Policy
from trustmilter.checks.dmarc_record import (
    asks_for_testing,
    parse_record,
    requested_policy,
    usable_rfc9989,
)
from trustmilter.checks.dmarc_tree import (
    MAX_QUERIES,
    Found,
    Walk,
    organizational_domain,
    policy_record,
    walk_targets,
)
from trustmilter.checks.spf import SpfEvidence
from trustmilter.lookup import DnsConfig, NetworkResolver
from trustmilter.lookup.answer import DnsAnswer
from trustmilter.results import CheckResult, Outcome

ZONE = """
_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject; sp=quarantine"
_dmarc.example.net.        300 IN TXT "v=DMARC1; p=quarantine"
; a department declaring itself an Organizational Domain (RFC 9989 §5.1.8)
_dmarc.unit.bigcorp.example.com. 300 IN TXT "v=DMARC1; p=reject; psd=n"
; a record nine labels deep, which the walk's shortcut never asks (§5.1.8)
_dmarc.b.c.d.e.f.g.h.example.com. 300 IN TXT "v=DMARC1; p=none; psd=n"
; a public suffix domain (§5.2: a PSO publishes psd=y), with registrants below it
_dmarc.psd.test.           300 IN TXT "v=DMARC1; p=reject; psd=y"
_dmarc.giant.psd.test.     300 IN TXT "v=DMARC1; p=quarantine"
shop.psd.test.             300 IN A   192.0.2.20
; np= for nonexistent subdomains (§4.7)
_dmarc.np.example.org.     300 IN TXT "v=DMARC1; p=quarantine; sp=none; np=reject"
real.np.example.org.       300 IN A   192.0.2.10
$SERVFAIL flaky.np.example.org. A
_dmarc.nonp.example.org.   300 IN TXT "v=DMARC1; p=quarantine; sp=none"
; t= and legacy pct=
_dmarc.testing.example.org. 300 IN TXT "v=DMARC1; p=reject; t=y"
_dmarc.testq.example.org.  300 IN TXT "v=DMARC1; p=quarantine; t=y"
_dmarc.zero.example.org.   300 IN TXT "v=DMARC1; p=reject; pct=0"
_dmarc.zeron.example.org.  300 IN TXT "v=DMARC1; p=reject; pct=0; t=n"
_dmarc.half.example.org.   300 IN TXT "v=DMARC1; p=reject; pct=50"
; several records at one name are discarded and the walk goes on (§4.10 step 2)
_dmarc.two.example.net.    300 IN TXT "v=DMARC1; p=reject"
_dmarc.two.example.net.    300 IN TXT "v=DMARC1; p=none"
_dmarc.nop.example.org.    300 IN TXT "v=DMARC1; rua=mailto:r@example.org"
_dmarc.badnp.example.org.  300 IN TXT "v=DMARC1; p=reject; np=maybe"
$SERVFAIL _dmarc.temp.example.net. TXT
$SERVFAIL _dmarc.broken.example.com. TXT
"""

RFC7489 = dmarc.Config(standard="rfc7489")


def spf_result(outcome, domain):
    return CheckResult("spf.mailfrom", outcome, method="spf",
                       evidence=SpfEvidence(domain, "mailfrom"))


def dkim_result(outcome, d):
    return CheckResult("dkim", outcome, method="dkim", evidence=DkimEvidence(d, "sel"))


def run(resolver, from_, results=(), raw=None, config=None):
    """The single dmarc result for a message From `from_` with earlier `results`."""
    raw = raw if raw is not None else message(from_=from_)
    ctx = make_ctx(resolver, ip="192.0.2.4", helo="mail.example.com", mail_from="a@example.com",
                   message=raw, results=results)
    [result] = DmarcCheck(config or dmarc.Config()).run(ctx)
    assert (result.check, result.method) == ("dmarc", "dmarc")
    return result


def names(result):
    return {f.name for f in result.findings}


def detail(result, name):
    return next(f.detail for f in result.findings if f.name == name)


def asked(dns_server, rdtype="TXT"):
    return [str(n).rstrip(".").lower() for n, t in dns_server.queries if t == rdtype]


@pytest.fixture
def zone(dns_server):
    dns_server.load(ZONE)
    return dns_server


# ---- pure: the walk's names, the Organizational Domain, the tags ----

def test_walk_targets_follow_the_label_rules():
    """RFC 9989 §4.10 steps 3-7: one label at a time under eight labels; a longer
    name is asked itself, then from its last seven labels up: never over eight."""
    assert walk_targets("a.mail.Example.COM.") == [
        "a.mail.example.com", "mail.example.com", "example.com", "com"]
    assert walk_targets("com") == ["com"]
    # The RFC's own example (§4.10): 13 labels, eight queries.
    assert walk_targets("a.b.c.d.e.f.g.h.i.j.mail.example.com") == [
        "a.b.c.d.e.f.g.h.i.j.mail.example.com", "g.h.i.j.mail.example.com",
        "h.i.j.mail.example.com", "i.j.mail.example.com", "j.mail.example.com",
        "mail.example.com", "example.com", "com"]
    eight = ".".join("abcdefg") + ".example"
    assert walk_targets(eight)[1] == ".".join("bcdefg") + ".example"  # x = 8: seven remain
    assert len(walk_targets(eight)) == MAX_QUERIES
    for depth in (7, 8, 9, 40, 127):
        assert len(walk_targets(".".join(["x"] * depth))) == min(depth, MAX_QUERIES)
    assert walk_targets("") == [] and walk_targets("a..b") == ["a..b"]


def _walk(start, records, temperror=""):
    """A Walk over `start`'s names, with records {name: record text} (no DNS)."""
    found = []
    for name in walk_targets(start):
        record = parse_record(records[name]) if name in records else None
        found.append(Found(name, record))
        if record is not None and record.psd in ("y", "n"):
            break
    return Walk(start, tuple(found), temperror)


def test_organizational_domain_selection_rfc_examples():
    """RFC 9989 §4.10.2 and its examples, and Appendix B.4.3."""
    plain = "v=DMARC1; p=none"
    both = {"mail.example.com": plain, "example.com": plain}
    assert organizational_domain(_walk("a.mail.example.com", both)) == "example.com"
    own = {"mail.example.com": "v=DMARC1; psd=n", "example.com": plain}
    assert organizational_domain(_walk("a.mail.example.com", own)) == "mail.example.com"
    suffix = {"com": "v=DMARC1; p=reject; psd=y"}
    assert organizational_domain(_walk("a.mail.example.com", suffix)) == "example.com"
    assert organizational_domain(_walk("a.mail.example.com", {})) == "a.mail.example.com"
    bank = {"giant.bank.example": plain, "bank.example": "v=DMARC1; psd=y"}
    assert organizational_domain(_walk("giant.bank.example", bank)) == "giant.bank.example"
    assert organizational_domain(_walk("mail.giant.bank.example", bank)) == "giant.bank.example"
    assert organizational_domain(_walk("mail.mega.bank.example", bank)) == "mega.bank.example"
    # psd=y at the starting name itself: rule 2 skips it, so it is its own (rule 3).
    assert organizational_domain(_walk("bank.example", bank)) == "bank.example"
    # A failed query leaves it open unless a psd= record decided first.
    assert organizational_domain(_walk("a.mail.example.com", both, "SERVFAIL")) is None


def test_policy_record_preference():
    """RFC 9989 §4.10.1: the Author Domain's record, else the Organizational
    Domain's, else the PSD's; never the PSD's over an org domain that has one."""
    bank = {"giant.bank.example": "v=DMARC1; p=quarantine", "bank.example": "v=DMARC1; p=reject; psd=y"}
    found = policy_record(_walk("mail.giant.bank.example", bank))
    assert (found.domain, found.inherited, found.from_psd) == ("giant.bank.example", True, False)
    found = policy_record(_walk("mail.mega.bank.example", bank))
    assert (found.domain, found.inherited, found.from_psd) == ("bank.example", True, True)
    found = policy_record(_walk("giant.bank.example", bank))
    assert (found.domain, found.inherited) == ("giant.bank.example", False)
    assert policy_record(_walk("a.example", {})).record is None


def test_pure_rfc9989_tags():
    """RFC 9989 §4.7: np, psd, t with their defaults; bad values fall back (§4.8)."""
    record = parse_record("v=DMARC1; p=reject; np=Quarantine; psd=Y; t=y; pct=20")
    assert (record.np, record.psd, record.testing, record.pct) == (Policy.QUARANTINE, "y", True, 20)
    odd = parse_record("v=DMARC1; p=reject; psd=maybe; t=yes; np=bogus")
    assert (odd.psd, odd.testing, odd.np, odd.np_invalid) == ("u", None, None, True)
    # §4.7 "p": a record without p= reads as p=none; an invalid np= without rua= is unusable.
    assert usable_rfc9989(parse_record("v=DMARC1")).p is Policy.NONE
    assert usable_rfc9989(odd) is None
    with_rua = usable_rfc9989(parse_record("v=DMARC1; p=reject; np=x; rua=mailto:a@b.example"))
    assert (with_rua.p, with_rua.np, with_rua.sp) == (Policy.NONE, None, None)


def test_pure_testing_and_pct():
    """t=y asks for one level milder; pct=0 counts as t=y only without a t= tag
    (Appendix A.6); other pct values are not read at all (Appendix C.5.2)."""
    assert asks_for_testing(parse_record("v=DMARC1; p=reject; t=y"))
    assert asks_for_testing(parse_record("v=DMARC1; p=reject; pct=0"))
    assert not asks_for_testing(parse_record("v=DMARC1; p=reject; pct=0; t=n"))
    assert not asks_for_testing(parse_record("v=DMARC1; p=reject; pct=50"))
    assert not asks_for_testing(parse_record("v=DMARC1; p=reject"))


def test_pure_requested_policy():
    """RFC 9989 §4.10.1 with §4.7 "np": p= for the domain itself, sp= for an
    existing subdomain, np= (else sp=, else p=) for a nonexistent one."""
    record = parse_record("v=DMARC1; p=reject; sp=quarantine; np=none")
    assert requested_policy(record, False, None) is Policy.REJECT
    assert requested_policy(record, True, True) is Policy.QUARANTINE
    assert requested_policy(record, True, False) is Policy.NONE
    assert requested_policy(record, True, None) is None  # it depends, and the DNS did not say
    no_np = parse_record("v=DMARC1; p=reject; sp=quarantine")
    assert requested_policy(no_np, True, False) is Policy.QUARANTINE
    assert requested_policy(no_np, True, None) is Policy.QUARANTINE
    assert requested_policy(parse_record("v=DMARC1; p=reject"), True, False) is Policy.REJECT


# ---- through the DNS test server ----

def test_tree_walk_finds_the_org_domain_several_labels_up(zone, resolver):
    """RFC 9989 §4.10.1: no record at the Author Domain or its parents but
    example.net: that is the Organizational Domain and its record applies,
    with p= as the subdomain policy (no sp=). The same walk aligns a DKIM
    pass from another subdomain (§4.10.2)."""
    author = "l1.l2.l3.l4.example.net"
    result = run(resolver, f"a@{author}")
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.quarantine", "dmarc.org_domain_record"}
    assert detail(result, "dmarc.policy.quarantine") == "example.net"
    assert sorted(asked(zone)) == sorted(f"_dmarc.{n}" for n in walk_targets(author))
    zone.reset()
    zone.load(ZONE)
    passed = run(resolver, f"a@{author}", [dkim_result(Outcome.PASS, "x.l4.example.net")])
    assert passed.outcome is Outcome.PASS
    assert names(passed) == {"dmarc.dkim_aligned", "dmarc.org_domain_record"}
    # Each name asked once, though the two walks share four of them.
    assert sorted(asked(zone)) == sorted(set(asked(zone)))
    assert "_dmarc.x.l4.example.net" in asked(zone)


def test_psd_n_makes_a_department_its_own_org_domain(zone, resolver):
    """RFC 9989 §5.1.8: psd=n at unit.bigcorp.example.com stops the walk there,
    so its p=reject applies (as sp= would; it has none) and mail aligned only
    with example.com is not aligned. RFC 7489's public suffix list sees
    example.com as the organisational domain: sp=quarantine, and aligned."""
    results = [spf_result(Outcome.PASS, "bounce.example.com")]
    result = run(resolver, "a@x.unit.bigcorp.example.com", results)
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.reject", "dmarc.org_domain_record"}
    assert detail(result, "dmarc.org_domain_record") == "unit.bigcorp.example.com"
    old = run(resolver, "a@x.unit.bigcorp.example.com", results, config=RFC7489)
    assert old.outcome is Outcome.PASS


def test_psd_y_public_suffix_domain(zone, resolver):
    """RFC 9989 §4.10.2 rule 2 and Appendix B.4.3: with psd=y at psd.test, the
    Organizational Domain of mail.shop.psd.test is shop.psd.test. It has no
    record of its own, so the PSD's applies (§4.10.1). SPF for a name under
    shop.psd.test aligns; DKIM for other.psd.test does not, where RFC 7489's
    list (an unknown TLD: psd.test is the org domain) called both aligned."""
    other = [dkim_result(Outcome.PASS, "other.psd.test")]
    result = run(resolver, "a@shop.psd.test", other)
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.reject", "dmarc.org_domain_record",
                             "dmarc.psd_record"}
    assert detail(result, "dmarc.psd_record") == "psd.test"
    assert run(resolver, "a@shop.psd.test", other, config=RFC7489).outcome is Outcome.PASS
    aligned_spf = [spf_result(Outcome.PASS, "bounces.mail.shop.psd.test")]
    assert run(resolver, "a@mail.shop.psd.test", aligned_spf).outcome is Outcome.PASS
    # A registrant with a record of its own is not covered by the PSD's (§4.10.1 note).
    giant = run(resolver, "a@news.giant.psd.test")
    assert names(giant) == {"dmarc.policy.quarantine", "dmarc.org_domain_record"}
    assert detail(giant, "dmarc.org_domain_record") == "giant.psd.test"


def test_np_for_a_nonexistent_subdomain(zone, resolver):
    """RFC 9989 §4.10.1/§4.7 "np": an inherited record gives np= when the
    Author Domain does not exist (NXDOMAIN, §3.2.13) and sp= when it does."""
    ghost = run(resolver, "a@ghost.np.example.org")
    assert ghost.outcome is Outcome.FAIL
    assert names(ghost) == {"dmarc.policy.reject", "dmarc.org_domain_record"}
    assert "np" in detail(ghost, "dmarc.policy.reject")
    assert ghost.prop("policy.dmarc") == "reject"
    real = run(resolver, "a@real.np.example.org")
    assert names(real) == {"dmarc.policy.none", "dmarc.org_domain_record"}
    # Existence unknown while np= and sp= disagree: neither pass nor fail (§5.3.6).
    assert run(resolver, "a@flaky.np.example.org").outcome is Outcome.TEMPERROR
    # RFC 7489 never sees this record: its organisational domain (public
    # suffix list) is example.org, which has none.
    assert run(resolver, "a@ghost.np.example.org", config=RFC7489).outcome is Outcome.NONE


def test_existence_is_asked_only_when_np_matters(zone, resolver):
    """Without np= (or with np= equal to sp=) the Author Domain's existence
    changes nothing, so it is not looked up; an aligned pass needs no policy."""
    assert run(resolver, "a@ghost.nonp.example.org").prop("policy.dmarc") == "none"
    assert run(resolver, "a@ghost.np.example.org",
               [spf_result(Outcome.PASS, "np.example.org")]).outcome is Outcome.PASS
    assert asked(zone, "A") == []


def test_t_y_applies_the_policy_one_level_milder(zone, resolver):
    """RFC 9989 §4.7 "t": t=y asks the receiver not to apply the policy but one
    level below: reject becomes quarantine, quarantine becomes none."""
    result = run(resolver, "a@testing.example.org")
    assert result.outcome is Outcome.FAIL
    assert names(result) == {"dmarc.policy.quarantine", "dmarc.testing"}
    assert detail(result, "dmarc.testing") == "t=y"
    assert run(resolver, "a@testq.example.org").prop("policy.dmarc") == "none"
    # RFC 7489 has no t=: the policy as published.
    assert run(resolver, "a@testing.example.org", config=RFC7489).prop("policy.dmarc") == "reject"


def test_pct_is_read_only_as_rfc9989_says(zone, resolver):
    """RFC 9989 removed pct (Appendix C.5.2): pct=0 without t= counts as t=y
    (Appendix A.6); pct=0 with t=n, and pct=50, apply the policy in full,
    the same for every message (no sampling, no dmarc.pct_sampled_out)."""
    zero = run(resolver, "a@zero.example.org")
    assert names(zero) == {"dmarc.policy.quarantine", "dmarc.testing"}
    assert "pct=0" in detail(zero, "dmarc.testing")
    assert run(resolver, "a@zeron.example.org").prop("policy.dmarc") == "reject"
    for n in range(12):
        raw = message(from_="a@half.example.org", message_id=f"<{n}@example.org>")
        result = run(resolver, "", raw=raw)
        assert names(result) == {"dmarc.policy.reject"}


def test_query_limit_with_a_deep_name(zone, resolver):
    """RFC 9989 §4.10: a 40-label Author Domain costs eight queries, not 40;
    the labels in between are skipped, so a record nine labels deep (at
    b.c.d.e.f.g.h.example.com, psd=n) is never seen (§5.1.8) and example.com's
    sp= applies."""
    deep = ".".join(f"x{i}" for i in range(30)) + ".a.b.c.d.e.f.g.h.example.com"
    result = run(resolver, f"a@{deep}")
    assert len(asked(zone)) == MAX_QUERIES
    assert "_dmarc.b.c.d.e.f.g.h.example.com" not in asked(zone)
    assert names(result) == {"dmarc.policy.quarantine", "dmarc.org_domain_record"}
    assert detail(result, "dmarc.org_domain_record") == "example.com"
    # §5.1.8: the fix the RFC gives is a record at the Author Domain itself,
    # which is always asked first: found however deep.
    assert run(resolver, "a@b.c.d.e.f.g.h.example.com").prop("policy.dmarc") == "none"


def test_several_records_are_discarded_and_the_walk_goes_on(zone, resolver):
    """RFC 9989 §4.10 step 2 (unlike RFC 7489 §6.6.3 step 5, which stopped):
    two records at two.example.net are discarded; example.net's applies."""
    result = run(resolver, "a@two.example.net")
    assert names(result) == {"dmarc.policy.quarantine", "dmarc.org_domain_record"}
    assert run(resolver, "a@two.example.net", config=RFC7489).outcome is Outcome.NONE


def test_missing_p_reads_as_none_and_bad_np_is_permerror(zone, resolver):
    """RFC 9989 §4.7 "p": no p= is p=none (RFC 7489: permerror without a
    valid rua=, p=none with one); an invalid np= without rua= stops DMARC (§4.10.1)."""
    assert run(resolver, "a@nop.example.org").prop("policy.dmarc") == "none"
    assert run(resolver, "a@badnp.example.org").outcome is Outcome.PERMERROR
    assert run(resolver, "a@badnp.example.org", config=RFC7489).prop("policy.dmarc") == "reject"


def test_walk_temperror(zone, resolver):
    """RFC 9989 §5.3.6: a query the verdict needs that fails transiently gives
    neither pass nor fail. An alignment that other passes decide does not wait on it."""
    assert run(resolver, "a@temp.example.net").outcome is Outcome.TEMPERROR
    broken = [dkim_result(Outcome.PASS, "broken.example.com")]
    assert run(resolver, "a@example.com", broken).outcome is Outcome.TEMPERROR
    decided = [*broken, spf_result(Outcome.PASS, "example.com")]
    assert run(resolver, "a@example.com", decided).outcome is Outcome.PASS


def test_ordinary_mail_asks_one_name(zone, resolver):
    """§4.10.2 note: when From, SPF and DKIM domains are one name with its own
    record, no walk is needed: one query, as under RFC 7489."""
    same = [spf_result(Outcome.PASS, "example.com"), dkim_result(Outcome.PASS, "example.com")]
    assert run(resolver, "a@example.com", same).outcome is Outcome.PASS
    assert asked(zone) == ["_dmarc.example.com"]
    # No record applies: the senders' domains are not walked.
    zone.reset()
    zone.load(ZONE)
    none = [spf_result(Outcome.PASS, "mail.example.net")]
    assert run(resolver, "a@nothing.example.org", none).outcome is Outcome.NONE
    assert set(asked(zone)) == {"_dmarc.nothing.example.org", "_dmarc.example.org", "_dmarc.org"}
    # A relaxed comparison of other names walks them all (§4.10.2, Appendix B.4.1).
    zone.reset()
    zone.load(ZONE)
    other = [spf_result(Outcome.PASS, "bounces.example.com")]
    assert run(resolver, "a@example.com", other).outcome is Outcome.PASS
    assert set(asked(zone)) == {"_dmarc.example.com", "_dmarc.com", "_dmarc.bounces.example.com"}


class _SlowCounting:
    """The project's resolver, each lookup delayed, counting lookups in flight."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay
        self.lock = threading.Lock()
        self.in_flight = self.most = self.calls = 0

    def query(self, name, rdtype) -> DnsAnswer:
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(self.delay)
            return self.inner.query(name, rdtype)
        finally:
            with self.lock:
                self.in_flight -= 1

    def answers_at_once(self, name, rdtype) -> bool:
        return self.inner.answers_at_once(name, rdtype)

    def query_cached(self, name, rdtype):
        return self.query(name, rdtype) if self.answers_at_once(name, rdtype) else None


def test_walk_queries_run_concurrently_and_share_the_cache(zone):
    """The names of one message's walks do not depend on each other: they are
    asked at once, through ctx.dns, whose cache serves the next message."""
    cached = NetworkResolver(DnsConfig((zone.nameserver,), timeout=0.5, lifetime=1.0,
                                       cache_size=1000))
    slow = _SlowCounting(cached, 0.3)
    author = "a.b.c.d.e.f.example.net"  # seven labels: seven queries, plus the DKIM domain's
    results = [dkim_result(Outcome.PASS, "s.t.example.net")]
    started = time.monotonic()
    assert run(slow, f"x@{author}", results).outcome is Outcome.PASS
    elapsed = time.monotonic() - started
    assert slow.most >= 4
    assert elapsed < 8 * 0.3  # one after the other would take about 3 s
    served = len(zone.queries)
    assert run(cached, f"x@{author}", results).outcome is Outcome.PASS
    assert len(zone.queries) == served  # every answer came from the shared cache
