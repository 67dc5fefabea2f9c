"""ARC (RFC 8617): chain validation and trusted sealers, via the DNS test server."""

from __future__ import annotations

from helpers import make_ctx
from keys import key_zone, message, rsa_key, seal, sign
from trustmilter.checks import arc
from trustmilter.checks.arc import ArcCheck, oldest_pass, read_sealer_results
from trustmilter.model import Message
from trustmilter.results import Outcome

FORWARDER = "forwarder.example.net"
FOOTER = b"--\r\nsent through the list\r\n"


def keys_zone():
    """The author's DKIM key and the forwarders' sealing keys."""
    key = rsa_key()
    return (key_zone(key, "sel", "example.com") + key_zone(key, "arc", FORWARDER)
            + key_zone(key, "arc", "relay.example.org"))


def forwarded(results="dkim=pass header.d=example.com; dmarc=pass header.from=example.com"):
    """docs/rules.md §3: a customer's signed mail, changed by a forwarder (footer) and sealed."""
    key = rsa_key()
    original = sign(message(), key, "example.com")
    changed = original + FOOTER  # breaks the author's DKIM body hash
    return seal(changed, key, FORWARDER, results)


def run(resolver, raw, trusted=()):
    ctx = make_ctx(resolver, ip="198.51.100.25", helo=f"mx.{FORWARDER}",
                   mail_from=f"bounce@{FORWARDER}", message=raw)
    [result] = ArcCheck(arc.Config(trusted_sealers=tuple(trusted))).run(ctx)
    assert (result.check, result.method) == ("arc", "arc")
    return result


def test_valid_chain_passes(dns_server, resolver):
    """RFC 8617 §5.2: a single intact ARC set validates; oldest-pass 0, remote-ip reported."""
    dns_server.load(keys_zone())
    result = run(resolver, forwarded())
    assert result.outcome is Outcome.PASS
    assert result.prop("header.oldest-pass") == "0"
    assert result.prop("smtp.remote-ip") == "198.51.100.25"
    assert not result.findings  # no trusted sealers configured


def test_two_hop_chain_passes(dns_server, resolver):
    """RFC 8617 §5.2 steps 4-7: every AS and the newest AMS verify across instances."""
    dns_server.load(keys_zone())
    recorded = "arc=pass; dkim=fail header.d=example.com"
    hop2 = seal(forwarded(), rsa_key(), "relay.example.org", recorded)
    result = run(resolver, hop2)
    assert result.outcome is Outcome.PASS
    assert len(result.evidence.sealers) == 2
    assert result.evidence.trusted is None


def test_body_altered_after_sealing_fails(dns_server, resolver):
    """RFC 8617 §5.2 step 4: the newest AMS must verify; a later body change breaks it."""
    dns_server.load(keys_zone())
    result = run(resolver, forwarded() + b"appended after sealing\r\n", trusted=[FORWARDER])
    assert result.outcome is Outcome.FAIL
    assert not result.findings


def test_trusted_sealer_vouches_for_dmarc_pass(dns_server, resolver):
    """docs/rules.md §3 forwarded mail: a trusted sealer recorded dmarc=pass before forwarding."""
    dns_server.load(keys_zone())
    result = run(resolver, forwarded(), trusted=[FORWARDER.upper()])
    assert result.outcome is Outcome.PASS
    [finding] = result.findings
    assert finding.name == "arc.trusted_pass"
    assert FORWARDER in finding.detail
    report = result.evidence.trusted
    assert report.sealer == FORWARDER
    assert report.method == "dmarc"
    assert report.results["dmarc"] == "pass"
    assert "header.from=example.com" in report.text


def test_trusted_sealer_dkim_pass_without_dmarc(dns_server, resolver):
    """With no dmarc recorded, an aligned dkim=pass recorded by the trusted sealer counts."""
    dns_server.load(keys_zone())
    result = run(resolver, forwarded("dkim=pass header.d=mail.example.com"), trusted=[FORWARDER])
    assert [f.name for f in result.findings] == ["arc.trusted_pass"]
    assert result.evidence.trusted.method == "dkim"
    unaligned = run(resolver, forwarded("dkim=pass header.d=example.org"), trusted=[FORWARDER])
    assert not unaligned.findings


def test_trusted_sealer_recorded_failure(dns_server, resolver):
    """A recorded dmarc=fail is the sealer's answer: no vouching, even if dkim passed."""
    dns_server.load(keys_zone())
    raw = forwarded("dkim=pass header.d=example.com; dmarc=fail header.from=example.com")
    assert not run(resolver, raw, trusted=[FORWARDER]).findings


def test_untrusted_sealer_gives_no_finding(dns_server, resolver):
    """An intact chain from a sealer not on the list is reported but not believed."""
    dns_server.load(keys_zone())
    result = run(resolver, forwarded(), trusted=["other.example.org"])
    assert result.outcome is Outcome.PASS
    assert not result.findings


def test_no_arc_sets_is_none(dns_server, resolver):
    """RFC 8617 §5.2 step 1: no ARC sets, chain status none, nothing asked."""
    dns_server.load(keys_zone())
    assert run(resolver, message()).outcome is Outcome.NONE
    assert not dns_server.queries


def test_seal_key_timeout_is_temperror(dns_server, resolver):
    """A sealing key lookup that times out leaves the chain undecided: temperror."""
    dns_server.load(f"$TIMEOUT arc._domainkey.{FORWARDER}. TXT\n")
    assert run(resolver, forwarded()).outcome is Outcome.TEMPERROR


def test_missing_seal_key_fails(dns_server, resolver):
    """A sealer's key that does not exist cannot verify: fail."""
    dns_server.load(key_zone(rsa_key(), "sel", "example.com"))
    assert run(resolver, forwarded()).outcome is Outcome.FAIL


def test_oldest_pass():
    """RFC 8617 §5.2 step 5: 0 when every AMS verifies, else the lowest instance still verifying."""
    assert oldest_pass([(3, True), (2, True), (1, True)]) == 0
    assert oldest_pass([(3, True), (2, False), (1, True)]) == 3
    assert oldest_pass([(3, True), (2, True), (1, False)]) == 2


def test_read_sealer_results_requires_this_from_domain():
    """A recorded dmarc=pass counts only for the current From domain."""
    from helpers import domain_tools

    org = domain_tools().org_domain
    aar = "i=1; mx.forwarder.example.net; dmarc=pass header.from=example.org"
    assert read_sealer_results(FORWARDER, 1, aar, "example.com", org) is None
    assert read_sealer_results(FORWARDER, 1, aar, "example.org", org) is not None
    assert read_sealer_results(FORWARDER, 1, "i=1; garbage(((", "example.org", org) is None


def test_a_from_nested_deeply_has_its_author_domain() -> None:
    """The stdlib's address parser recursed per comment level; thousands of
    "(" raised RecursionError out of the ARC check, then left no author. Comments
    nest and mean nothing (RFC 5322 §3.2.2): the author is example.com."""
    raw = b"From: " + b"(" * 5000 + b"x" + b")" * 5000 + b" <a@example.com>\r\n\r\nx"
    assert arc._author(Message(raw)) == "example.com"
    assert arc._author(Message(b"From: a@example.com, b@example.net\r\n\r\nx")) == ""
    assert arc._author(Message(b"From: Alice <alice@example.com>\r\n\r\nx")) == "example.com"
