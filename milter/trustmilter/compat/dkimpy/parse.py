"""The (fields, body) split dkimpy verifies from, without splitting the body.

``dkim.rfc822_parse`` splits the whole message into lines with a regular
expression and joins the body's lines again with CRLF, only to turn every
bare LF into CRLF: for a 100 KB body that is thousands of pieces, and it
was a twelfth of the milter's CPU. `rfc822_parse` here returns the same
value for every input (tests/test_compat_dkimparse.py compares them): dkimpy's
own parser reads the header section, and the body is the rest of the
message, its line ends rewritten only when a bare LF is in it, which mail
from an MTA (CRLF throughout) never has.

The header section is split as dkimpy splits it, except that a folded
field's lines are joined once at the end: dkimpy appends each line to the
value so far (``value += line``), copying it anew every time, quadratic
in a field folded over many lines (a 1 MB field took 3 s).

DKIM and ARC verification both start from this split: `verifier()` in
compat/dkimpy/__init__.py builds dkimpy's object without letting it parse.
"""

from __future__ import annotations

import re

import dkim

# A message as dkim.rfc822_parse splits it: [name, value] fields and the body.
Parsed = tuple[list[list[bytes]], bytes]

# The end of a line followed by an empty line: the end of the header section.
_EMPTY_LINE = re.compile(rb"\n\r?\n")
# dkimpy's line split and field name (shortest run of printable ASCII before ":").
_LINE_END = re.compile(rb"\r?\n")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")


def rfc822_parse(raw: bytes) -> Parsed:
    """dkim.rfc822_parse(raw), raising what it raises (MessageFormatError, IndexError)."""
    if raw.startswith(b"\n") or raw.startswith(b"\r\n"):
        return [], _crlf_lines(raw[raw.index(b"\n") + 1 :])  # no header fields at all
    end = _EMPTY_LINE.search(raw)
    if end is None:
        return _dkimpy_split(raw)  # no body: only header lines to split
    fields, _ = _dkimpy_split(raw[: end.start() + 1])
    return fields, _crlf_lines(raw[end.end() :])


def _dkimpy_split(raw: bytes) -> Parsed:
    """dkim.rfc822_parse(raw), each field's lines joined once (linear in `raw`)."""
    lines = _LINE_END.split(raw)
    fields: list[list[bytes]] = []
    pieces: list[list[bytes]] = []  # the lines of each field's value
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1  # the empty line ends the header section
            break
        if line[0] in (0x09, 0x20):
            pieces[-1].append(line + b"\r\n")  # IndexError before any field, as dkimpy
        else:
            match = _FIELD_NAME.match(line)
            if match is not None:
                fields.append([match.group(1), b""])
                pieces.append([line[match.end() :] + b"\r\n"])
            elif not line.startswith(b"From "):
                raise dkim.MessageFormatError(f"Unexpected characters in RFC822 header: {line!s}")
        i += 1
    for field, value in zip(fields, pieces, strict=True):
        field[1] = b"".join(value)
    return fields, b"\r\n".join(lines[i:])


def _crlf_lines(text: bytes) -> bytes:
    """`text` with every line end, CRLF or bare LF, as CRLF."""
    if text.count(b"\n") == text.count(b"\r\n"):
        return text
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
