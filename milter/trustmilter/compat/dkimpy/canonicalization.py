"""dkimpy's relaxed canonicalization, at the speed of bytes.replace.

RFC 6376 §3.4.2 and §3.4.4: relaxed canonicalization reduces every run of
spaces and tabs to a single space and drops them at the end of a body
line. dkimpy 1.1 does both with regular expressions over the whole body:
``re.sub(b"[\\t ]+", b" ", text)`` "replaces" every single space by
itself (a match per word, and a piece kept per match, so a 5 MB body
peaked at 170 MB), and the engine tests a character class at every byte.
Together they were a seventh of the milter's CPU under load.

Ours give the same bytes for every input (tests/test_canonicalization.py
compares them on random mixes) but work with `in` and `bytes.replace`,
which scan at memory speed, and touch nothing when there is nothing to
change, the usual case for a line end and often for a whole body.

dkimpy calls its module-level ``compress_whitespace`` and
``strip_trailing_whitespace`` by name at run time (DKIM and ARC, headers
and bodies alike), so the registry (compat/dkimpy/__init__.py) points
those names at ours when `compat.install()` runs.
"""

from __future__ import annotations

import re

# A whole run of spaces and tabs before CRLF. The lookbehind starts a match
# only where a run starts: dkimpy's own pattern retries from every byte of
# a long run that is not followed by CRLF, quadratic in its length (a
# 160 KB run took 24 s, holding the GIL).
_TRAILING_RUN = re.compile(rb"(?<![\t ])[\t ]+\r\n")


def compress_whitespace(content: bytes) -> bytes:
    """Every run of spaces and tabs as one space (RFC 6376 §3.4.2, §3.4.4)."""
    if b"\t" in content:
        content = content.replace(b"\t", b" ")
    # Each pass halves every run of spaces; ordinary text needs one or none.
    while b"  " in content:
        content = content.replace(b"  ", b" ")
    return content


def strip_trailing_whitespace(content: bytes) -> bytes:
    """No spaces or tabs before a line's CRLF (RFC 6376 §3.4.4)."""
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _TRAILING_RUN.sub(b"\r\n", content)
