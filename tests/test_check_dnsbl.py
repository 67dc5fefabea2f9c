"""DNS blocklists for the client IP (RFC 5782; docs/rules.md §1), through the DNS test server."""

from __future__ import annotations

import time

import pytest

from helpers import make_ctx
from trustmilter.checks import dnsbl
from trustmilter.checks.blocklist import BlocklistConfig
from trustmilter.checks.dnsbl import DnsblCheck
from trustmilter.results import Outcome

ZEN = BlocklistConfig("zen.example.org", weight=3.0, name="zen",
                      codes={"127.0.0.2": "spam source", "127.0.0.4": "exploited host"})
BL = BlocklistConfig("bl.example.net.", weight=1.5)
SLOW = BlocklistConfig("slow.example.com")

ZONE = """
; RFC 5782 §5: every list holds 127.0.0.2 for testing; here 192.0.2.2 is listed
2.2.0.192.zen.example.org.   300 IN A 127.0.0.2
2.2.0.192.zen.example.org.   300 IN A 127.0.0.4
2.2.0.192.bl.example.net.    300 IN A 127.0.0.10
3.2.0.192.zen.example.org.   300 IN A 127.255.255.254
4.2.0.192.zen.example.org.   300 IN A 192.0.2.99
5.2.0.192.zen.example.org.   300 IN A 127.0.0.1
6.2.0.192.bl.example.net.    300 IN A 127.0.0.2
; RFC 5782 §2.4: IPv6 entries by reversed nibbles
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example.org. 300 IN A 127.0.0.3
$TIMEOUT 7.2.0.192.slow.example.com.
$TIMEOUT 2.2.0.192.slow.example.com.
"""


def run(resolver, ip, lists=(ZEN, BL), config=None):
    """Run the check and return its single result."""
    ctx = make_ctx(resolver, ip=ip)
    [result] = DnsblCheck(config or dnsbl.Config(lists=tuple(lists))).run(ctx)
    assert result.check == "dnsbl"
    return result


def findings(result, name):
    return [f for f in result.findings if f.name == name]


def test_listed_on_two_lists(dns_server, resolver):
    """RFC 5782 §2.1: an A record in 127/8 is a listing; each list adds its weight."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.2")
    assert result.outcome is Outcome.FAIL
    listed = findings(result, "dnsbl.listed")
    assert [(f.detail, f.score) for f in listed] == [
        ("zen: 127.0.0.2 spam source, 127.0.0.4 exploited host", 3.0),
        ("bl.example.net: 127.0.0.10 listed", 1.5),
    ]
    assert "zen" in result.reason and "bl.example.net" in result.reason


def test_query_names_ipv4(dns_server, resolver):
    """RFC 5782 §2.1: reversed octets under the zone, an A query per list."""
    dns_server.load(ZONE)
    run(resolver, "192.0.2.7")
    assert sorted(dns_server.queries) == [
        ("7.2.0.192.bl.example.net", "A"), ("7.2.0.192.zen.example.org", "A")
    ]


def test_not_listed_passes(dns_server, resolver):
    """RFC 5782 §2.1: NXDOMAIN means not listed."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.7")
    assert result.outcome is Outcome.PASS
    assert result.findings == ()


def test_error_code_is_ignored(dns_server, resolver):
    """127.255.255.254 (query refused) is reported with score 0, never a listing."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.3")
    assert result.outcome is Outcome.PASS
    [error] = result.findings
    assert error.name == "dnsbl.error_code" and error.score == 0
    assert error.detail.startswith("zen: 127.255.255.254")


@pytest.mark.parametrize("ip", ["192.0.2.4", "192.0.2.5"])
def test_impossible_answers_are_errors(dns_server, resolver, ip):
    """RFC 5782 §2.1/§5: answers outside 127/8, or 127.0.0.1, are not listings."""
    dns_server.load(ZONE)
    result = run(resolver, ip)
    assert result.outcome is Outcome.PASS
    assert [f.name for f in result.findings] == ["dnsbl.error_code"]


def test_ipv6_query_name(dns_server, resolver):
    """RFC 5782 §2.4: IPv6 addresses are asked as 32 reversed nibbles."""
    dns_server.load(ZONE)
    result = run(resolver, "2001:db8::1", lists=(ZEN,))
    assert result.outcome is Outcome.FAIL
    assert dns_server.queries == [
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example.org", "A")
    ]
    assert findings(result, "dnsbl.listed")[0].detail == "zen: 127.0.0.3 listed"


def test_ipv4_mapped_client_asked_as_ipv4(dns_server, resolver):
    """An IPv4 client seen as ::ffff:a.b.c.d is listed under its IPv4 name."""
    dns_server.load(ZONE)
    assert run(resolver, "::ffff:192.0.2.6", lists=(BL,)).outcome is Outcome.FAIL


def test_timeout_is_temperror(dns_server, resolver):
    """A list that did not answer leaves the result undecided when nothing listed."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.7", lists=(ZEN, SLOW))
    assert result.outcome is Outcome.TEMPERROR
    assert "slow.example.com" in result.reason


def test_listing_beats_timeout(dns_server, resolver):
    """One listing decides, whatever another list failed to say."""
    dns_server.load(ZONE)
    assert run(resolver, "192.0.2.2", lists=(SLOW, ZEN)).outcome is Outcome.FAIL


def test_lists_are_asked_concurrently(dns_server, resolver):
    """Three lists that time out cost one timeout, not three (lifetime 1 s each)."""
    slow = [BlocklistConfig(f"l{i}.slow.example.com") for i in range(3)]
    dns_server.load(
        ZONE + "".join(f"$TIMEOUT 7.2.0.192.l{i}.slow.example.com.\n" for i in range(3))
    )
    start = time.monotonic()
    result = run(resolver, "192.0.2.7", lists=slow)
    assert result.outcome is Outcome.TEMPERROR
    assert time.monotonic() - start < 2.2


def test_no_lists_is_none(dns_server, resolver):
    """Nothing configured, nothing asked."""
    dns_server.load(ZONE)
    assert run(resolver, "192.0.2.2", lists=()).outcome is Outcome.NONE
    assert dns_server.queries == []


@pytest.mark.parametrize("ip", ["127.0.0.2", "10.1.2.3", "192.168.1.1", "::1", "fd00::1"])
def test_private_clients_skipped(dns_server, resolver, ip):
    """Loopback and private clients are not on public lists and must not leak to them."""
    dns_server.load(ZONE)
    assert run(resolver, ip).outcome is Outcome.SKIPPED
    assert dns_server.queries == []


