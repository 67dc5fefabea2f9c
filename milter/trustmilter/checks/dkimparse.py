"""The (fields, body) split dkimpy verifies from, without splitting the body.

``dkim.rfc822_parse`` splits the whole message into lines with a regular
expression and joins the body's lines again with CRLF, only to turn every
bare LF into CRLF: for a 100 KB body that is thousands of pieces, and it
was a twelfth of the milter's CPU. `rfc822_parse` here returns the same
value for every input (tests/test_dkimparse.py compares them): dkimpy's
own parser reads the header section, and the body is the rest of the
message, its line ends rewritten only when a bare LF is in it, which mail
from an MTA (CRLF throughout) never has.
"""

from __future__ import annotations

import re

import dkim

# A message as dkim.rfc822_parse splits it: [name, value] fields and the body.
Parsed = tuple[list[list[bytes]], bytes]

# The end of a line followed by an empty line: the end of the header section.
_EMPTY_LINE = re.compile(rb"\n\r?\n")


def rfc822_parse(raw: bytes) -> Parsed:
    """dkim.rfc822_parse(raw), raising what it raises (MessageFormatError, IndexError)."""
    if raw.startswith(b"\n") or raw.startswith(b"\r\n"):
        return [], _crlf_lines(raw[raw.index(b"\n") + 1 :])  # no header fields at all
    end = _EMPTY_LINE.search(raw)
    if end is None:
        fields, body = dkim.rfc822_parse(raw)  # no body: only header lines to split
        return fields, body
    fields, _ = dkim.rfc822_parse(raw[: end.start() + 1])
    return fields, _crlf_lines(raw[end.end() :])


def _crlf_lines(text: bytes) -> bytes:
    """`text` with every line end, CRLF or bare LF, as CRLF."""
    if text.count(b"\n") == text.count(b"\r\n"):
        return text
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
