"""The body view of a held message and the HTML-to-text reading, as pure functions.

(The same view through Postfix's hold queue and the CLI is in
test_quarantine_cli.py.)
"""

from __future__ import annotations

import time

import pytest

from trustmilter.mail.html_text import html_to_text
from trustmilter.quarantine.body import MAX_LISTED, MAX_TEXT, view_body


def _message(head: bytes, body: bytes) -> bytes:
    return b"From: a@example.com\r\nSubject: x\r\n" + head + b"\r\n" + body


def test_controls_are_escaped_and_only_lf_ends_a_line() -> None:
    raw = _message(b"Content-Type: text/plain; charset=utf-8\r\n",
                   "visible\rhidden \u202eevil\u202c\u2028next\x85\x07\tend\r\n"
                   "second line\r\n".encode())
    view = view_body(raw)
    assert view.text == ("visible\\rhidden \\u202eevil\\u202c\\u2028next\\x85\\x07      end",
                         "second line")
    assert all(line.isprintable() for line in view.lines())


def test_an_attachment_is_listed_even_when_it_is_text() -> None:
    raw = _message(b'Content-Type: multipart/mixed; boundary="b"\r\n',
                   b"--b\r\nContent-Type: text/plain\r\n\r\nthe letter\r\n"
                   b"--b\r\nContent-Type: text/plain; name=notes.txt\r\n"
                   b"Content-Disposition: attachment; filename=notes.txt\r\n\r\n"
                   b"secret notes\r\n--b--\r\n")
    view = view_body(raw)
    assert view.text == ("the letter",)
    assert [(p.name, p.content_type, p.size) for p in view.listed] == [
        ("notes.txt", "text/plain", 12)]


def test_html_is_shown_when_there_is_no_plain_text() -> None:
    raw = _message(b"Content-Type: text/html; charset=iso-8859-1\r\n",
                   b"<div>Gr\xfc\xdfe</div><script>x()</script><p>Ende</p>")
    assert view_body(raw).text == ("Grüße", "", "Ende")


def test_an_unknown_charset_reads_as_utf8() -> None:
    raw = _message(b"Content-Type: text/plain; charset=x-nonsense\r\n", "ok ü\r\n".encode())
    assert view_body(raw).text == ("ok ü",)


def test_text_and_the_list_are_bounded() -> None:
    many = b"".join(b"--b\r\nContent-Type: image/gif\r\n\r\nGIF89a\r\n" for _ in range(80))
    long_text = b"--b\r\nContent-Type: text/plain\r\n\r\n" + b"word " * 50_000 + b"\r\n"
    raw = _message(b'Content-Type: multipart/mixed; boundary="b"\r\n',
                   long_text + many + b"--b--\r\n")
    view = view_body(raw)
    assert sum(len(line) for line in view.text) <= MAX_TEXT and view.truncated
    assert len(view.listed) == MAX_LISTED and view.unlisted == 80 - MAX_LISTED
    assert view.lines()[-1] == f"[... and {80 - MAX_LISTED} more parts]"
    assert view_body(raw[:2000], message_truncated=True).truncated


def test_html_to_text_drops_markup_and_keeps_link_targets() -> None:
    text = html_to_text(
        '<!DOCTYPE html><html><head><style>.x{}</style></head><body>'
        '<h1>Hi&nbsp;there</h1><p>Pay <a href="https://pay.example/x?a=1&amp;b=2">here</a>'
        '</p><ul><li>one</li><li>two</li></ul><img src="https://img.example/t.gif">'
        '<!-- <p>comment</p> --><SCRIPT type="x">alert(1)</SCRIPT>tail</body></html>')
    assert text == "Hi there\n\nPay here <https://pay.example/x?a=1&b=2>\n\none\n\ntwo\n\ntail"


@pytest.mark.parametrize("hostile", [
    "<" * 200_000, "<script>" * 100_000, "<!--" * 100_000, "<a href='" * 100_000,
    "<p " + "a=b " * 100_000 + ">", "&" * 200_000, "<style>" + "x" * 400_000,
])
def test_html_to_text_is_linear(hostile: str) -> None:
    started = time.perf_counter()
    html_to_text(hostile)
    doubled = time.perf_counter()
    html_to_text(hostile * 2)
    done = time.perf_counter()
    assert done - doubled < 0.5 and done - doubled < 4 * (doubled - started) + 0.05
