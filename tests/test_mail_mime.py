"""The iterative MIME walk (mail/mime.py): what it reads, its bounds, its cost.

Ordinary structures are compared with the standard library's parser, which
the walk replaces because it recurses once per nesting level; hostile ones
(deep nesting, many parts, unclosed boundaries) must stay linear.
"""

from __future__ import annotations

import base64
import email
import email.policy
import time

import pytest

from trustmilter import compat
from trustmilter.mail.mime import MAX_PARTS, NESTING_LIMIT, decode_text, unbase64, walk

compat.install()  # the linear MIME parameter split, as the daemon runs it

HEAD = b"From: a@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"


def nested(depth: int, leaf: bytes = b"Content-Type: text/plain\r\n\r\nhttp://deep.example.net/",
           closed: bool = True) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth))) if closed else b""
    return HEAD + opening + leaf + closing + b"\r\n"


ORDINARY = [
    HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n",
    HEAD + b"\r\nno content type at all\r\n",
    HEAD + (
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\npreamble\r\n'
        b"--alt\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"plain text, http://a.example.com/\n")
        + b"--alt  \r\nContent-Type: text/html; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<a href=3D\"http://caf=E9.=\r\nexample.com\">x</a>\r\n"
        b"--alt--\r\nepilogue --alt\r\n"
    ),
    HEAD + (
        b'Content-Type: multipart/mixed;\r\n boundary="out"\r\n\r\n'
        b"--out\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
        b"--out\r\nContent-Type: message/rfc822\r\n\r\n"
        b'From: b@example.org\r\nContent-Type: multipart/mixed; boundary="in"\r\n\r\n'
        b"--in\r\n\r\ninner default text\r\n--in\r\nContent-Type: image/png\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--in--\r\n"
        b"--out\r\nContent-Type: multipart/digest; boundary=dg\r\n\r\n"
        b"--dg\r\n\r\nSubject: digest entry\r\n\r\nentry body\r\n--dg--\r\n"
        b"--out--\r\n"
    ),
    # A multipart whose close never comes, inside one that closes.
    HEAD + (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b'--o\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n'
        b"--i\r\nContent-Type: text/plain\r\n\r\ncut short\r\n"
        b"--o\r\nContent-Type: text/html\r\n\r\n<p>after</p>\r\n--o--\r\n"
    ),
]


def stdlib_leaves(raw: bytes) -> list[tuple[str, bytes]]:
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [(part.get_content_type(), part.get_payload(decode=True))
            for part in parsed.walk() if not part.is_multipart()
            and part.get_content_type() != "message/rfc822"]


@pytest.mark.parametrize("raw", ORDINARY)
def test_ordinary_mail_reads_as_the_stdlib_reads_it(raw):
    """Same leaves, same types, same decoded payloads as email.message_from_bytes."""
    structure = walk(raw)
    assert [(leaf.content_type, leaf.payload(10**6)) for leaf in structure.leaves] == (
        stdlib_leaves(raw))
    assert not structure.too_deep and not structure.truncated


def test_structure_facts():
    """Depth counts multiparts and encapsulated messages; unclosed multiparts are counted."""
    forwarded = walk(ORDINARY[3])
    assert forwarded.depth == 3  # out -> message/rfc822 -> in -> its parts
    assert [leaf.depth for leaf in forwarded.leaves] == [1, 3, 3, 3]
    assert forwarded.leaves[3].content_type == "text/plain"  # the digest entry's body
    assert forwarded.unclosed == 0
    assert walk(ORDINARY[4]).unclosed == 1
    assert walk(nested(50, closed=False)).unclosed == 50


def test_text_is_decoded_from_transfer_encoding_and_charset():
    [plain, html] = walk(ORDINARY[2]).text_leaves()
    assert plain.text(1000) == "plain text, http://a.example.com/\n"
    assert html.text(1000) == '<a href="http://café.example.com">x</a>'


@pytest.mark.parametrize("depth", [0, 10, NESTING_LIMIT, 1000, MAX_PARTS - 1])
def test_a_part_however_deep_is_read(depth):
    """No recursion: the email package raises RecursionError at about 1000 levels."""
    structure = walk(nested(depth))
    [leaf] = structure.leaves
    assert (leaf.depth, leaf.text(100).strip()) == (depth, "http://deep.example.net/")
    assert structure.too_deep == (depth > NESTING_LIMIT)
    assert not structure.truncated


def test_past_max_parts_the_walk_stops_and_says_so():
    structure = walk(nested(MAX_PARTS + 10))
    assert structure.truncated and structure.parts == MAX_PARTS and structure.leaves == ()
    many = HEAD + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n' + b"".join(
        b"--m\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(MAX_PARTS + 5)
    )
    structure = walk(many)
    assert structure.truncated and len(structure.leaves) == MAX_PARTS - 1


@pytest.mark.parametrize(
    ("raw", "leaves"),
    [
        # A multipart without a boundary is a leaf (as the stdlib reads it).
        (HEAD + b"Content-Type: multipart/mixed\r\n\r\n--x\r\nhi\r\n", ["multipart/mixed"]),
        # A delimiter right after a part's header: an empty part.
        (HEAD + b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n--q\r\n'
         b"Content-Type: text/plain\r\n--q--\r\n", ["text/plain"]),
        # Garbage in a part's header starts its body.
        (HEAD + b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n--q\r\n'
         b"Content-Type: text/html\r\n<a href=//x.example.net>\r\n--q--\r\n", ["text/html"]),
        # Inner and outer multipart with the same boundary: the innermost wins.
        (HEAD + b'Content-Type: multipart/mixed; boundary="s"\r\n\r\n--s\r\n'
         b'Content-Type: multipart/mixed; boundary="s"\r\n\r\n--s\r\n\r\na\r\n--s--\r\n'
         b"--s--\r\n", ["text/plain"]),
        # No header/body separator at all; bare LF line ends.
        (b"Subject: only headers", ["text/plain"]),
        (HEAD.replace(b"\r\n", b"\n") + b"Content-Type: multipart/mixed; boundary=l\n\n"
         b"--l\n\nx\n--l\n\ny\n--l--\n", ["text/plain", "text/plain"]),
        (b"", ["text/plain"]),
    ],
)
def test_odd_structures(raw, leaves):
    assert [leaf.content_type for leaf in walk(raw).leaves] == leaves


def test_lenient_decoding():
    assert unbase64(b"aGk=\r\naGk=\r\n!!bG8") == b"hihilo"
    assert unbase64(b"a") == b""
    assert decode_text(b"caf\xe9", "iso-8859-1") == "café"
    assert decode_text(b"x", "no-such-charset") == "x"
    assert decode_text(b"x", "zlib_codec") == "x"  # bytes-to-bytes codecs are no charsets
    assert decode_text(b"x\xff", "utf-8") == "x\ufffd"


def timed(raw: bytes) -> float:
    """The best of three CPU times: one run of a few milliseconds is noise on a
    loaded machine, and the guard compares a small input's time with a large one's."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        walk(raw)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize(
    "build",
    [
        # Deep nesting, closed and unclosed.
        lambda n: nested(n // 80),
        lambda n: nested(n // 80, closed=False),
        # Many parts in one multipart.
        lambda n: HEAD + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        + b"--m\r\n\r\nx\r\n" * (n // 10),
        # Lines that look like delimiters and are not.
        lambda n: HEAD + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n\r\n'
        + b"--mm\r\n--n--\r\n" * (n // 12),
        # One huge header block in a part; one line with no line end.
        lambda n: HEAD + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        + b"X-A: b\r\n \t c\r\n" * (n // 15) + b"\r\nbody",
        lambda n: HEAD + b"\r\n" + b"--" + b"a" * n,
        # The punycode codec is quadratic: never used as a charset.
        lambda n: HEAD + b"Content-Type: text/plain; charset=punycode\r\n\r\n" + b"a-" * (n // 2),
    ],
)
def test_linear_time_on_hostile_structures(build):
    """Doubling the input four times at most multiplies the time by a linear factor."""
    small, large = build(100_000), build(1_600_000)
    walk(small)  # warm up
    small_time, large_time = timed(small), timed(large)
    assert large_time < max(small_time, 0.01) * 16 * 3, (small_time, large_time)
    assert large_time < 5


def test_the_punycode_charset_is_read_as_utf8():
    [leaf] = walk(HEAD + b"Content-Type: text/plain; charset=punycode\r\n\r\nabc-").leaves
    assert leaf.charset == "punycode" and leaf.text(100) == "abc-"


def test_dash_lines_are_the_lines_a_multiline_regex_finds():
    """The delimiter scan uses bytes.find; it must find exactly the lines that
    ``^--[^\\r\\n]*`` (re.MULTILINE) finds from any start: after LF, not after a bare CR."""
    import itertools
    import re

    from trustmilter.mail.mime import _dash_lines

    reference = re.compile(rb"^--[^\r\n]*", re.MULTILINE)
    pieces = (b"-", b"--", b"\r", b"\n", b"\r\n", b"a")
    for size in range(6):
        for parts in itertools.product(pieces, repeat=size):
            raw = b"".join(parts)
            for start in range(len(raw) + 1):
                expected = [m.span() for m in reference.finditer(raw, start)]
                assert list(_dash_lines(raw, start)) == expected, (raw, start)
