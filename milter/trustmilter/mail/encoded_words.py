"""RFC 2047 encoded-words in header text, decoded in linear time.

The one decoder for header text a check or a tool shows or compares (the
thread's Subject in the rate check, the auto-reply Subject in the
automation check, the Subject the quarantine review lists).

Why not ``email.header.decode_header``: it pops parts off the front of a
list and appends bytes word by word, so its time grows with the square of
the number of encoded-words. A Subject of 70,000 one-letter words (1 MB)
took 13 s, 2 MB took 148 s: a sender could stall a worker with one header.
Here one regex finds the words (its encoded text cannot contain "?", so no
character is scanned from more than a constant number of starts), each
word is decoded with the standard codecs (base64, ``binascii.a2b_qp``,
``bytes.decode``), and the result is joined once.

What it does, as RFC 2047 asks:
- ``=?charset?B?...?=`` and ``=?charset?Q?...?=`` (any case; an RFC 2231
  language suffix ``charset*lang`` is ignored, §5 of RFC 2231);
- white space between two encoded-words is dropped (§6.2); text outside
  the words is kept as written;
- adjacent words in the same charset are decoded together, so a stateful
  or multi-byte charset split across words (ISO-2022-JP, UTF-8, as
  Japanese mailers do) decodes whole;
- a word that cannot be decoded (bad base64, an unknown charset, non-ASCII
  inside it) stays as it was written; undecodable bytes become U+FFFD.

Never raises for any input.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterator

# An encoded-word: charset (no "?" or white space), B or Q, encoded text
# without "?" (RFC 2047 §2 forbids "?" and space in it; space is tolerated,
# as mailers get that wrong and the standard library accepts it too).
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*)\?=")
_SPACE_ONLY = re.compile(r"[ \t\r\n]*\Z")
# Codecs that are no mail charset and whose decoders are slow or surprising
# on hostile input (punycode and idna are quadratic; the escape codecs
# interpret backslashes). Bytes-to-bytes codecs (base64, zlib...) are
# already refused by bytes.decode with LookupError.
_REFUSED_CODECS = frozenset({
    "punycode", "idna", "unicode_escape", "raw_unicode_escape", "undefined",
})


def decode_words(value: str) -> str:
    """`value` with its RFC 2047 encoded-words decoded (linear in its length)."""
    if "=?" not in value:
        return value
    pieces: list[str] = []
    run = _Run()
    end = 0
    after_word = False  # the text so far ends with a decoded encoded-word
    for match, charset, data in _words(value):
        gap = value[end:match.start()]
        # §6.2: white space between two encoded-words is not displayed.
        between_words = after_word and data is not None and _SPACE_ONLY.match(gap) is not None
        if not (between_words and charset == run.charset):
            run.flush_into(pieces)
            if not between_words:
                pieces.append(gap)
        if data is None:  # undecodable: shown as written
            pieces.append(match.group(0))
        else:
            run.add(charset, data, match.group(0))
        after_word = data is not None
        end = match.end()
    run.flush_into(pieces)
    pieces.append(value[end:])
    return "".join(pieces)


class _Run:
    """Adjacent encoded-words in one charset, decoded together."""

    def __init__(self) -> None:
        self.charset = ""
        self.data: list[bytes] = []
        self.raw: list[str] = []

    def add(self, charset: str, data: bytes, raw: str) -> None:
        self.charset = charset
        self.data.append(data)
        self.raw.append(raw)

    def flush_into(self, pieces: list[str]) -> None:
        """Append the run, decoded once (or as written), and start a new one."""
        if self.data:
            text = _decode(b"".join(self.data), self.charset)
            pieces.append(" ".join(self.raw) if text is None else text)
        self.charset, self.data, self.raw = "", [], []


def _words(value: str) -> Iterator[tuple[re.Match[str], str, bytes | None]]:
    """Each encoded-word with its charset (lower case) and its bytes (None: undecodable)."""
    for match in _ENCODED_WORD.finditer(value):
        charset = match.group(1).partition("*")[0].lower()
        yield match, charset, _word_bytes(match.group(2), match.group(3))


def _word_bytes(encoding: str, text: str) -> bytes | None:
    """The bytes an encoded-word's text stands for, or None if it is malformed."""
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    try:
        if encoding in "bB":
            # RFC 2047 §4.1; missing padding is common and harmless.
            return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
        # RFC 2047 §4.2: "_" is a space, "=XX" an octet.
        return binascii.a2b_qp(raw, header=True)
    except (binascii.Error, ValueError):
        return None


def _decode(data: bytes, charset: str) -> str | None:
    """`data` in `charset`, or None for a charset that is unknown or refused."""
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError):
        return None
    if name in _REFUSED_CODECS:
        return None
    try:
        return data.decode(name, errors="replace")
    except (LookupError, ValueError):  # not a text encoding (base64, zlib...)
        return None

