"""Authentication-Results (RFC 8601): ours parses back, forgeries are found."""

from __future__ import annotations

from trustmilter.authresults import (
    authserv_id_of,
    build_header_value,
    find_forged,
    parse_header_value,
    upstream_results,
)
from trustmilter.results import CheckResult, Outcome, Results

RESULTS = Results(
    [
        CheckResult("dkim", Outcome.FAIL, "body hash (mismatch)", method="dkim",
                    props=(("header.d", "example.com"), ("header.s", "sel"), ("header.b", "abcdefgh"))),
        CheckResult("iprev", Outcome.PASS, "mail.example.com", method="iprev",
                    props=(("policy.iprev", "192.0.2.1"),)),
        CheckResult("spf.mailfrom", Outcome.PASS, method="spf", props=(("smtp.mailfrom", "a@example.com"),)),
        CheckResult("spf.helo", Outcome.NONE, method="spf", props=(("smtp.helo", "mail.example.com"),)),
        CheckResult("dmarc", Outcome.FAIL, method="dmarc",
                    props=(("header.from", "example.com"), ("policy.dmarc", "reject"))),
        CheckResult("arc", Outcome.NONE, method="arc"),
        CheckResult("helo", Outcome.FAIL),  # no RFC 8601 method: not in the header
        CheckResult("dkim", Outcome.SKIPPED, method="dkim"),  # skipped: not reported
    ]
)


def test_header_lists_every_method_in_order_and_parses_back():
    """RFC 8601 §2.2: the value must parse; iprev comes first, unreportable ones are left out."""
    value = build_header_value("mx.example.org", RESULTS)
    parsed = parse_header_value(value)
    assert parsed.authserv_id == "mx.example.org"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("iprev", "pass"), ("spf", "pass"), ("spf", "none"), ("dkim", "fail"),
        ("dmarc", "fail"), ("arc", "none"),
    ]
    assert "header.b=abcdefgh" in value
    assert "(body hash mismatch)" in value  # comment text cannot break out of its parentheses


def test_no_results_is_none():
    assert build_header_value("mx.example.org", Results()) == "mx.example.org; none"


def test_forged_headers_with_our_id_are_found_even_when_unparseable():
    """RFC 8601 §5: an incoming A-R with our authserv-id is a forgery and must be removed."""
    headers = [
        ("Received", "from x"),
        ("Authentication-Results", "other.example.net; spf=pass smtp.mailfrom=a@example.com"),
        ("authentication-results", "MX.Example.ORG; dkim=pass header.d=example.com"),
        ("Authentication-Results", "mx.example.org (comment) ; garbage((("),
    ]
    forged = find_forged(headers, "mx.example.org")
    assert [f.index for f in forged] == [2, 3]
    assert authserv_id_of("(c) mx.example.org; none") == "mx.example.org"


def test_upstream_results_only_from_trusted_ids_and_only_the_topmost():
    headers = [
        ("Authentication-Results", "gw.example.net; spf=pass smtp.mailfrom=a@example.com; dmarc=pass header.from=example.com"),
        ("Authentication-Results", "gw.example.net; dmarc=fail header.from=example.com"),
        ("Authentication-Results", "evil.example.org; dmarc=pass header.from=example.com"),
    ]
    found = upstream_results(headers, ["GW.example.net"])
    assert [(r.check, r.outcome) for r in found] == [
        ("upstream.spf", Outcome.PASS), ("upstream.dmarc", Outcome.PASS),
    ]
    assert upstream_results(headers, []) == []


def test_garbage_in_a_property_value_cannot_break_the_header():
    """8-bit garbage from a message (a From domain) must not make our header unparseable."""
    results = Results([CheckResult("dmarc", Outcome.NONE, "no (record)", method="dmarc",
                                   props=(("header.from", "exam\udcffple .com;x=y"),))])
    value = build_header_value("mx.example.org", results)
    [clause] = parse_header_value(value).results
    assert clause.result == "none"
    assert value.isascii()
