"""SPF (RFC 7208) for MAIL FROM and HELO, through the DNS test server."""

from __future__ import annotations

import pytest

from helpers import make_ctx
from trustmilter.checks import spf
from trustmilter.checks.spf import SpfHeloCheck, SpfMailFromCheck, spf_domain
from trustmilter.results import Outcome

ZONE = """
; docs/rules.md §3: "v=spf1 mx:domain.com ~all" and "v=spf1 ip4:1.2.3.4 ~all"
example.com.            300 IN TXT "v=spf1 mx:example.com ~all"
example.com.            300 IN MX  10 mail.example.com.
mail.example.com.       300 IN A   192.0.2.4
mail.example.com.       300 IN TXT "v=spf1 a -all"
example.net.            300 IN TXT "v=spf1 ip4:192.0.2.4 ~all"
fail.example.org.       300 IN TXT "v=spf1 ip4:192.0.2.4 -all"
neutral.example.org.    300 IN TXT "v=spf1 ?all"
nospf.example.org.      300 IN TXT "some-site-verification=abc"
nospf.example.org.      300 IN A   192.0.2.9
broken.example.org.     300 IN TXT "v=spf1 ip4:192.0.2.300 -all"
twice.example.org.      300 IN TXT "v=spf1 -all"
twice.example.org.      300 IN TXT "v=spf1 +all"
h1.example.org.         300 IN A   203.0.113.1
h2.example.org.         300 IN A   203.0.113.2
h3.example.org.         300 IN A   203.0.113.3
h4.example.org.         300 IN A   203.0.113.4
h5.example.org.         300 IN A   203.0.113.5
h6.example.org.         300 IN A   203.0.113.6
h7.example.org.         300 IN A   203.0.113.7
h8.example.org.         300 IN A   203.0.113.8
h9.example.org.         300 IN A   203.0.113.9
h10.example.org.        300 IN A   192.0.2.4
h11.example.org.        300 IN A   192.0.2.4
twovoid.example.org.    300 IN TXT "v=spf1 a:v1.example.org a:v2.example.org ip4:192.0.2.4 -all"
$NXDOMAIN gone.example.org.
$SERVFAIL servfail.example.net. TXT
$TIMEOUT  slow.example.net. TXT
"""
# RFC 7208 §4.6.4: eleven and ten DNS-querying terms; three void lookups.
ELEVEN = " ".join(f"a:h{n}.example.org" for n in range(1, 12))
TEN = " ".join(f"a:h{n}.example.org" for n in range(1, 11))
VOID = "a:v1.example.org a:v2.example.org a:v3.example.org"
ZONE += f"""
limit.example.org.      300 IN TXT "v=spf1 {ELEVEN} -all"
ten.example.org.        300 IN TXT "v=spf1 {TEN} -all"
void.example.org.       300 IN TXT "v=spf1 {VOID} ip4:192.0.2.4 -all"
"""


def mailfrom(resolver, sender, ip="192.0.2.4", helo="mail.example.com", config=None):
    """Run the MAIL FROM check and return its single result."""
    ctx = make_ctx(resolver, ip=ip, helo=helo, mail_from=sender)
    [result] = SpfMailFromCheck(config or spf.Config()).run(ctx)
    assert result.check == "spf.mailfrom"
    return result


def asked(dns_server):
    """The (name, type) pairs the test server was asked, normalised."""
    return {(str(n).rstrip(".").lower(), str(t).upper()) for n, t in dns_server.queries}


@pytest.fixture
def zone(dns_server):
    dns_server.load(ZONE)
    return dns_server


def test_seed_mx_record_passes_for_the_mx_address(zone, resolver):
    """docs/rules.md §3 "v=spf1 mx:domain.com ~all"; RFC 7208 §5.4 mx: the MX host's address passes."""
    result = mailfrom(resolver, "alice@example.com")
    assert result.outcome is Outcome.PASS
    assert result.method == "spf"
    assert result.prop("smtp.mailfrom") == "alice@example.com"
    assert result.evidence == spf.SpfEvidence("example.com", "mailfrom")
    assert spf.evaluated_domains([result], Outcome.PASS) == ["example.com"]
    # Only what the record needs was asked (A3: unexpected queries are visible).
    assert asked(zone) <= {("example.com", "TXT"), ("example.com", "MX"), ("mail.example.com", "A")}


def test_seed_mx_record_softfails_other_addresses(zone, resolver):
    """docs/rules.md §3 "~all"; RFC 7208 §8.5: softfail for an address the record does not list."""
    assert mailfrom(resolver, "alice@example.com", ip="198.51.100.7").outcome is Outcome.SOFTFAIL


def test_seed_ip4_record(zone, resolver):
    """docs/rules.md §3 "v=spf1 ip4:1.2.3.4 ~all" (as 192.0.2.4); RFC 7208 §5.6 ip4."""
    assert mailfrom(resolver, "bob@example.net").outcome is Outcome.PASS
    assert mailfrom(resolver, "bob@example.net", ip="203.0.113.50").outcome is Outcome.SOFTFAIL


def test_fail(zone, resolver):
    """RFC 7208 §8.4: "-all" gives fail; the explanation becomes the reason."""
    result = mailfrom(resolver, "x@fail.example.org", ip="198.51.100.7")
    assert result.outcome is Outcome.FAIL
    assert result.reason


def test_neutral(zone, resolver):
    """RFC 7208 §8.2: "?all" gives neutral."""
    assert mailfrom(resolver, "x@neutral.example.org").outcome is Outcome.NEUTRAL


def test_none_without_record_or_domain(zone, resolver):
    """RFC 7208 §4.5/§4.3: no SPF record, or NXDOMAIN, gives none."""
    assert mailfrom(resolver, "x@nospf.example.org").outcome is Outcome.NONE
    assert mailfrom(resolver, "x@gone.example.org").outcome is Outcome.NONE


def test_temperror_on_servfail_and_timeout(zone, resolver):
    """RFC 7208 §4.4/§2.6.6: a DNS error other than NXDOMAIN gives temperror."""
    assert mailfrom(resolver, "x@servfail.example.net").outcome is Outcome.TEMPERROR
    assert mailfrom(resolver, "x@slow.example.net").outcome is Outcome.TEMPERROR


def test_permerror_on_syntax_and_two_records(zone, resolver):
    """RFC 7208 §4.6 (syntax) and §4.5 (more than one record) give permerror."""
    assert mailfrom(resolver, "x@broken.example.org").outcome is Outcome.PERMERROR
    assert mailfrom(resolver, "x@twice.example.org").outcome is Outcome.PERMERROR


def test_ten_lookup_limit(zone, resolver):
    """RFC 7208 §4.6.4: the 11th DNS-querying mechanism is a permerror; 10 are allowed."""
    result = mailfrom(resolver, "x@limit.example.org", ip="198.51.100.7")
    assert result.outcome is Outcome.PERMERROR
    assert "lookup" in result.reason.lower()
    # h10 is the tenth term and matches: still within the limit.
    assert mailfrom(resolver, "x@ten.example.org").outcome is Outcome.PASS


def test_void_lookup_limit(zone, resolver):
    """RFC 7208 §4.6.4: more than two void lookups is a permerror; two are tolerated."""
    result = mailfrom(resolver, "x@void.example.org")
    assert result.outcome is Outcome.PERMERROR
    assert "void" in result.reason.lower()
    assert mailfrom(resolver, "x@twovoid.example.org").outcome is Outcome.PASS


def test_null_sender_uses_postmaster_at_helo(zone, resolver):
    """RFC 7208 §2.4: for MAIL FROM:<> the identity is postmaster@<HELO>."""
    result = mailfrom(resolver, "", helo="mail.example.com")
    assert result.outcome is Outcome.PASS  # mail.example.com: "v=spf1 a -all"
    assert result.prop("smtp.mailfrom") == "postmaster@mail.example.com"
    assert result.evidence == spf.SpfEvidence("mail.example.com", "mailfrom")
    other_ip = mailfrom(resolver, "", helo="mail.example.com", ip="198.51.100.7")
    assert other_ip.outcome is Outcome.FAIL


def test_null_sender_without_usable_helo_is_none(zone, resolver):
    """RFC 7208 §2.4 + §4.3: no HELO, or an address literal, leaves no domain to check."""
    assert mailfrom(resolver, "", helo=None).outcome is Outcome.NONE
    assert mailfrom(resolver, "", helo="[192.0.2.4]").outcome is Outcome.NONE
    assert not zone.queries


def test_helo_identity(zone, resolver):
    """RFC 7208 §2.3: the HELO name is checked on its own, reported as smtp.helo."""
    ctx = make_ctx(resolver, ip="192.0.2.4", helo="mail.example.com", mail_from="a@example.net")
    [result] = SpfHeloCheck(spf.Config()).run(ctx)
    assert (result.check, result.outcome) == ("spf.helo", Outcome.PASS)
    assert result.prop("smtp.helo") == "mail.example.com"
    assert result.evidence == spf.SpfEvidence("mail.example.com", "helo")
    ctx = make_ctx(resolver, ip="198.51.100.7", helo="mail.example.com")
    assert SpfHeloCheck(spf.Config()).run(ctx)[0].outcome is Outcome.FAIL


def test_helo_skips_and_none(zone, resolver):
    """docs/rules.md §2 "HELO 1.2.3.4" / "HELO localhost"; RFC 7208 §2.3, §4.3: nothing to ask DNS."""
    check = SpfHeloCheck(spf.Config())
    literal = check.run(make_ctx(resolver, ip="192.0.2.4", helo="192.0.2.4"))[0]
    assert literal.outcome is Outcome.SKIPPED
    missing = check.run(make_ctx(resolver, ip="192.0.2.4", helo=None))[0]
    assert missing.outcome is Outcome.SKIPPED
    localhost = check.run(make_ctx(resolver, ip="192.0.2.4", helo="localhost"))[0]
    assert localhost.outcome is Outcome.NONE
    assert not zone.queries
    off = SpfHeloCheck(spf.Config(check_helo=False))
    assert off.run(make_ctx(resolver, helo="mail.example.com"))[0].outcome is Outcome.SKIPPED




def test_ipv6_client(zone, resolver):
    """RFC 7208 §5.6: an IPv6 client does not match ip4 terms (softfail here)."""
    assert mailfrom(resolver, "bob@example.net", ip="2001:db8::4").outcome is Outcome.SOFTFAIL


def test_spf_domain_rules():
    """RFC 7208 §4.3: malformed or single-label names are not SPF domains."""
    assert spf_domain("Mail.Example.COM.") == "mail.example.com"
    assert spf_domain("localhost") is None
    assert spf_domain("[192.0.2.1]") is None
    assert spf_domain("a..example.com") is None
    assert spf_domain("x" * 64 + ".example.com") is None
    assert spf_domain("bücher.example") == "xn--bcher-kva.example"
