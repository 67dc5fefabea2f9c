"""FairShareResolver: single flight, and a bounded share for a domain that does not answer.

Through the real network resolver and the test DNS server on 127.0.0.1
(no cache, so every question goes to the server): $TIMEOUT names are a
dead domain, ordinary records a healthy one.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

import pytest

from trustmilter.config.dns import DnsConfig
from trustmilter.domains import DomainTools
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.fairshare import NOT_ANSWERING, FairShareResolver, question_domain
from trustmilter.lookup.resolver import NetworkResolver

TIMEOUT, LIFETIME = 0.3, 0.8
SLOW_AFTER = 0.2
SHARE = 2

ZONE = """
example.com.            300 IN TXT  "v=spf1 -all"
example.com.            300 IN MX   10 mx.example.com.
mx.example.com.         300 IN A    192.0.2.25
$NODATA example.com. AAAA
$NXDOMAIN gone.example.com.
$SERVFAIL broken.example.net.
$TIMEOUT dead.example.org.
$TIMEOUT _dmarc.dead.example.org.
""" + "".join(f"$TIMEOUT a{i}.dead.example.org.\n" for i in range(40))

ORG = DomainTools().org_domain


@pytest.fixture
def network(dns_server) -> NetworkResolver:
    dns_server.load(ZONE)
    config = DnsConfig((dns_server.nameserver,), timeout=TIMEOUT, lifetime=LIFETIME, cache_size=0)
    return NetworkResolver(config)


def fair(inner, share: int = SHARE, slow_after: float = SLOW_AFTER, hold: float = 60.0):
    return FairShareResolver(inner, ORG, share=share, slow_after=slow_after, hold=hold)


def timed(resolver, name: str, rdtype: str = "TXT"):
    started = time.monotonic()
    answer = resolver.query(name, rdtype)
    return answer, time.monotonic() - started


# ---- which domain a question counts against (pure) -------------------------


@pytest.mark.parametrize(("name", "domain"), [
    ("dead.example.org", "example.org"),
    ("_dmarc.mail.dead.example.org.", "example.org"),
    ("s1._domainkey.X.Example.CO.UK", "example.co.uk"),
    ("2.0.0.127.zen.example.net", "example.net"),  # a DNSBL question: the list's domain
    ("10.2.0.192.in-addr.arpa", "2.0.192.in-addr.arpa"),  # the /24's reverse zone
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
     "0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),  # the /48's
    ("com", "com"),  # a bare suffix counts by itself
])
def test_question_domain(name: str, domain: str) -> None:
    assert question_domain(name, ORG) == domain


# ---- healthy DNS: the same answers, nothing limited -------------------------


@pytest.mark.parametrize(("name", "rdtype"), [
    ("example.com", "TXT"), ("example.com", "MX"), ("Example.COM.", "AAAA"),
    ("gone.example.com", "A"), ("broken.example.net", "A"), ("a..b.example", "A"),
])
def test_answers_are_the_inner_resolvers(network, name: str, rdtype: str) -> None:
    assert fair(network).query(name, rdtype) == network.query(name, rdtype)


def test_many_callers_of_a_healthy_domain_all_get_its_answer(network) -> None:
    # slow_after well above a healthy answer's time on a loaded machine: at
    # 0.2 s, a CI run scheduling 32 threads once took a healthy domain for a
    # slow one and turned a caller away.
    resolver = fair(network, share=1, slow_after=2.0)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: resolver.query("example.com", ("TXT", "MX")[i % 2]),
                                range(200)))
    assert {a.status for a in answers} == {DnsStatus.ANSWER}


def test_an_unknown_record_type_still_raises(network) -> None:
    with pytest.raises(ValueError):
        fair(network).query("example.com", "NOSUCHTYPE")


# ---- single flight ------------------------------------------------------------


def test_one_question_asked_by_many_is_sent_once(network, dns_server) -> None:
    network.query("dead.example.org", "TXT")
    packets_for_one = len(dns_server.queries)
    dns_server.reset()
    dns_server.load(ZONE)
    resolver = fair(network, share=100)  # nobody turned away: only coalescing counts
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: resolver.query("dead.example.org", "TXT"), range(20)))
    assert {(a.status, a.error) for a in answers} == {(DnsStatus.TEMPERROR, "timeout")}
    assert 0 < len(dns_server.queries) <= packets_for_one


# ---- a dead domain holds at most its share ----------------------------------


def test_a_slow_domain_keeps_only_its_share_of_callers_waiting(network) -> None:
    resolver = fair(network)
    with ThreadPoolExecutor(30) as pool:
        started = time.monotonic()
        dead = [pool.submit(timed, resolver, f"a{i}.dead.example.org") for i in range(30)]
        time.sleep(SLOW_AFTER + 0.25)
        still_waiting = [f for f in dead if not f.done()]
        healthy, healthy_took = timed(resolver, "example.com")
        wait(dead)
    assert len(still_waiting) == SHARE
    assert healthy.ok and healthy_took < 0.2
    turned_away = [f.result() for f in dead if f not in still_waiting]
    assert {(a.status, a.error) for a, _ in turned_away} == {(DnsStatus.TEMPERROR, NOT_ANSWERING)}
    # Turned away before the lifetime (a caller that waited for the network
    # takes all of it); the margin is for a loaded machine scheduling 30 threads.
    assert max(took for _, took in turned_away) < LIFETIME
    probes = [f.result()[0] for f in still_waiting]
    assert {(a.status, a.error) for a in probes} == {(DnsStatus.TEMPERROR, "timeout")}
    assert time.monotonic() - started < LIFETIME + 0.5


def test_callers_of_one_coalesced_question_beyond_the_share_are_released(network) -> None:
    resolver = fair(network)
    with ThreadPoolExecutor(10) as pool:
        dead: list[Future] = [pool.submit(timed, resolver, "dead.example.org") for _ in range(10)]
        wait(dead)
    errors = sorted(f.result()[0].error for f in dead)
    assert errors == [NOT_ANSWERING] * 8 + ["timeout"] * 2


def test_after_a_timeout_the_domain_is_held_and_extra_callers_answered_at_once(network) -> None:
    resolver = fair(network, share=1)
    first, _ = timed(resolver, "dead.example.org")
    assert first.error == "timeout"
    with ThreadPoolExecutor(2) as pool:
        probe = pool.submit(timed, resolver, "_dmarc.dead.example.org")
        time.sleep(0.05)  # the probe is waiting: the share is used
        extra, took = timed(resolver, "a1.dead.example.org", "MX")
        assert (extra.status, extra.error, extra.name, extra.rdtype) == (
            DnsStatus.TEMPERROR, NOT_ANSWERING, "a1.dead.example.org", "MX")
        assert took < 0.05  # held: no waiting for slow_after
        assert probe.result()[0].error == "timeout"  # the probe still asks the network


def test_an_answer_ends_the_hold_and_temporary_errors_are_not_kept(network, dns_server) -> None:
    resolver = fair(network, share=1)
    assert resolver.query("dead.example.org", "TXT").error == "timeout"
    dns_server.load(ZONE.replace("$TIMEOUT dead.example.org.", 'dead.example.org. IN TXT "back"'))
    assert resolver.query("dead.example.org", "TXT").ok  # the probe: asked again, not held
    with ThreadPoolExecutor(2) as pool:
        probe = pool.submit(resolver.query, "_dmarc.dead.example.org", "TXT")
        time.sleep(0.05)
        # Not held any more: a second caller waits like the first, with no refusal
        # before slow_after.
        second, took = timed(resolver, "a2.dead.example.org", "TXT")
        assert second.error == NOT_ANSWERING and took >= SLOW_AFTER / 2
        assert probe.result().error == "timeout"


def test_a_hold_ends_by_itself(network) -> None:
    resolver = fair(network, share=1, hold=0.1)
    assert resolver.query("dead.example.org", "TXT").error == "timeout"
    time.sleep(0.15)
    with ThreadPoolExecutor(2) as pool:
        probe = pool.submit(resolver.query, "_dmarc.dead.example.org", "TXT")
        time.sleep(0.05)
        second, took = timed(resolver, "a3.dead.example.org", "TXT")
        assert second.error == NOT_ANSWERING and took >= SLOW_AFTER / 2
        probe.result()
