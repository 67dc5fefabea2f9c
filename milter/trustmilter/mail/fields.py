"""Header fields split out of a header block, tolerantly and in linear time.

One function for the message's own header (`Message.headers`) and for the
header of every MIME part (`mail.mime`), so both read a field the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# RFC 5322 §2.2 / §3.6.8: field-name = 1*ftext (printable ASCII except ':').
FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")

HeaderFields = tuple[tuple[str, str], ...]


def split_fields(lines: Iterable[bytes]) -> HeaderFields:
    """(name, unfolded value) pairs in order; lines that are not fields are skipped.

    Values are UTF-8 with surrogate escapes, so no input can raise. Each
    field is a name and its value's lines, joined once at the end: linear
    even for a header folded over hundreds of thousands of lines.
    """
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(line.strip())
            continue
        match = FIELD_NAME.match(line)
        if match:
            fields.append((match.group(1), [line[match.end() :].strip()]))
    return tuple(
        (name.decode("ascii"), b" ".join(parts).decode("utf-8", "surrogateescape"))
        for name, parts in fields
    )


def field_value(fields: HeaderFields, name: str) -> str | None:
    """The first value of field `name` (case-insensitive), or None."""
    wanted = name.lower()
    return next((value for key, value in fields if key.lower() == wanted), None)
