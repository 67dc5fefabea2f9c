"""DKIM (RFC 6376, RFC 8463, RFC 8301): one result per signature, via the DNS test server."""

from __future__ import annotations

import re

import pytest

from helpers import make_ctx
from keys import ed25519_key, key_zone, message, rsa_key, sign
from trustmilter.checks import dkim as dkim_check
from trustmilter.checks.dkim import DkimCheck, classify_key, precheck_signature
from trustmilter.lookup import DnsStatus
from trustmilter.results import Outcome


def run(resolver, raw, config=None):
    """All dkim results for `raw`."""
    ctx = make_ctx(resolver, ip="192.0.2.4", helo="mail.example.com",
                   mail_from="alice@example.com", message=raw)
    results = DkimCheck(config or dkim_check.Config()).run(ctx)
    assert all(r.check == "dkim" for r in results)
    return results


def findings(result):
    return [f.name for f in result.findings]


def asked(dns_server):
    return {str(n).rstrip(".").lower() for n, _t in dns_server.queries}


def test_relaxed_rsa_signature_passes(dns_server, resolver):
    """RFC 6376 §6.1, c=relaxed/relaxed with rsa-sha256; RFC 8601 §2.7.1 properties."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    [result] = run(resolver, sign(message(), key, "example.com"))
    assert result.outcome is Outcome.PASS
    assert result.method == "dkim"
    assert result.prop("header.d") == "example.com"
    assert result.prop("header.i") == "@example.com"
    assert result.prop("header.s") == "sel"
    assert result.prop("header.a") == "rsa-sha256"
    assert len(result.prop("header.b") or "") >= 8  # RFC 6008 §4
    assert result.evidence == dkim_check.DkimEvidence("example.com", "sel")
    assert dkim_check.signing_domains([result], Outcome.PASS) == ["example.com"]
    assert asked(dns_server) == {"sel._domainkey.example.com"}


def test_simple_canonicalization_passes(dns_server, resolver):
    """RFC 6376 §3.4.1/§3.4.3: c=simple/simple."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    raw = sign(message(), key, "example.com", canonicalize=(b"simple", b"simple"))
    assert run(resolver, raw)[0].outcome is Outcome.PASS


def test_ed25519_signature_passes(dns_server, resolver):
    """RFC 8463: ed25519-sha256 with a k=ed25519 key."""
    key = ed25519_key()
    dns_server.load(key_zone(key, "ed", "example.com"))
    [result] = run(resolver, sign(message(), key, "example.com", "ed"))
    assert result.outcome is Outcome.PASS
    assert result.prop("header.a") == "ed25519-sha256"


def test_two_signatures_reported_separately(dns_server, resolver):
    """RFC 6376 §6.1: each signature is verified on its own; a bad one spoils nothing else."""
    good, other = rsa_key(), rsa_key(1024, variant=1)
    dns_server.load(key_zone(good, "good", "example.com") + key_zone(other, "bad", "example.net"))
    raw = sign(message(), good, "example.com", "good")
    # Signed with `good` but claiming the selector whose key is `other`.
    raw = sign(raw, good, "example.net", "bad")
    results = run(resolver, raw)
    assert [(r.prop("header.d"), r.outcome) for r in results] == [
        ("example.net", Outcome.FAIL),
        ("example.com", Outcome.PASS),
    ]
    assert findings(results[0]) == ["dkim.signature_mismatch"]


def test_altered_header_fails(dns_server, resolver):
    """RFC 6376 §6.1.3: a signed header changed in transit breaks the signature."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    raw = sign(message(), key, "example.com").replace(b"Subject: Hello", b"Subject: Hullo")
    [result] = run(resolver, raw)
    assert result.outcome is Outcome.FAIL
    assert findings(result) == ["dkim.signature_mismatch"]


def test_altered_body_fails_with_body_hash(dns_server, resolver):
    """RFC 6376 §6.1.3 step 4: a changed body no longer matches bh=."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    raw = sign(message(), key, "example.com").replace(b"a test message", b"an altered message")
    [result] = run(resolver, raw)
    assert result.outcome is Outcome.FAIL
    assert findings(result) == ["dkim.body_hash_mismatch"]


def test_revoked_key(dns_server, resolver):
    """RFC 6376 §3.6.1 and §6.1.2: an empty p= is a revoked key (PERMFAIL)."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com", public=""))
    [result] = run(resolver, sign(message(), key, "example.com"))
    assert result.outcome is Outcome.PERMERROR
    assert findings(result) == ["dkim.key_revoked"]


def test_missing_key(dns_server, resolver):
    """RFC 6376 §6.1.2: no key record (NXDOMAIN, or NODATA) is PERMFAIL "no key for signature"."""
    key = rsa_key()
    dns_server.load("example.com. 300 IN A 192.0.2.4\n"
                    "nodata._domainkey.example.com. 300 IN A 192.0.2.4\n")
    [result] = run(resolver, sign(message(), key, "example.com", "sel"))
    assert result.outcome is Outcome.PERMERROR
    assert findings(result) == ["dkim.key_missing"]
    [result] = run(resolver, sign(message(), key, "example.com", "nodata"))
    assert (result.outcome, findings(result)) == (Outcome.PERMERROR, ["dkim.key_missing"])


def test_key_lookup_timeout_is_temperror(dns_server, resolver):
    """RFC 6376 §6.1.2: a key query that does not answer is TEMPFAIL (temperror)."""
    key = rsa_key()
    dns_server.load("$TIMEOUT sel._domainkey.example.com. TXT\n")
    [result] = run(resolver, sign(message(), key, "example.com"))
    assert result.outcome is Outcome.TEMPERROR
    assert not result.findings


def test_large_rsa_key_over_tcp(dns_server, resolver):
    """RFC 8301 §3.2: verifiers must handle keys up to 4096 bits; this answer only fits over TCP."""
    key = rsa_key(4096)
    # n= (notes, RFC 6376 §3.6.1) pads the answer past any EDNS UDP size.
    dns_server.load(key_zone(key, "big", "example.com", extra=f"n={'x' * 900}; "))
    [result] = run(resolver, sign(message(), key, "example.com", "big"))
    assert result.outcome is Outcome.PASS
    assert ("big._domainkey.example.com", "TXT") in dns_server.tcp_queries


def test_rsa_sha1_is_historic(dns_server, resolver):
    """RFC 8301 §3.1: rsa-sha1 signatures have permanently failed; no key is fetched."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    [result] = run(resolver, sign(message(), key, "example.com", algorithm=b"rsa-sha1"))
    assert result.outcome is Outcome.PERMERROR
    assert not dns_server.queries


def test_small_key_fails(dns_server, resolver):
    """RFC 8301 §3.2: keys below the configured minimum are not acceptable."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    raw = sign(message(), key, "example.com")
    [result] = run(resolver, raw, dkim_check.Config(min_key_bits=2048))
    assert result.outcome is Outcome.FAIL
    assert findings(result) == ["dkim.key_too_small"]


def test_key_of_the_wrong_type(dns_server, resolver):
    """RFC 6376 §6.1.2: a key unsuitable for a= is PERMFAIL (inappropriate key algorithm)."""
    rsa, ed = rsa_key(), ed25519_key()
    dns_server.load(key_zone(rsa, "ed", "example.com"))
    [result] = run(resolver, sign(message(), ed, "example.com", "ed"))
    assert result.outcome is Outcome.PERMERROR
    assert findings(result) == ["dkim.malformed"]


def test_malformed_signatures(dns_server, resolver):
    """RFC 6376 §6.1.1: missing required tags, bad syntax, unsigned From are PERMFAIL."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    signed = sign(message(), key, "example.com")
    no_bh = re.sub(rb"bh=[^;]*;", b"", signed, count=1)
    garbage = b"DKIM-Signature: this is not a tag list\r\n" + message()
    for raw in (no_bh, garbage):
        [result] = run(resolver, raw)
        assert result.outcome is Outcome.PERMERROR, raw[:80]
        assert findings(result) == ["dkim.malformed"]
    assert not dns_server.queries


def test_unsigned_message_is_none(dns_server, resolver):
    """RFC 8601 §2.7.1: dkim=none when the message is not signed."""
    dns_server.load("")
    [result] = run(resolver, message())
    assert result.outcome is Outcome.NONE
    assert result.method == "dkim"


def test_signature_limit(dns_server, resolver):
    """Signatures beyond max_signatures are reported neutral, not verified."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    raw = sign(sign(message(), key, "example.com"), key, "example.com")
    results = run(resolver, raw, dkim_check.Config(max_signatures=1))
    assert [r.outcome for r in results] == [Outcome.PASS, Outcome.NEUTRAL]
    assert "limit" in results[1].reason


def test_no_message_is_skipped(resolver):
    """No message yet: skipped, never an exception."""
    ctx = make_ctx(resolver, message=None)
    assert DkimCheck(dkim_check.Config()).run(ctx)[0].outcome is Outcome.SKIPPED


@pytest.mark.parametrize(
    ("tags", "outcome"),
    [
        ({b"v": b"1", b"a": b"rsa-sha512", b"b": b"AAAA", b"bh": b"AAAA", b"d": b"example.com",
          b"h": b"from", b"s": b"s"}, Outcome.NEUTRAL),
        ({b"v": b"2", b"a": b"rsa-sha256", b"b": b"AAAA", b"bh": b"AAAA", b"d": b"example.com",
          b"h": b"from", b"s": b"s"}, Outcome.PERMERROR),
        ({b"v": b"1", b"a": b"rsa-sha256", b"b": b"AAAA", b"bh": b"AAAA", b"d": b"example.com",
          b"h": b"to : subject", b"s": b"s"}, Outcome.PERMERROR),
        ({b"v": b"1", b"a": b"rsa-sha256", b"b": b"AAAA", b"bh": b"AAAA", b"d": b"example.com",
          b"h": b"from", b"s": b"s", b"x": b"1000"}, Outcome.PERMERROR),
    ],
    ids=["unknown-algorithm", "version", "from-unsigned", "expired"],
)
def test_precheck_rules(tags, outcome):
    """RFC 6376 §6.1.1 signature checks; RFC 8601 §2.7.1 neutral for what cannot be processed."""
    verdict = precheck_signature(tags, now=2_000_000_000)
    assert verdict is not None and verdict.outcome is outcome


def test_classify_key_rules():
    """RFC 6376 §6.1.2: the key record's own problems."""
    name = "sel._domainkey.example.com"
    missing = classify_key(name, None, DnsStatus.NXDOMAIN, b"rsa-sha256")
    assert missing is not None and missing.finding == "dkim.key_missing"
    temp = classify_key(name, None, DnsStatus.TEMPERROR, b"rsa-sha256")
    assert temp is not None and temp.outcome is Outcome.TEMPERROR
    public = rsa_key().public
    bad_hash = classify_key(name, f"k=rsa; h=sha1; p={public}".encode(), None, b"rsa-sha256")
    assert bad_hash is not None and bad_hash.finding == "dkim.malformed"
    junk = classify_key(name, b"v=DKIM1; p=!!!notbase64", None, b"rsa-sha256")
    assert junk is not None and junk.finding == "dkim.malformed"
    assert classify_key(name, f"v=DKIM1; p={public}".encode(), None, b"rsa-sha256") is None
