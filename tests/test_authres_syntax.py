"""RFC 8601 §2.2 syntax: every value we write reads back through authres,
and the authserv-id of any incoming field is found however it is spelt."""

from __future__ import annotations

import re
import time

import authres
import authres.arc
import authres.dkim_b
import authres.dmarc
import pytest

from trustmilter.authresults import (
    authserv_id_of,
    build_header_value,
    find_forged,
    parse_header_value,
)
from trustmilter.mail.authres_syntax import (
    pvalue,
    quoted_string,
    read_authserv_id,
    same_authserv_id,
)
from trustmilter.results import AuthMethod, CheckResult, Outcome, Results

OUR_ID = "mx.example.org"
# authres as installed, with its own header class (no fix of ours).
_GENUINE_AUTHRES = authres.FeatureContext(authres.dkim_b, authres.dmarc, authres.arc)

# Every method trustmilter writes, with every property it writes for it
# (checks/*.py, engine/transaction.py for auth), and an ordinary value.
WRITTEN: dict[str, tuple[tuple[str, str], ...]] = {
    AuthMethod.AUTH: (("smtp.auth", "alice"),),
    AuthMethod.IPREV: (("policy.iprev", "192.0.2.1"),),
    AuthMethod.SPF: (("smtp.mailfrom", "a@example.com"), ("smtp.helo", "mail.example.com")),
    AuthMethod.DKIM: (("header.d", "example.com"), ("header.i", "@example.com"),
                      ("header.s", "sel"), ("header.a", "rsa-sha256"), ("header.b", "abc+/=")),
    AuthMethod.DMARC: (("header.from", "example.com"), ("policy.dmarc", "reject")),
    AuthMethod.ARC: (("smtp.remote-ip", "2001:db8::1"), ("header.oldest-pass", "0")),
}
assert set(WRITTEN) == set(AuthMethod), "a method we write has no round-trip case"

HOSTILE = [
    "foo@[192.0.2.5]",            # domain-literal sender: the reported hole
    "foo@[IPv6:2001:db8::1]",
    '"john doe"@example.com',     # quoted local-part
    '"a\\"b"@example.com',
    "a\\b@example.com",           # backslash
    'a"b',
    "ä@exämple.com",              # non-ASCII (written as "?")
    "x;y=z",                      # semicolon: a new clause for a careless reader
    "x; dkim=pass header.d=bank.example",
    "(comment)",
    "a)b(c",
    "a b",
    "a\r\nX-Injected: yes",
    "a@localhost",                # not a domain-name (RFC 6376 §3.5: two labels at least)
    ".a@example.com",
    "a..b@example.com",
    "a@-x.example.com",
    "a@example.com.",
    "@",
    "a@",
    "=?utf-8?q?x?=",
    "\\",
    '"',
    "x" * 300,
]


def _as_written(value: str) -> str:
    """What the header should carry for `value`: printable ASCII without spaces, 256 at most."""
    return re.sub(r"[^\x21-\x7e]", "?", value)[:256]


def _unquoted(parsed: str) -> str:
    """authres returns a quoted-string's content with its quoted-pairs as written."""
    return re.sub(r"\\(.)", r"\1", parsed)


def _clause_values(value: str) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(r.method, [(f"{p.type}.{p.name}", _unquoted(str(p.value))) for p in r.properties])
            for r in parse_header_value(value).results]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_property_we_write_reads_back_with_a_hostile_value(hostile: str) -> None:
    """Each property in turn gets the hostile value, among its ordinary siblings
    (first, middle, last): every clause and every property reads back exactly."""
    for method, props in WRITTEN.items():
        for index in range(len(props)):
            hostile_props = tuple(
                (key, hostile if i == index else value) for i, (key, value) in enumerate(props)
            )
            results = Results([
                CheckResult("dmarc", Outcome.PASS, method="dmarc",
                            props=(("header.from", "example.com"),)),
                CheckResult(str(method), Outcome.FAIL, "a reason", method=method,
                            props=hostile_props),
            ])
            value = build_header_value(OUR_ID, results)
            assert value.isascii() and "\r" not in value and "\n" not in value
            expected = [(str(method), [(k, _as_written(v)) for k, v in hostile_props]),
                        ("dmarc", [("header.from", "example.com")])]
            if method == AuthMethod.DMARC:
                expected.reverse()  # the same method: ours come in the order given
            got = _clause_values(value)
            assert sorted(got) == sorted(expected), value
            assert authserv_id_of(value) == OUR_ID


@pytest.mark.parametrize("hostile", HOSTILE)
def test_genuine_authres_reads_a_hostile_value_that_ends_its_clause(hostile: str) -> None:
    """authres as installed (without our parsing fix) reads a quoted value when it
    is the last of its clause; before, "smtp.mailfrom=foo@[192.0.2.5]" was bare
    and the whole field failed to parse."""
    results = Results([CheckResult("spf.mailfrom", Outcome.PASS, method="spf",
                                   props=(("smtp.mailfrom", hostile),))])
    value = build_header_value(OUR_ID, results)
    [clause] = _GENUINE_AUTHRES.parse_value(value).results
    [prop] = clause.properties
    assert (clause.method, clause.result) == ("spf", "pass")
    assert _unquoted(str(prop.value)) == _as_written(hostile), value


def test_ordinary_values_stay_bare() -> None:
    """Tokens and addresses of dot-atom@domain-name are written as before."""
    for value in ["example.com", "a@example.com", "first.last+tag@mail.example.co.uk",
                  "@example.com", "192.0.2.1", "rsa-sha256", "pass"]:
        assert pvalue(value) == value
    assert pvalue("foo@[192.0.2.5]") == '"foo@[192.0.2.5]"'
    assert pvalue("2001:db8::1") == '"2001:db8::1"'
    assert pvalue('a"b\\c') == '"a\\"b\\\\c"'
    assert quoted_string("") == '""'


def test_domain_literal_sender_in_the_header() -> None:
    results = Results([CheckResult("spf.mailfrom", Outcome.NONE, method="spf",
                                   props=(("smtp.mailfrom", "foo@[192.0.2.5]"),))])
    value = build_header_value(OUR_ID, results)
    assert value == 'mx.example.org; spf=none smtp.mailfrom="foo@[192.0.2.5]"'


# ---- reading the authserv-id ---------------------------------------------------------

# Every spelling of the attack report (in process and through Postfix), and more.
OURS = [
    "mx.example.org; dkim=pass",
    "MX.Example.ORG; dkim=pass",
    "mx.example.org",
    "mx.example.org;",
    "mx.example.org 1; dkim=pass",
    "mx.example.org/1; dkim=pass",
    "mx.example.org.; dkim=pass",
    " \t\r\n mx.example.org ; none",
    "(c) mx.example.org; none",
    "(a (b) c) mx.example.org; dkim=pass",
    "(a (b) c) mx.example.org; dkim=pass; @@@",
    "((b)) mx.example.org; dkim=pass; @",
    "(x\\)) mx.example.org; dkim=pass; @",
    "(x\\() mx.example.org; dkim=pass; @",
    '"mx.example.org"; dkim=pass header.d=bank.example',
    '"MX.example.org."; dkim=pass',
    '"mx.exa\\mple.org"; dkim=pass',
    '(c) "mx.example.org" (d); dkim=pass',
    "(" * 500 + ")" * 500 + " mx.example.org; dkim=pass",
    "(" * 600 + ")" * 600 + " mx.example.org; dkim=pass; @",
    "(" * 100_000 + ")" * 100_000 + "mx.example.org; dkim=pass",
    "mx.example.org; spf=pass " + "(" * 5000,
]
FOREIGN = [
    "gw.example.net; dkim=pass",
    "mx.example.org.evil.example; dkim=pass",
    "(mx.example.org) gw.example.net; dkim=pass",
    '"gw.example.net mx.example.org"; dkim=pass',
    "xmx.example.org; dkim=pass",
    "(" * 500 + " mx.example.org; dkim=pass",  # all of it one unclosed comment: no id
    '"mx.example.org; dkim=pass',  # unclosed quoted-string: no id
    "",
    "   ",
    "; dkim=pass",
]


@pytest.mark.parametrize("value", OURS, ids=lambda v: v[:40])
def test_ours_however_spelt(value: str) -> None:
    forged = find_forged([("Authentication-Results", value)], OUR_ID)
    assert [f.value for f in forged] == [value]


@pytest.mark.parametrize("value", FOREIGN, ids=lambda v: v[:40] or "empty")
def test_foreign_ones_are_not_ours(value: str) -> None:
    assert find_forged([("Authentication-Results", value)], OUR_ID) == []


def test_read_authserv_id() -> None:
    assert read_authserv_id('(a\\)b) "x\\"y" ; none') == 'x"y'
    assert read_authserv_id("x/1; none") == "x"
    assert read_authserv_id("(unclosed") is None
    assert read_authserv_id('"unclosed') is None
    assert read_authserv_id("@x") is None
    assert same_authserv_id("MX.example.org.", "mx.example.org")
    assert not same_authserv_id("", "")


def test_hostile_depths_and_lengths_are_linear() -> None:
    """No recursion (a comment nested a million deep), and linear in the length:
    a guard, not a measurement (each takes well under a second)."""
    started = time.monotonic()
    deep = "(" * 1_000_000 + ")" * 1_000_000 + " mx.example.org; dkim=pass"
    assert authserv_id_of(deep) == OUR_ID
    assert authserv_id_of("(" * 1_000_000) is None
    assert authserv_id_of("(" + "\\(" * 1_000_000 + ") mx.example.org") == OUR_ID
    assert authserv_id_of('"' + "\\a" * 1_000_000 + '"') == "a" * 1_000_000
    assert authserv_id_of("a" * 1_000_000) == "a" * 1_000_000
    assert time.monotonic() - started < 10
