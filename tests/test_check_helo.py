"""HELO/EHLO sanity (docs/rules.md §2; RFC 5321 §2.3.5, §4.1.4), through the DNS test server."""

from __future__ import annotations

import pytest

from helpers import make_ctx
from trustmilter.checks import helo
from trustmilter.checks.helo import HeloCheck
from trustmilter.domains import is_single_label
from trustmilter.results import Outcome

ZONE = """
example.com.              300 IN MX   10 mail.example.com.
mail.example.com.         300 IN A    192.0.2.4
; docs/rules.md §2 "HELO mail.otherdomain.com": resolves, but another domain
mail.example.org.         300 IN A    192.0.2.4
other.example.com.        300 IN A    192.0.2.99
noaddr.example.com.       300 IN TXT  "no address here"
; a customer domain whose mail provider sends from its own hosts
customer.example.org.     300 IN MX   10 mx1.mailhost.example.net.
out.mailhost.example.net. 300 IN A    192.0.2.4
v6.example.com.           300 IN AAAA 2001:db8::4
ipv6.example.net.         300 IN MX   10 v6.example.com.
$NXDOMAIN not.existing.example.com.
$TIMEOUT  slow.example.com.
$TIMEOUT  slowmx.example.net. MX
"""


def run(resolver, name, ip="192.0.2.4", mail_from="a@example.com", config=None):
    """Run the check and return its single result."""
    ctx = make_ctx(resolver, ip=ip, helo=name, mail_from=mail_from)
    [result] = HeloCheck(config or helo.Config()).run(ctx)
    assert result.check == "helo" and result.method is None
    return result


def names(result):
    return [f.name for f in result.findings]


def test_good_helo_passes(dns_server, resolver):
    """docs/rules.md §2: resolvable, the client's IP, the sender's domain and MX."""
    dns_server.load(ZONE)
    result = run(resolver, "mail.example.com")
    assert result.outcome is Outcome.PASS
    assert result.findings == ()
    # Whether it is one of the sender's MX hosts needs the MX lookup.
    assert ("example.com", "MX") in dns_server.queries


@pytest.mark.parametrize("name", [None, "", "   "])
def test_missing_helo(dns_server, resolver, name):
    """RFC 5321 §4.1.1.1: a client must say HELO/EHLO; none is a finding."""
    dns_server.load(ZONE)
    result = run(resolver, name)
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["helo.missing"]


def test_seed_other_domain(dns_server, resolver):
    """docs/rules.md §2 "HELO mail.otherdomain.com": not the sender's domain nor its MX."""
    dns_server.load(ZONE)
    result = run(resolver, "mail.example.org")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["helo.not_sender_domain", "helo.not_sender_mx"]
    assert ("example.com", "MX") in dns_server.queries


def test_mail_provider_host_matches_sender_mx(dns_server, resolver):
    """docs/rules.md §2 "should match an MX record": same organisation as an MX host."""
    dns_server.load(ZONE)
    result = run(resolver, "out.mailhost.example.net", mail_from="a@customer.example.org")
    # In the provider's organisation, so not "another domain"; but not an MX host itself.
    assert names(result) == ["helo.not_sender_mx"]


@pytest.mark.parametrize("name", ["localhost", "localhost.localdomain", "box.localhost",
                                  "LOCALHOST."])
def test_seed_localhost(dns_server, resolver, name):
    """docs/rules.md §2 "HELO localhost"; RFC 6761 §6.3 names are never looked up."""
    dns_server.load(ZONE)
    result = run(resolver, name)
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["helo.localhost"]
    assert dns_server.queries == []


def test_seed_bare_ip_literal_mismatch(dns_server, resolver):
    """docs/rules.md §2 "HELO 1.2.3.4": an address, and not the client's."""
    dns_server.load(ZONE)
    result = run(resolver, "192.0.2.5")
    assert names(result) == ["helo.ip_literal", "helo.ip_literal_mismatch"]
    assert dns_server.queries == []


def test_bracketed_literal_of_the_client(dns_server, resolver):
    """RFC 5321 §4.1.3: [192.0.2.4] is a valid literal; still low trust by docs/rules.md §2."""
    dns_server.load(ZONE)
    result = run(resolver, "[192.0.2.4]")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["helo.ip_literal"]


def test_ipv6_literal(dns_server, resolver):
    """RFC 5321 §4.1.3: [IPv6:...] literals are recognised and compared."""
    dns_server.load(ZONE)
    same = run(resolver, "[IPv6:2001:db8::4]", ip="2001:db8::4")
    other = run(resolver, "[IPv6:2001:db8::5]", ip="2001:db8::4")
    assert names(same) == ["helo.ip_literal"]
    assert names(other) == ["helo.ip_literal", "helo.ip_literal_mismatch"]


def test_loopback_literal_is_localhost(dns_server, resolver):
    """docs/rules.md §2 "HELO localhost" in address form: [127.0.0.1]."""
    dns_server.load(ZONE)
    result = run(resolver, "[127.0.0.1]")
    assert names(result) == ["helo.ip_literal", "helo.localhost", "helo.ip_literal_mismatch"]


def test_single_label(dns_server, resolver):
    """RFC 5321 §2.3.5: the HELO name must be fully qualified; it is looked up all the same."""
    dns_server.load(ZONE)
    result = run(resolver, "mailhost")
    assert names(result) == ["helo.single_label", "helo.nxdomain"]
    assert ("mailhost", "A") in dns_server.queries
    # A bare label is a top-level domain itself: no second lookup for its TLD.
    assert ("mailhost", "NS") not in dns_server.queries


def test_seed_invalid_tld(dns_server, resolver):
    """The seed's "HELO invalid.tld": looked up, and neither it nor its TLD exists."""
    dns_server.load(ZONE)
    result = run(resolver, "invalid.tld")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["helo.unknown_tld"]
    assert ("invalid.tld", "A") in dns_server.queries and ("tld", "NS") in dns_server.queries


def test_seed_not_existing_domain(dns_server, resolver):
    """docs/rules.md §2 "HELO not.existing.domain.com": NXDOMAIN."""
    dns_server.load(ZONE)
    result = run(resolver, "not.existing.example.com")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["helo.nxdomain"]


def test_invalid_name_is_nxdomain_without_lookup(dns_server, resolver):
    """RFC 5321 §2.3.5: a name with spaces or empty labels cannot resolve."""
    dns_server.load(ZONE)
    for name in ("exa mple.com", "a..example.com", "bad!name.example.com"):
        assert names(run(resolver, name)) == ["helo.nxdomain"]
    assert dns_server.queries == []


def test_not_client_ip(dns_server, resolver):
    """RFC 5321 §4.1.4: the name resolves, but not to the client (a finding, not a reject)."""
    dns_server.load(ZONE)
    result = run(resolver, "other.example.com")
    assert names(result) == ["helo.not_client_ip", "helo.not_sender_mx"]
    assert "192.0.2.99" in result.findings[0].detail


def test_name_without_addresses(dns_server, resolver):
    """docs/rules.md §2 "must be resolvable": an existing name without A/AAAA."""
    dns_server.load(ZONE)
    result = run(resolver, "noaddr.example.com")
    assert names(result) == ["helo.no_address"]
    assert "no A/AAAA" in result.findings[0].detail


def test_ipv6_client(dns_server, resolver):
    """RFC 5321 §2.3.5: an IPv6 client's HELO name resolves by AAAA."""
    dns_server.load(ZONE)
    result = run(resolver, "v6.example.com", ip="2001:db8::4", mail_from="a@ipv6.example.net")
    assert result.outcome is Outcome.PASS


def test_timeout_is_temperror(dns_server, resolver):
    """A lookup that timed out, with nothing else found, leaves the result undecided."""
    dns_server.load(ZONE)
    result = run(resolver, "slow.example.com")
    assert result.outcome is Outcome.TEMPERROR
    assert result.findings == ()


def test_mx_timeout_is_temperror(dns_server, resolver):
    """The sender's MX lookup timed out: not_sender_domain stays undecided."""
    dns_server.load(ZONE)
    result = run(resolver, "mail.example.com", mail_from="a@slowmx.example.net")
    assert result.outcome is Outcome.TEMPERROR


def test_findings_win_over_temperror(dns_server, resolver):
    """A decisive finding makes the result fail even if another lookup timed out."""
    dns_server.load(ZONE)
    result = run(resolver, "other.example.com", mail_from="a@slowmx.example.net")
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["helo.not_client_ip"]


def test_null_sender_skips_sender_domain(dns_server, resolver):
    """Bounces (RFC 5321 §4.5.5) have no sender domain to compare with."""
    dns_server.load(ZONE)
    result = run(resolver, "mail.example.org", mail_from="")
    assert result.outcome is Outcome.PASS
    assert not any(rdtype == "MX" for _, rdtype in dns_server.queries)


def test_huge_garbage_helo_is_clipped(dns_server, resolver):
    """Client input reaches logs clipped and printable, and causes no lookup."""
    dns_server.load(ZONE)
    result = run(resolver, "x\x01" * 100_000)
    assert result.outcome is Outcome.FAIL
    assert len(result.reason) < 300 and "\x01" not in result.reason
    assert dns_server.queries == []




TLD_ZONE = ZONE + """
; a TLD the public suffix list does not know, but the DNS does
host.corp.                300 IN A    192.0.2.50
; a sender domain without MX records: its implicit MX is itself (RFC 5321 §5.1)
nomx.example.net.         300 IN A    192.0.2.4
nullmx.example.net.       300 IN MX   0 .
$SERVFAIL brokenmx.example.com. MX
"""


def test_nxdomain_under_an_existing_tld_not_on_the_suffix_list(dns_server, resolver):
    """The DNS, not only the suffix list, says whether a TLD exists: "corp." does here."""
    dns_server.load(TLD_ZONE)
    result = run(resolver, "gone.corp")
    assert names(result) == ["helo.nxdomain"]
    assert ("corp", "NS") in dns_server.queries


def test_a_known_tld_is_not_asked_again(dns_server, resolver):
    """A TLD on the public suffix list exists: no NS lookup for it."""
    dns_server.load(TLD_ZONE)
    assert names(run(resolver, "not.existing.example.com")) == ["helo.nxdomain"]
    assert not any(rdtype == "NS" for _, rdtype in dns_server.queries)


def test_implicit_mx(dns_server, resolver):
    """RFC 5321 §5.1: without MX records the domain itself is the MX host."""
    dns_server.load(TLD_ZONE)
    assert run(resolver, "nomx.example.net", mail_from="a@nomx.example.net").findings == ()


def test_null_mx_has_no_mx_host(dns_server, resolver):
    """RFC 7505: a null MX names no host, so no HELO name is one of its MX hosts."""
    dns_server.load(TLD_ZONE)
    result = run(resolver, "nomx.example.net", mail_from="a@nullmx.example.net")
    assert names(result) == ["helo.not_sender_mx"]


def test_mx_failure_in_the_sender_organisation_stays_a_pass(dns_server, resolver):
    """The organisation is known without MX; whether it is an MX host stays undecided."""
    dns_server.load(TLD_ZONE)
    ctx = make_ctx(resolver, ip="192.0.2.4", helo="mail.example.com",
                   mail_from="a@brokenmx.example.com")
    judgement = helo.judge(ctx)
    assert judgement.in_sender_org is True and judgement.sender_mx is None
    assert HeloCheck(helo.Config()).run(ctx)[0].outcome is Outcome.PASS


@pytest.mark.parametrize(("name", "resolution"), [
    ("mail.example.com", helo.Resolution.RESOLVES),
    ("noaddr.example.com", helo.Resolution.NO_ADDRESS),
    ("not.existing.example.com", helo.Resolution.NXDOMAIN),
    ("invalid.tld", helo.Resolution.UNKNOWN_TLD),
    ("slow.example.com", helo.Resolution.UNDECIDED),
    ("localhost", helo.Resolution.NOT_A_NAME),
    ("[192.0.2.4]", helo.Resolution.NOT_A_NAME),
])
def test_judge_resolution(dns_server, resolver, name, resolution):
    """NXDOMAIN, no address and an unknown TLD are told apart."""
    dns_server.load(ZONE)
    judgement = helo.judge(make_ctx(resolver, ip="192.0.2.4", helo=name, mail_from="a@example.com"))
    assert judgement.resolution is resolution


def test_is_single_label():
    assert is_single_label("mailhost") and is_single_label("a-1")
    assert not is_single_label("mail.example.com") and not is_single_label("x\x01")
    assert not is_single_label("-bad") and not is_single_label("")
