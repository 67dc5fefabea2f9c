"""A bounce kept in a file, as ``explain-bounce`` is given it: the message inside.

A message handed over by an MTA (to the milter, field by field) begins with
its header section; a message whose first line is empty has an empty header
section and is all body (RFC 5322 §2.1), and the milter reads it so. A file
is no such handover: copies saved from a web mail page, pasted into an
editor or kept by a bug tracker often begin with empty lines, or lines of
blanks, before the first header field. A person who asks what the file
says means the message after them, so those lines are dropped, and only
when a header field (or an mbox "From " line) follows them: a file that
really holds only a body is read as it is.
"""

from __future__ import annotations

import re

# Lines of nothing but blanks at the start of the file. Each repetition must
# end at a line end, so the match is linear in what it covers.
_LEADING_BLANK_LINES = re.compile(rb"(?:[ \t]*(?:\r\n?|\n))+")
# The start of a header field (RFC 5322 §2.2: printable characters but ":",
# then ":"), or the "From " line that begins each message of an mbox file.
_FIRST_HEADER = re.compile(rb"[!-9;-~]{1,998}:|From ")


def message_in_file(raw: bytes) -> bytes:
    """`raw` without the blank lines a stored copy may begin with, where a
    header section follows them; else `raw` unchanged."""
    blanks = _LEADING_BLANK_LINES.match(raw)
    if blanks is None or _FIRST_HEADER.match(raw, blanks.end()) is None:
        return raw
    return raw[blanks.end() :]
