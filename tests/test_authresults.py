"""Authentication-Results (RFC 8601): ours parses back, forgeries are found."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

import authres
import authres.arc
import authres.dkim_b
import authres.dmarc

from trustmilter.authresults import (
    HEADER_NAME,
    authserv_id_of,
    build_folded_value,
    build_header_value,
    find_forged,
    parse_core_header_value,
    parse_header_value,
)
from trustmilter.checks.upstream import upstream_results
from trustmilter.compat.authres import QuotedPvalue
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


# ---- folding (RFC 5322 §2.2.3) ------------------------------------------------

# The results of the newcomer's first message: 469 characters on one line.
DELIVERED = Results([
    CheckResult("iprev", Outcome.PASS, "mail.example.com", method="iprev",
                props=(("policy.iprev", "192.0.2.10"),)),
    CheckResult("spf.helo", Outcome.NONE, "no SPF record for mail.example.com", method="spf",
                props=(("smtp.helo", "mail.example.com"),)),
    CheckResult("spf.mailfrom", Outcome.PASS, "sender SPF authorized", method="spf",
                props=(("smtp.mailfrom", "alice@example.com"),)),
    CheckResult("dkim", Outcome.PASS, "signature verified", method="dkim",
                props=(("header.d", "example.com"), ("header.i", "@example.com"),
                       ("header.s", "sel"), ("header.a", "rsa-sha256"),
                       ("header.b", "oucKm0UcsqVO"))),
    CheckResult("dmarc", Outcome.PASS, "aligned SPF and DKIM pass", method="dmarc",
                props=(("header.from", "example.com"), ("policy.dmarc", "none"))),
    CheckResult("arc", Outcome.NONE, "no ARC sets", method="arc"),
])


def _field_lines(value: str) -> list[str]:
    return f"{HEADER_NAME}: {value}".split("\n")


def test_a_long_field_is_folded_before_each_result_within_78_columns():
    value = build_folded_value("mx.example.org", DELIVERED)
    lines = _field_lines(value)
    assert max(len(line) for line in lines) <= 78, lines
    assert lines[0] == f"{HEADER_NAME}: mx.example.org;"
    # Each result starts a line; continuation lines start with white space (§2.2.3).
    starts = [re.match(r"\t(iprev|spf|dkim|dmarc|arc)=", line) for line in lines[1:]]
    assert [m.group(1) for m in starts if m] == ["iprev", "spf", "spf", "dkim", "dmarc", "arc"]
    assert all(line.startswith("\t") for line in lines[1:])
    assert "\r" not in value  # libmilter wants a bare line feed; the MTA writes CRLF
    # Unfolded (CRLF/LF before white space removed), it is the one-line value.
    unfolded = value.replace("\n", "")
    assert " ".join(unfolded.split()) == build_header_value("mx.example.org", DELIVERED)
    parsed = parse_header_value(unfolded)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("iprev", "pass"), ("spf", "none"), ("spf", "pass"), ("dkim", "pass"),
        ("dmarc", "pass"), ("arc", "none")]
    dkim = next(r for r in parsed.results if r.method == "dkim")
    assert {(p.type, p.name, p.value) for p in dkim.properties} >= {
        ("header", "b", "oucKm0UcsqVO"), ("header", "a", "rsa-sha256")}


def test_a_short_field_stays_on_one_line():
    assert build_folded_value("mx.example.org", Results()) == "mx.example.org; none"
    one = Results([CheckResult("arc", Outcome.NONE, method="arc")])
    assert build_folded_value("mx.example.org", one) == build_header_value("mx.example.org", one)


def test_a_result_longer_than_a_line_is_folded_between_its_parts():
    results = Results([CheckResult(
        "spf.mailfrom", Outcome.FAIL, "x" * 60 + " reason", method="spf",
        props=(("smtp.mailfrom", "alice@example.com"), ("smtp.helo", "h" * 50 + ".example")))])
    value = build_folded_value("mx.example.org", results)
    lines = _field_lines(value)
    assert len(lines) >= 3 and max(len(line) for line in lines) <= 78, lines
    [clause] = parse_header_value(value.replace("\n", "")).results
    assert {(p.type, p.name): p.value for p in clause.properties} == {
        ("smtp", "mailfrom"): "alice@example.com", ("smtp", "helo"): "h" * 50 + ".example"}
    # A token longer than a line (RFC 5322 §2.1.1 allows 998) stays whole.
    long_token = Results([CheckResult("spf.helo", Outcome.PASS, method="spf",
                                      props=(("smtp.helo", "h" * 120 + ".example"),))])
    lines = _field_lines(build_folded_value("mx.example.org", long_token))
    assert any(len(line) > 78 for line in lines) and all(len(line) < 998 for line in lines)


# ---- parsing by position (LinearHeader) ------------------------------------------

class _AuthresHeader(QuotedPvalue, authres.core.AuthenticationResultsHeader):  # type: ignore[misc]
    """authres's own header class, parsing by copying the rest, with the one
    deliberate difference (a quoted value followed by another property)."""


# authres's own parser, with that header class, as the reference.
_AUTHRES_FEATURES = authres.FeatureContext(authres.dkim_b, authres.dmarc, authres.arc)
_AUTHRES_FEATURES.header_class = _AuthresHeader
_AUTHRES_CORE = authres.FeatureContext()
_AUTHRES_CORE.header_class = _AuthresHeader


def _parsed(parse: Callable[[str], Any], value: str) -> object:
    try:
        header = parse(value)
    except Exception as exc:
        return (type(exc), str(exc), getattr(exc, "parse_text", None))
    return (header.authserv_id, header.version,
            [(type(r), r.method, r.version, r.result, r.reason,
              [(p.type, p.name, p.value) for p in r.properties]) for r in header.results])


def _random_value(rng: random.Random) -> str:
    """An A-R value built from its grammar (RFC 8601 §2.2), then maybe damaged."""
    def cfws() -> str:
        return rng.choice(["", " ", "  ", "\r\n ", " (c) ", "(a (b) \\) c)", "\t"])

    def pvalue() -> str:
        return rng.choice(["b", "a@b.example", "@b.example", '"q w"', '"q"@b.example', "",
                           '"a\\"b"', "x.y", "1.2.3.4"])

    parts = [cfws(), rng.choice(["mx.example.com", "x", "a.b..c", "MX.Example"]), cfws()]
    if rng.random() < 0.2:
        parts += [" 1", cfws()]
    if rng.random() < 0.1:
        parts.append("; none")
    for _ in range(rng.randrange(0, 4)):
        parts += [";", cfws(), rng.choice(["spf", "dkim", "dmarc", "arc", "iprev", "x-y"])]
        if rng.random() < 0.1:
            parts.append("/1")
        parts += [cfws(), "=", cfws(), rng.choice(["pass", "fail", "none", "neutral"]), cfws()]
        if rng.random() < 0.2:
            parts += [" reason=", rng.choice(["tok", '"a reason"', '"x;y"'])]
        for _ in range(rng.randrange(0, 4)):
            parts += [" ", rng.choice(["smtp", "header", "body", "policy", "bogus"]), cfws(),
                      ".", rng.choice(["mailfrom", "d", "from", "i", "b"]), cfws(), "=",
                      cfws(), pvalue(), cfws()]
    value = "".join(parts)
    for _ in range(rng.choice([0, 0, 1, 2])):  # damage: drop or insert a character
        at = rng.randrange(0, len(value) + 1)
        if rng.random() < 0.5:
            value = value[:at] + value[at + 1 :]
        else:
            value = value[:at] + rng.choice(';()"\\=. @/\n') + value[at:]
    return value


def test_linear_parse_gives_authres_answers_for_any_value() -> None:
    rng = random.Random(8601)
    for _ in range(6000):
        value = _random_value(rng)
        assert _parsed(parse_header_value, value) == _parsed(
            _AUTHRES_FEATURES.parse_value, value), value
        assert _parsed(parse_core_header_value, value) == _parsed(
            _AUTHRES_CORE.parse_value, value), value


def test_long_values_parse_in_linear_time() -> None:
    """authres rebuilt the rest of the text for every token: 1 MB of quoted pairs
    in a comment took over 20 s, half a megabyte of results about 3 s. A guard
    against that regression, not a speed measurement. authres's own work is about
    1 s per MB even by position, so the bound is about 10 times what these take,
    not 1000: the old parse would still need several times the bound."""
    started = time.monotonic()
    assert authserv_id_of("x; spf=pass (" + "\\a" * 500_000 + ")") == "x"
    assert authserv_id_of("x" + "; spf=pass" * 50_000) == "x"
    assert time.monotonic() - started < 10


def test_deeply_nested_comments_do_not_escape_as_errors() -> None:
    """authres parses comments recursively: thousands of "(" raised RecursionError
    out of the forgery search, and every message with such a field (our own
    users' too) got the on_error answer."""
    value = "mx.example.org; spf=pass " + "(" * 5000
    assert authserv_id_of(value) == "mx.example.org"
    assert [f.value for f in find_forged([("Authentication-Results", value)], "mx.example.org")] == [value]
    assert upstream_results([("Authentication-Results", value)], ["mx.example.org"]) == []
