"""The verdict line: one key=value line per message in the mail log.

Shaped like Postfix's own lines so it greps by queue ID::

    4BxYz1234: action=reject reply="550 5.7.1 Rejected by ..." client=192.0.2.1 ...

Messages refused before Postfix assigned a queue ID carry ``NOQUEUE``, as
Postfix's do. Values with spaces, quotes or backslashes are double-quoted
with backslash escapes; an empty value is ``-``; control characters and
line separators (CR, LF, NEL, U+2028, U+2029...) become ``?``. Bytes a sender sent that
are not UTF-8 (lone surrogates from ``surrogateescape``) are written as
``\\xNN``: a line Python cannot encode as UTF-8 would never reach syslog.
`parse_verdict_line` reads a line back (for tests and for tools that mine
the log).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The keys and their order are the engine's (engine/record.py: VerdictRecord.pairs).
from trustmilter.engine.record import LEADING_KEYS, TRAILING_KEYS
from trustmilter.surrogates import escape_surrogates

__all__ = ["LEADING_KEYS", "NO_QUEUE_ID", "TRAILING_KEYS", "format_verdict_line",
           "parse_verdict_line"]

NO_QUEUE_ID = "NOQUEUE"

_NEEDS_QUOTES = re.compile(r'[\s"\\=]')
# Anything _quote changes; most values have none of it.
_PLAIN_UNLESS = re.compile(r'[\s"\\=\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]')
_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)')
# C0 and C1 control characters and Unicode's line and paragraph separators:
# every character str.splitlines() (and so a reader of the log in Python,
# or any Unicode-aware one) ends a line at, NEL (U+0085) and U+2028 among
# them. A sender's HELO or address with one must not start a line of its own.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _quote(value: str) -> str:
    if value and _PLAIN_UNLESS.search(value) is None:
        return value
    value = escape_surrogates(_UNPRINTABLE.sub("?", value))
    if value == "":
        return "-"
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return "" if value == "-" else value


def format_verdict_line(queue_id: str, pairs: Iterable[tuple[str, str]]) -> str:
    """``QUEUEID: key=value ...`` with values quoted where needed."""
    body = " ".join(f"{key}={_quote(value)}" for key, value in pairs)
    return f"{queue_id or NO_QUEUE_ID}: {body}"


def parse_verdict_line(line: str) -> tuple[str, dict[str, str]]:
    """(queue id, fields) from a verdict line, with any syslog prefix before it.

    Raises ValueError when the line is not a verdict line.
    """
    match = re.search(r"([A-Za-z0-9]+): (action=.*)$", line.rstrip("\n"))
    if match is None:
        raise ValueError("not a trustmilter verdict line")
    fields = {key: _unquote(value) for key, value in _PAIR.findall(match.group(2))}
    return match.group(1), fields
