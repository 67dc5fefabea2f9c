"""NetworkResolver against the real test DNS server: statuses, TCP, caching."""

from __future__ import annotations

import socket
import time

import dns.flags
import dns.message
import dns.query
import pytest

from trustmilter.lookup import DnsConfig, DnsStatus, NetworkResolver
from trustmilter.lookup.resolver import parse_nameserver
from trustmilter.testing.dnsserver import DnsTestServer

ZONE = """\
example.com.        300 IN TXT   "v=spf1 ip4:192.0.2.1 -all"
mail.example.com.   300 IN A     192.0.2.1
www.example.com.     60 IN CNAME mail.example.com.
1.2.0.192.in-addr.arpa. 300 IN PTR mail.example.com.
$NXDOMAIN  gone.example.com.
$NODATA    example.com. AAAA
$SERVFAIL  broken.example.net. TXT
$TIMEOUT   slow.example.net. TXT
"""

# 7 x 250 octets: bigger than the 1232-octet EDNS buffer, so only TCP carries it.
BIG = " ".join(f'"{chr(ord("a") + i) * 250}"' for i in range(7))
MEDIUM = " ".join(f'"{chr(ord("a") + i) * 200}"' for i in range(3))  # > 512, < 1232


def cached_resolver(server: DnsTestServer, **overrides: float) -> NetworkResolver:
    """A resolver with a cache, asking only the test server."""
    settings = {"timeout": 0.5, "lifetime": 1.0, **overrides}
    return NetworkResolver(DnsConfig((server.nameserver,), cache_size=100, **settings))


@pytest.mark.parametrize(
    ("name", "rdtype", "status", "error"),
    [
        ("example.com", "TXT", DnsStatus.ANSWER, ""),
        ("gone.example.com", "A", DnsStatus.NXDOMAIN, ""),
        ("absent.example.com", "MX", DnsStatus.NXDOMAIN, ""),
        ("example.com", "AAAA", DnsStatus.NODATA, ""),
        ("broken.example.net", "TXT", DnsStatus.TEMPERROR, "SERVFAIL"),
    ],
)
def test_each_status(
    dns_server: DnsTestServer,
    resolver: NetworkResolver,
    name: str,
    rdtype: str,
    status: DnsStatus,
    error: str,
) -> None:
    dns_server.load(ZONE)
    answer = resolver.query(name, rdtype)
    assert (answer.status, answer.error) == (status, error)
    assert dns_server.queries == [(name, rdtype)]


def test_timeout_is_temperror_within_the_lifetime(dns_server: DnsTestServer) -> None:
    dns_server.load(ZONE)
    fast = NetworkResolver(DnsConfig((dns_server.nameserver,), timeout=0.2, lifetime=0.4))
    started = time.monotonic()
    answer = fast.query("slow.example.net", "TXT")
    assert (answer.status, answer.error) == (DnsStatus.TEMPERROR, "timeout")
    assert time.monotonic() - started < 1.5


def test_no_server_listening_is_temperror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nobody = NetworkResolver(DnsConfig((f"127.0.0.1:{port}",), timeout=0.2, lifetime=0.4))
    assert nobody.query("example.com", "A").status is DnsStatus.TEMPERROR


def test_answer_name_is_normalised_and_records_typed(
    dns_server: DnsTestServer, resolver: NetworkResolver
) -> None:
    dns_server.load(ZONE)
    answer = resolver.query("MAIL.Example.Com.", "a")
    assert (answer.name, answer.rdtype, answer.ttl) == ("mail.example.com", "A", 300)
    assert answer.addresses() == ["192.0.2.1"]
    ptr = resolver.query("1.2.0.192.in-addr.arpa", "PTR")
    assert ptr.targets() == ["mail.example.com"]


def test_cname_chain_is_flattened(dns_server: DnsTestServer, resolver: NetworkResolver) -> None:
    dns_server.load(ZONE)
    answer = resolver.query("www.example.com", "A")
    assert answer.name == "www.example.com"
    assert answer.addresses() == ["192.0.2.1"]
    assert answer.ttl == 60  # the chain's smallest TTL
    assert resolver.query("www.example.com", "TXT").status is DnsStatus.NODATA


def test_invalid_names_are_nxdomain_without_a_query(
    dns_server: DnsTestServer, resolver: NetworkResolver
) -> None:
    for name in ("a..example.com", "x" * 64 + ".example.com", ".".join(["abcdefg"] * 40), "",
                 "helo.invalid", "mail.example.INVALID."):  # RFC 6761 §6.4
        answer = resolver.query(name, "A")
        assert (answer.status, answer.error) == (DnsStatus.NXDOMAIN, "invalid name")
    assert dns_server.queries == []


def test_unknown_record_type_is_a_programming_error(resolver: NetworkResolver) -> None:
    with pytest.raises(ValueError, match="unknown DNS record type"):
        resolver.query("example.com", "NOSUCHTYPE")
    with pytest.raises(ValueError, match="meta type"):
        resolver.query("example.com", "ANY")


def test_big_txt_comes_over_tcp(dns_server: DnsTestServer, resolver: NetworkResolver) -> None:
    dns_server.load(f"big.example.com. 300 IN TXT {BIG}\nmid.example.com. IN TXT {MEDIUM}\n")
    answer = resolver.query("big.example.com", "TXT")
    assert answer.txt_strings() == [b"".join(bytes([ord("a") + i]) * 250 for i in range(7))]
    assert dns_server.tcp_queries == [("big.example.com", "TXT")]
    # Between 512 and the EDNS buffer: UDP carries it, no TCP needed.
    assert len(resolver.query("mid.example.com", "TXT").txt_strings()[0]) == 600
    assert dns_server.tcp_queries == [("big.example.com", "TXT")]


def test_server_truncates_for_a_client_without_edns(dns_server: DnsTestServer) -> None:
    dns_server.load(f"mid.example.com. IN TXT {MEDIUM}\n")
    query = dns.message.make_query("mid.example.com", "TXT", use_edns=False)
    reply = dns.query.udp(query, "127.0.0.1", timeout=1, port=dns_server.port)
    assert reply.flags & dns.flags.TC
    assert not reply.answer


def test_negative_answers_are_cached(dns_server: DnsTestServer) -> None:
    dns_server.load(ZONE)
    cached = cached_resolver(dns_server)
    for _ in range(3):
        assert cached.query("gone.example.com", "A").status is DnsStatus.NXDOMAIN
        assert cached.query("example.com", "AAAA").status is DnsStatus.NODATA
    assert dns_server.queries == [("gone.example.com", "A"), ("example.com", "AAAA")]
    assert cached.query("gone.example.com", "A").ttl == 300  # SOA minimum


def test_positive_answers_are_cached_and_age(dns_server: DnsTestServer) -> None:
    dns_server.load(ZONE)
    cached = cached_resolver(dns_server)
    assert cached.query("mail.example.com", "A").ttl == 300
    time.sleep(1.1)
    again = cached.query("mail.example.com", "A")
    assert again.addresses() == ["192.0.2.1"]
    assert 297 <= again.ttl < 300
    assert dns_server.queries == [("mail.example.com", "A")]


def test_cache_honours_short_ttls(dns_server: DnsTestServer) -> None:
    dns_server.load(
        "example.com. 300 IN SOA ns.example.com. h.example.com. 1 3600 600 86400 1\n"
        "short.example.com. 1 IN A 192.0.2.5\n"
    )
    cached = cached_resolver(dns_server)
    for _ in range(2):
        assert cached.query("short.example.com", "A").ok
        assert cached.query("none.example.com", "A").status is DnsStatus.NXDOMAIN
    assert len(dns_server.queries) == 2
    time.sleep(1.2)
    assert cached.query("short.example.com", "A").ok
    assert cached.query("none.example.com", "A").status is DnsStatus.NXDOMAIN
    assert len(dns_server.queries) == 4


def test_remembered_answers_end_with_the_cache_entries_they_came_from(
    dns_server: DnsTestServer,
) -> None:
    """Typed answers are kept per asked (name, type) only while dnspython keeps its own:
    a NODATA, an NXDOMAIN asked under two types, and a CNAME target expire on time."""
    dns_server.load(
        "example.com. 300 IN SOA ns.example.com. h.example.com. 1 3600 600 86400 1\n"
        "example.com. 1 IN A 192.0.2.6\n"
        "alias.example.com. 300 IN CNAME short.example.com.\n"
        "short.example.com. 1 IN A 192.0.2.5\n"
    )
    cached = cached_resolver(dns_server)
    asked = [("example.com", "AAAA"), ("none.example.com", "A"), ("none.example.com", "MX"),
             ("alias.example.com", "A")]
    for _ in range(3):
        answers = [cached.query(*q) for q in asked]
        assert all(cached.answers_at_once(*q) for q in asked)
    assert [a.status for a in answers] == [
        DnsStatus.NODATA, DnsStatus.NXDOMAIN, DnsStatus.NXDOMAIN, DnsStatus.ANSWER]
    assert answers[3].ttl == 1 and answers[3].name == "alias.example.com"
    assert len(dns_server.queries) == 3  # the NXDOMAIN answers both types
    time.sleep(1.2)
    assert not any(cached.answers_at_once(*q) for q in asked)
    assert [cached.query(*q).status for q in asked] == [a.status for a in answers]
    assert len(dns_server.queries) == 6


def test_temporary_errors_are_not_cached(dns_server: DnsTestServer) -> None:
    dns_server.load(ZONE)
    cached = cached_resolver(dns_server)
    for _ in range(2):
        assert cached.query("broken.example.net", "TXT").status is DnsStatus.TEMPERROR
    assert dns_server.queries == [("broken.example.net", "TXT")] * 2
    dns_server.load("broken.example.net. 300 IN TXT \"fixed\"\n")
    assert cached.query("broken.example.net", "TXT").txt_strings() == [b"fixed"]


def test_queries_from_many_threads(dns_server: DnsTestServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    dns_server.load("".join(f"h{i}.example.com. IN A 192.0.2.{i}\n" for i in range(1, 41)))
    shared = cached_resolver(dns_server)
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda i: shared.query(f"h{i}.example.com", "A"), range(1, 41)))
    assert [a.addresses() for a in found] == [[f"192.0.2.{i}"] for i in range(1, 41)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        (" 192.0.2.53 ", ("192.0.2.53", 53)),
    ],
)
def test_nameserver_specs(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize(
    "spec", ["ns.example.com", "ns.example.com:53", "127.0.0.1:", "127.0.0.1:0",
             "127.0.0.1:70000", "[::1", "[::1]x", "[::1]:", ""],
)
def test_bad_nameserver_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="nameserver"):
        NetworkResolver(DnsConfig(nameservers=(spec,)))
