"""Text that carries undecodable bytes, made safe to write anywhere.

SMTP input that is not UTF-8 (an 8-bit MAIL FROM without SMTPUTF8, RFC 6531
§3.2) reaches us decoded with ``surrogateescape``: each bad byte is a lone
surrogate U+DC80..U+DCFF. Such a string cannot be encoded as UTF-8, so a
syslog datagram, an SQLite parameter or a Redis key holding it fails.
`escape_surrogates` writes each such byte as ``\\xNN`` (any other lone
surrogate as ``\\uXXXX``): printable ASCII, stable, and still telling
which bytes the sender sent.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # the byte surrogateescape stood in for
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def escape_surrogates(text: str) -> str:
    """`text` with every lone surrogate written as an ASCII escape; unchanged if none."""
    # Nearly every line is ASCII, which CPython knows without looking (a flag
    # of the string): no scan of each character for them.
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(_escape, text)
