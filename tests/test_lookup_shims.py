"""pyspf and dkimpy asking their questions through our Resolver (and the test server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import dkim
import dns.name
import pytest
import spf

from keys import rsa_key
from trustmilter.compat.pyspf.dns import spf_dns_lookup, spf_resolver
from trustmilter.lookup import DnsStatus, NetworkResolver
from trustmilter.lookup.answer import DnsAnswer
from trustmilter.lookup.fixture import Fixture, FixtureResolver
from trustmilter.lookup.shims import DkimDns
from trustmilter.testing.dnsserver import DnsTestServer

SPF_ZONE = """\
example.com.       IN TXT "v=spf1 a:mail.example.com mx " "include:inc.example.net -all"
example.com.       IN MX  10 mx.example.com.
mail.example.com.  IN A   192.0.2.1
mx.example.com.    IN A   192.0.2.2
inc.example.net.   IN TXT "v=spf1 ip6:2001:db8::/32 -all"
ptr.example.org.   IN TXT "v=spf1 ptr -all"
3.2.0.192.in-addr.arpa. IN PTR host.ptr.example.org.
host.ptr.example.org.   IN A   192.0.2.3
slow.example.org.  IN MX  10 mx.example.com.
$TIMEOUT slow.example.org. TXT
"""


@pytest.fixture(autouse=True, scope="module")
def _hook() -> Iterator[None]:
    """pyspf's DNSLookup is a process global: install ours, put pyspf's back after."""
    original = spf.DNSLookup
    spf.DNSLookup = spf_dns_lookup
    yield
    spf.DNSLookup = original


@pytest.fixture
def spf_zone(dns_server: DnsTestServer) -> DnsTestServer:
    dns_server.load(SPF_ZONE)
    return dns_server


@pytest.mark.parametrize(
    ("ip", "sender", "result"),
    [
        ("192.0.2.1", "a@example.com", "pass"),  # a:
        ("192.0.2.2", "a@example.com", "pass"),  # mx: (MX value shape)
        ("2001:db8::25", "a@example.com", "pass"),  # include: ip6:
        ("198.51.100.1", "a@example.com", "fail"),
        ("192.0.2.3", "a@ptr.example.org", "pass"),  # ptr (PTR value shape)
        ("192.0.2.4", "a@ptr.example.org", "fail"),
        ("192.0.2.1", "a@nowhere.example.net", "none"),  # NXDOMAIN
        ("192.0.2.1", "a@slow.example.org", "temperror"),  # $TIMEOUT
    ],
)
def test_pyspf_through_the_hook(
    spf_zone: DnsTestServer, resolver: NetworkResolver, ip: str, sender: str, result: str
) -> None:
    with spf_resolver(resolver):
        outcome, _ = spf.check2(i=ip, s=sender, h="mail.example.com", querytime=0)
    assert outcome == result
    assert spf_zone.queries  # pyspf really asked the test server


def test_pyspf_without_a_bound_resolver_is_temperror(spf_zone: DnsTestServer) -> None:
    outcome, _ = spf.check2(i="192.0.2.1", s="a@example.com", h="mail.example.com")
    assert outcome == "temperror"
    assert spf_zone.queries == []  # and pyspf did not look anything up itself


def test_binding_is_per_thread(spf_zone: DnsTestServer, resolver: NetworkResolver) -> None:
    seen: list[str] = []

    def other_thread() -> None:
        seen.append(spf.check2(i="192.0.2.1", s="a@example.com", h="x.example.com")[0])

    with spf_resolver(resolver):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert spf.check2(i="192.0.2.1", s="a@example.com", h="x.example.com")[0] == "pass"
    assert seen == ["temperror"]


def test_lookup_values_match_pyspf_shapes() -> None:
    fixture = Fixture.parse(SPF_ZONE + "mail.example.com. IN AAAA 2001:db8::1\n")
    with spf_resolver(FixtureResolver(fixture)):
        assert spf_dns_lookup("mail.example.com", "A", True, 20) == [
            (("mail.example.com", "A"), "192.0.2.1")
        ]
        assert spf_dns_lookup("mail.example.com", "AAAA") == [
            (("mail.example.com", "AAAA"), "2001:db8::1")
        ]
        assert spf_dns_lookup("example.com", "MX") == [
            (("example.com", "MX"), (10, dns.name.from_text("mx.example.com.")))
        ]
        assert spf_dns_lookup("3.2.0.192.in-addr.arpa", "PTR") == [
            (("3.2.0.192.in-addr.arpa", "PTR"), "host.ptr.example.org")
        ]
        strings = (b"v=spf1 a:mail.example.com mx ", b"include:inc.example.net -all")
        assert spf_dns_lookup("example.com", "TXT") == [(("example.com", "TXT"), strings)]
        assert spf_dns_lookup("nowhere.example.net", "TXT") == []
        assert spf_dns_lookup("example.com", "AAAA") == []
        with pytest.raises(spf.TempError, match="DNS timeout"):
            spf_dns_lookup("slow.example.org", "TXT")


# ---- dkimpy --------------------------------------------------------------

KEY_ZONE = """\
sel._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; " "p=MIIB"
two._domainkey.example.com. IN TXT "first"
two._domainkey.example.com. IN TXT "second"
$TIMEOUT slow._domainkey.example.com. TXT
"""


def test_dkim_dns_answers_and_records(dns_server: DnsTestServer, resolver: NetworkResolver) -> None:
    dns_server.load(KEY_ZONE)
    dnsfunc = DkimDns(resolver)
    assert dnsfunc(b"sel._domainkey.example.com.") == b"v=DKIM1; k=rsa; p=MIIB"
    assert dnsfunc(b"two._domainkey.example.com.", timeout=5) in (b"first", b"second")
    assert dnsfunc("none._domainkey.example.com.") is None
    assert dnsfunc(b"\xff._domainkey.example.com.") is None
    assert not dnsfunc.temperror
    assert dnsfunc(b"slow._domainkey.example.com.") is None
    assert dnsfunc.temperror
    assert dnsfunc.statuses == {
        "sel._domainkey.example.com": DnsStatus.ANSWER,
        "two._domainkey.example.com": DnsStatus.ANSWER,
        "none._domainkey.example.com": DnsStatus.NXDOMAIN,
        "slow._domainkey.example.com": DnsStatus.TEMPERROR,
    }


def test_dkim_verify_end_to_end(dns_server: DnsTestServer, resolver: NetworkResolver) -> None:
    key = rsa_key(2048)
    pem = key.private
    record = f"v=DKIM1; k=rsa; p={key.public}"
    strings = " ".join(f'"{record[i:i + 200]}"' for i in range(0, len(record), 200))
    dns_server.load(f"k1._domainkey.example.com. IN TXT {strings}\n")
    message = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
    signature = dkim.sign(message, b"k1", b"example.com", pem, include_headers=[b"from", b"to"])
    dnsfunc = DkimDns(resolver)
    assert dkim.verify(signature + message, dnsfunc=dnsfunc)
    assert not dkim.verify(signature + message.replace(b"Hello", b"Howdy"), dnsfunc=dnsfunc)
    assert not dnsfunc.temperror
    assert ("k1._domainkey.example.com", "TXT") in dns_server.queries


def test_dkim_dns_over_a_stub_resolver() -> None:
    class Stub:
        def query(self, name: str, rdtype: str) -> DnsAnswer:
            return DnsAnswer(name.rstrip("."), rdtype, DnsStatus.TEMPERROR, error="SERVFAIL")

    dnsfunc = DkimDns(Stub())
    assert dnsfunc(b"x._domainkey.example.com.") is None
    assert dnsfunc.temperror
