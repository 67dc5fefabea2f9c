"""URI blocklists for link domains (RFC 5782 §2.3; docs/rules.md §7), through the DNS test server."""

from __future__ import annotations

import base64
import time

import pytest

from helpers import domain_tools, make_ctx
from trustmilter.checks import uribl
from trustmilter.checks.blocklist import BlocklistConfig
from trustmilter.checks.uribl import MAX_SCAN_BYTES, UriblCheck, link_domains
from trustmilter.mail.mime import walk
from trustmilter.results import Outcome

DBL = BlocklistConfig("dbl.example.org", weight=2.5, name="dbl",
                      codes={"127.0.1.2": "spam domain"})
MULTI = BlocklistConfig("multi.example.net")
SLOW = BlocklistConfig("slow.example.com")

# Link hosts are reduced to their registered domain, so with the reserved
# test names the listed domain is example.net, the clean one example.com and
# the one the list refuses to answer for example.org.
ZONE = """
; RFC 5782 §2.3: domain lists are asked <domain>.<zone>
example.net.dbl.example.org.    300 IN A 127.0.1.2
example.org.dbl.example.org.    300 IN A 127.255.255.254
example.net.multi.example.net.  300 IN A 127.0.0.4
$TIMEOUT example.com.slow.example.com.
"""

HEAD = (
    b"From: Bob <bob@example.com>\r\nTo: support@example.org\r\nSubject: hi\r\n"
    b"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
)

# docs/rules.md §7: "spammy links, for example in a signature" - here in an HTML
# signature, quoted-printable with a soft line break inside the host name.
SIGNATURE = HEAD + (
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"Hello, see www.clean.example.com\r\n-- \r\nBob\r\n")
    + b"--b\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b'<p>Hello</p><div class=3D"signature">Bob<br><a href=3D"https://tracker.spa=\r\n'
    b'mmy.example.net/x">my site</a></div>\r\n'
    b"--b--\r\n"
)


def plain(text, charset="utf-8", encoding="8bit"):
    """A single-part text/plain message."""
    body = text.encode(charset) if isinstance(text, str) else text
    if encoding == "base64":
        body = base64.encodebytes(body)
    return HEAD + (
        f"Content-Type: text/plain; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode() + body


def html(text):
    """A single-part text/html message."""
    return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + text.encode()


def run(resolver, raw, lists=(DBL,), config=None):
    """Run the check and return its single result."""
    ctx = make_ctx(resolver, mail_from="bob@example.com", message=raw)
    [result] = UriblCheck(config or uribl.Config(lists=tuple(lists))).run(ctx)
    assert result.check == "uribl"
    return result


def domains(raw):
    """The registered link domains the check would look up."""
    return link_domains(walk(raw), domain_tools())


def test_seed_link_in_html_signature(dns_server, resolver):
    """docs/rules.md §7: a listed link in an HTML signature (quoted-printable) fails."""
    dns_server.load(ZONE)
    result = run(resolver, SIGNATURE)
    assert result.outcome is Outcome.FAIL
    [listed] = result.findings
    assert listed.name == "uribl.listed"
    assert listed.detail == "dbl: example.net 127.0.1.2 spam domain"
    assert listed.score == 2.5
    assert sorted(dns_server.queries) == [
        ("example.com.dbl.example.org", "A"),
        ("example.net.dbl.example.org", "A"),
    ]


def test_link_in_base64_plain_part(dns_server, resolver):
    """Transfer encodings are undone before scanning (base64 text/plain)."""
    dns_server.load(ZONE)
    raw = plain("Visit http://www.spammy.example.net/offer now", encoding="base64")
    assert run(resolver, raw).outcome is Outcome.FAIL


def test_one_finding_per_list(dns_server, resolver):
    """Each list adds its weight once; each listing list is named."""
    dns_server.load(ZONE)
    raw = plain("http://a.spammy.example.net/ and https://b.spammy.example.net/")
    result = run(resolver, raw, lists=(DBL, MULTI))
    assert [(f.detail, f.score) for f in result.findings] == [
        ("dbl: example.net 127.0.1.2 spam domain", 2.5),
        ("multi.example.net: example.net 127.0.0.4 listed", 1.0),
    ]


def test_clean_links_pass(dns_server, resolver):
    """RFC 5782 §2.3: NXDOMAIN for every domain is a pass."""
    dns_server.load(ZONE)
    result = run(resolver, plain("see https://clean.example.com/page"))
    assert result.outcome is Outcome.PASS
    assert result.findings == ()


def test_error_code_ignored(dns_server, resolver):
    """127.255.255.254 means the list refused the query: score 0, not a listing."""
    dns_server.load(ZONE)
    result = run(resolver, plain("see https://refused.example.org/"))
    assert result.outcome is Outcome.PASS
    [error] = result.findings
    assert error.name == "uribl.error_code" and error.score == 0


def test_timeout_is_temperror(dns_server, resolver):
    """A list that did not answer leaves the result undecided."""
    dns_server.load(ZONE)
    result = run(resolver, plain("https://clean.example.com/"), lists=(SLOW,))
    assert result.outcome is Outcome.TEMPERROR


def test_lookup_limit(dns_server, resolver):
    """At most max_domains distinct domains are asked; uribl.lookup_limit says so."""
    dns_server.load(ZONE)
    raw = plain("http://one.example.com http://two.example.com/x http://three.example.org "
                "http://www.one.example.com/again http://four.example.net")
    result = run(resolver, raw, config=uribl.Config(lists=(DBL,), max_domains=2))
    assert [f.name for f in result.findings] == ["uribl.error_code", "uribl.lookup_limit"]
    assert "3 domains" in result.findings[1].detail
    assert sorted(name for name, _ in dns_server.queries) == [
        "example.com.dbl.example.org", "example.org.dbl.example.org"
    ]


def test_no_links_no_lists_no_message(dns_server, resolver):
    """none without links or lists; skipped before the message exists."""
    dns_server.load(ZONE)
    assert run(resolver, plain("no links here")).outcome is Outcome.NONE
    assert run(resolver, SIGNATURE, lists=()).outcome is Outcome.NONE
    [result] = UriblCheck(uribl.Config(lists=(DBL,))).run(make_ctx(resolver))
    assert result.outcome is Outcome.SKIPPED
    assert dns_server.queries == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (plain("www.spammy.example.net."), ["example.net"]),
        (plain("write to mailto:sales@deals.example.net?subject=x"), ["example.net"]),
        (plain("http://user:pw@login.example.com:8080/x"), ["example.com"]),
        (plain("http://spammy%2Eexample%2Enet/"), ["example.net"]),
        (plain("http://192.0.2.1/x http://3221225985/ http://[2001:db8::1]/"), []),
        (plain("http://host.invalidtld/ http://intranet/ http://mail.example.test/"), []),
        (plain("https://bücher.example.com/"), ["example.com"]),
        (plain("https://a.b.example.co.uk/"), ["example.co.uk"]),
        (plain("(see http://example.org), 'https://example.net'"),
         ["example.org", "example.net"]),
        (plain("FTP://Files.Example.COM/x"), ["example.com"]),
        (html('<a href="&#104;ttps://spammy.example.net/">x</a>'), ["example.net"]),
        (html('<img src="//cdn.example.net/p.gif"><a href=//x.example.org>y</a>'),
         ["example.net", "example.org"]),
        (plain(b"caf\xe9 http://latin.example.com/", charset="iso-8859-1"), ["example.com"]),
        (plain(b"http://bad.example.com/", charset="x-unknown"), ["example.com"]),
    ],
)
def test_link_extraction(raw, expected):
    """URLs, www., mailto:, HTML forms; IP hosts and unknown TLDs ignored; org domains."""
    assert domains(raw) == expected


def test_non_text_parts_ignored():
    """Only text/plain and text/html parts are read."""
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b"--m\r\nContent-Type: application/octet-stream\r\n\r\nhttp://attached.example.com/\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nhttp://shown.example.net/\r\n--m--\r\n"
    )
    assert domains(raw) == ["example.net"]


def test_truncated_mime_still_scanned():
    """A multipart body cut off mid-part is read as far as it goes."""
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b"--m\r\nContent-Type: text/html\r\n\r\n<a href='http://cut.example.com/"
    )
    assert domains(raw) == ["example.com"]


def test_huge_body_is_linear_and_capped():
    """Scanning is linear and stops after MAX_SCAN_BYTES of a part (documented cap)."""
    filler = "http://http://www.www. x" * ((MAX_SCAN_BYTES // 24) + 1)
    raw = plain(filler + " http://late.example.com/")
    start = time.monotonic()
    assert domains(raw) == []  # the link sits past the cap
    assert time.monotonic() - start < 5
