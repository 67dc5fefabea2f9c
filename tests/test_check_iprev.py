"""iprev (RFC 8601 §3; docs/rules.md §1), through the DNS test server."""

from __future__ import annotations

import ipaddress

import pytest

from helpers import domain_tools, make_ctx
from trustmilter.checks import iprev
from trustmilter.checks.iprev import IprevCheck, generic_reason, ip_forms, is_host_name
from trustmilter.lookup.answer import reverse_name
from trustmilter.results import Outcome

V6 = "2001:db8::25"
ZONE = f"""
; docs/rules.md §1: "4.3.2.1.in-addr.arpa -> mail.domain.com"
4.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
mail.example.com.         300 IN A   192.0.2.4
example.com.              300 IN MX  10 mail.example.com.
; docs/rules.md §1 bad example: "4-3-2-1-cable-subscribers.isp.com"
5.2.0.192.in-addr.arpa.   300 IN PTR 4-3-2-1-cable-subscribers.isp.example.net.
4-3-2-1-cable-subscribers.isp.example.net. 300 IN A 192.0.2.5
6.2.0.192.in-addr.arpa.   300 IN PTR host-192-0-2-6.example.net.
host-192-0-2-6.example.net. 300 IN A 192.0.2.6
; no PTR at all (NXDOMAIN) for .10; NODATA for .11
$NODATA 11.2.0.192.in-addr.arpa. PTR
11.2.0.192.in-addr.arpa.  300 IN TXT "not a PTR"
12.2.0.192.in-addr.arpa.  300 IN PTR other.example.com.
other.example.com.        300 IN A   192.0.2.99
13.2.0.192.in-addr.arpa.  300 IN PTR gone.example.com.
$NXDOMAIN gone.example.com.
$TIMEOUT  14.2.0.192.in-addr.arpa. PTR
$SERVFAIL 15.2.0.192.in-addr.arpa. PTR
16.2.0.192.in-addr.arpa.  300 IN PTR slow.example.com.
$TIMEOUT  slow.example.com. A
17.2.0.192.in-addr.arpa.  300 IN PTR slow.example.com.
17.2.0.192.in-addr.arpa.  300 IN PTR ok17.example.com.
ok17.example.com.         300 IN A   192.0.2.17
18.2.0.192.in-addr.arpa.  300 IN PTR localhost.
18.2.0.192.in-addr.arpa.  300 IN PTR -bad-.example.com.
19.2.0.192.in-addr.arpa.  300 IN PTR a19.example.org.
19.2.0.192.in-addr.arpa.  300 IN PTR b19.example.org.
19.2.0.192.in-addr.arpa.  300 IN PTR c19.example.org.
a19.example.org.          300 IN A   192.0.2.99
b19.example.org.          300 IN A   192.0.2.19
c19.example.org.          300 IN A   192.0.2.19
20.2.0.192.in-addr.arpa.  300 IN CNAME 20.16-31.2.0.192.in-addr.arpa.
20.16-31.2.0.192.in-addr.arpa. 300 IN PTR classless.example.com.
classless.example.com.    300 IN A   192.0.2.20
{reverse_name(ipaddress.ip_address(V6))}. 300 IN PTR v6.example.com.
v6.example.com.           300 IN AAAA {V6}
v6.example.com.           300 IN A   192.0.2.25
"""


def run(resolver, ip, mail_from="a@example.com", helo=None, config=None):
    """Run the check and return its single result."""
    ctx = make_ctx(resolver, ip=ip, helo=helo, mail_from=mail_from)
    [result] = IprevCheck(config or iprev.Config()).run(ctx)
    assert result.check == "iprev" and result.method == "iprev"
    assert result.prop("policy.iprev") == ip
    return result


def names(result):
    return [f.name for f in result.findings]


def test_seed_good_example_passes(dns_server, resolver):
    """docs/rules.md §1 good example: PTR mail.example.com resolves back to the IP."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.4")
    assert result.outcome is Outcome.PASS
    assert result.reason == "mail.example.com"
    assert result.findings == ()
    assert iprev.client_name(result) == "mail.example.com"


def test_seed_missing_ptr_nxdomain(dns_server, resolver):
    """docs/rules.md §1 "Missing: NXDOMAIN"; RFC 8601 §3: no PTR is a fail."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.10")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["iprev.ptr_missing"]


def test_missing_ptr_nodata(dns_server, resolver):
    """RFC 8601 §3: a reverse name without PTR records fails like NXDOMAIN."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.11")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["iprev.ptr_missing"]


def test_seed_cable_subscriber_name_is_generic(dns_server, resolver):
    """docs/rules.md §1 bad example: consumer-line words in the PTR name."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.5", mail_from="a@example.net")
    assert result.outcome is Outcome.PASS  # forward-confirmed, but generic
    [generic] = result.findings
    assert generic.name == "iprev.ptr_generic"
    assert generic.detail.startswith("4-3-2-1-cable-subscribers.isp.example.net")


def test_embedded_ip_is_generic(dns_server, resolver):
    """docs/rules.md §1: IP address numbers in the PTR name mark a generic name."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.6", mail_from="a@example.net")
    assert names(result) == ["iprev.ptr_generic"]
    assert "192-0-2-6" in result.findings[0].detail


def test_forward_mismatch(dns_server, resolver):
    """RFC 8601 §3: a PTR name that does not resolve back to the IP fails."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.12")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["iprev.forward_mismatch"]
    assert "other.example.com" in result.reason


def test_forward_nxdomain_is_mismatch(dns_server, resolver):
    """RFC 8601 §3: a PTR name that does not exist cannot confirm the IP."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.13")
    assert result.outcome is Outcome.FAIL
    assert "iprev.forward_mismatch" in names(result)


@pytest.mark.parametrize("ip", ["192.0.2.14", "192.0.2.15"])
def test_ptr_timeout_or_servfail_is_temperror(dns_server, resolver, ip):
    """RFC 8601 §3: a transient DNS error on the PTR lookup is temperror."""
    dns_server.load(ZONE)
    result = run(resolver, ip)
    assert result.outcome is Outcome.TEMPERROR
    assert result.findings == ()


def test_forward_timeout_is_temperror(dns_server, resolver):
    """RFC 8601 §3: the forward lookup timed out and nothing passed: temperror."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.16")
    assert result.outcome is Outcome.TEMPERROR
    assert "timeout" in result.reason
    assert "iprev.forward_mismatch" not in names(result)


def test_one_confirmed_name_beats_a_timeout(dns_server, resolver):
    """RFC 8601 §3: pass when any PTR name resolves back, whatever the others did."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.17")
    assert result.outcome is Outcome.PASS
    assert result.reason == "ok17.example.com"


def test_all_names_malformed_is_permerror(dns_server, resolver):
    """RFC 8601 §3: PTR names that are no host names are a permanent error."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.18")
    assert result.outcome is Outcome.PERMERROR
    assert not any(q[1] == "A" for q in dns_server.queries)  # nothing looked up forward


def test_max_ptr_names_limits_forward_lookups(dns_server, resolver):
    """RFC 7208 §4.6.4-style cap: only the first max_ptr_names names are asked."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.19", mail_from="a@example.org",
                 config=iprev.Config(max_ptr_names=1))
    forward = {name for name, rdtype in dns_server.queries if rdtype == "A"}
    assert len(forward) == 1
    # Whichever name came first, only it was asked; 'a19' alone cannot pass.
    assert (result.outcome is Outcome.PASS) == (forward != {"a19.example.org"})


def test_several_ptr_names_looked_up_concurrently_pass(dns_server, resolver):
    """RFC 8601 §3: every PTR name (up to the cap) is tried; one match passes."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.19", mail_from="a@example.org")
    assert result.outcome is Outcome.PASS
    assert result.reason in ("b19.example.org", "c19.example.org")
    assert "iprev.ptr_not_sender_domain" not in names(result)


def test_classless_delegation_cname(dns_server, resolver):
    """RFC 2317: a CNAME in the reverse tree is followed to the PTR."""
    dns_server.load(ZONE)
    assert run(resolver, "192.0.2.20").outcome is Outcome.PASS


def test_ipv6_uses_nibbles_and_aaaa(dns_server, resolver):
    """RFC 8601 §3 for IPv6: ip6.arpa PTR, then AAAA (not A) of the name."""
    dns_server.load(ZONE)
    result = run(resolver, V6)
    assert result.outcome is Outcome.PASS
    assert ("v6.example.com", "AAAA") in dns_server.queries
    assert ("v6.example.com", "A") not in dns_server.queries


def test_ptr_not_sender_domain(dns_server, resolver):
    """docs/rules.md §1: the PTR name should belong to the sender's domain."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.4", mail_from="a@example.org")
    assert result.outcome is Outcome.PASS
    assert names(result) == ["iprev.ptr_not_sender_domain"]


def test_null_sender_uses_helo_domain(dns_server, resolver):
    """docs/rules.md §1 for bounces: the HELO name stands in for the sender domain."""
    dns_server.load(ZONE)
    same = run(resolver, "192.0.2.4", mail_from="", helo="relay.example.com")
    other = run(resolver, "192.0.2.4", mail_from="", helo="relay.example.org")
    unknown = run(resolver, "192.0.2.4", mail_from="", helo="[192.0.2.4]")
    assert names(same) == []
    assert names(other) == ["iprev.ptr_not_sender_domain"]
    assert names(unknown) == []




@pytest.mark.parametrize(
    ("name", "ip", "generic"),
    [
        ("4-3-2-1-cable-subscribers.isp.example.net", "192.0.2.4", True),  # words
        ("host-192-0-2-1.example.net", "192.0.2.1", True),
        ("1-2-0-192.example.net", "192.0.2.1", True),  # reversed
        ("192.0.2.1.static.example.net", "192.0.2.1", True),
        ("1.2.0.192.example.net", "192.0.2.1", True),
        ("ip192000002001.example.net", "192.0.2.1", True),  # zero-padded
        ("0xc0000201.example.net", "192.0.2.1", True),  # hex
        ("c0000201.example.net", "192.0.2.1", True),
        ("pool-a.example.net", "192.0.2.1", True),
        ("dsl123.example.net", "192.0.2.1", True),  # split on digits
        ("host-192-0-2-11.example.net", "192.0.2.1", False),  # another address
        ("mail.example.com", "192.0.2.1", False),
        ("mx.dsl.example", "192.0.2.1", False),  # the word is the registered domain
        ("homepage.example.com", "192.0.2.1", False),  # whole tokens only
        ("20010db8000000000000000000000025.example.net", V6, True),
        ("2001-db8--25.example.net", V6, True),
    ],
)
def test_generic_name_forms(name, ip, generic):
    """docs/rules.md §1: IP numbers in any common form, or consumer-line words."""
    words = frozenset(iprev.DEFAULT_GENERIC_WORDS)
    reason = generic_reason(name, ipaddress.ip_address(ip), words, domain_tools())
    assert bool(reason) is generic, reason


def test_ip_forms_cover_the_brief():
    """1-2-3-4, 1.2.3.4, reversed, 001002003004 and hex are all produced."""
    forms = ip_forms(ipaddress.ip_address("1.2.3.4"))
    for form in ("1-2-3-4", "1.2.3.4", "4-3-2-1", "4.3.2.1", "001002003004", "01020304"):
        assert form in forms


@pytest.mark.parametrize(
    ("name", "ok"),
    [("mail.example.com", True), ("localhost", False), ("-bad-.example.com", False),
     ("a..b", False), ("x" * 64 + ".example.com", False), ("under_score.example.com", True)],
)
def test_is_host_name(name, ok):
    """RFC 1123 §2.1 host names (underscores tolerated), multi-label only."""
    assert is_host_name(name) is ok
