"""A held message's body as safe text for the reviewer's terminal.

A reviewer deciding on a release must read what the message says, but the
message comes from a stranger: nothing of it may run, load or drive the
terminal. So its MIME parts are walked once (mail/mime.py, linear however
it is built) and:
- text/plain parts are shown decoded (transfer encoding, then charset);
- text/html parts are shown as text with the tags removed (mail/html_text.py):
  never rendered, nothing fetched; when a message has both (the usual
  multipart/alternative), the plain text is shown and the HTML is listed;
- every other part, and any part sent as an attachment, is listed by
  name, type and size, never opened or decoded further;
- control characters (escape sequences, carriage returns, bidirectional
  overrides, U+2028) are shown as escapes, tabs as spaces;
- the output is bounded: at most `MAX_TEXT` characters of text and
  `MAX_LISTED` listed parts, whatever the size of the message, and the
  view says when it left something out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trustmilter.mail.html_text import html_to_text
from trustmilter.mail.mime import MimeLeaf
from trustmilter.mail.mime import walk as walk_mime

# Characters of text shown at most, all parts together.
MAX_TEXT = 20_000
# Parts listed at most (attachments and parts not shown as text).
MAX_LISTED = 50
# Payload bytes of one HTML part read at most (its markup does not count as text).
MAX_HTML = 256 * 1024
_SHOWN = ("text/plain", "text/html")
# Every byte that is not of the base64 alphabet (RFC 2045 §6.8), padding included.
_NOT_BASE64 = bytes(set(range(256)) - set(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))
# A line ends at LF or CRLF only: a lone CR (which would move the terminal's
# cursor back over the line) is shown as an escape, like other controls.
_LINE_END = re.compile(r"\r?\n")


@dataclass(frozen=True, slots=True)
class ListedPart:
    """A part that is not shown as text: what a reviewer may want to know of it."""

    name: str | None  # the file name it was sent with, escaped
    content_type: str
    size: int  # bytes of its content (base64 undone; other encodings as sent)


@dataclass(frozen=True, slots=True)
class BodyView:
    """The readable text of a message and the parts it does not show."""

    text: tuple[str, ...]  # lines, escaped
    listed: tuple[ListedPart, ...]
    unlisted: int  # parts beyond MAX_LISTED
    truncated: bool  # text, or the message itself, was longer than shown

    def lines(self) -> list[str]:
        """The view as `quarantine show --body` prints it."""
        out = ["--- body (as text; HTML without its markup; nothing opened) ---", *self.text]
        if self.truncated:
            out.append("[... more not shown]")
        if self.listed:
            out.append("--- parts not shown ---")
            out.extend(f"{part.name or '(no name)'}  {part.content_type}  {part.size} bytes"
                       for part in self.listed)
        if self.unlisted:
            out.append(f"[... and {self.unlisted} more parts]")
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "text": "\n".join(self.text),
            "parts": [{"name": p.name, "content_type": p.content_type, "size": p.size}
                      for p in self.listed],
            "more_parts": self.unlisted,
            "truncated": self.truncated,
        }


def view_body(raw: bytes, message_truncated: bool = False) -> BodyView:
    """The view of the whole message `raw` (header and body; `message_truncated`:
    only the start of it could be read)."""
    structure = walk_mime(raw)
    leaves = structure.leaves
    readable = [leaf for leaf in leaves if leaf.content_type in _SHOWN and not leaf.attached]
    # multipart/alternative sends the same text twice: the plain version is enough.
    if any(leaf.content_type == "text/plain" for leaf in readable):
        readable = [leaf for leaf in readable if leaf.content_type == "text/plain"]
    room = MAX_TEXT
    text: list[str] = []
    truncated = message_truncated or structure.truncated
    for leaf in readable:
        if room <= 0:
            truncated = True
            break
        shown = _text(leaf, room)
        if len(shown) > room:
            shown, truncated = shown[:room], True
        room -= len(shown)
        if text:
            text.append("")
        text.extend(_escaped(line) for line in _LINE_END.split(shown.rstrip("\r\n")))
    others = [leaf for leaf in leaves if not any(leaf is r for r in readable)]
    listed = tuple(ListedPart(_escaped(name) if (name := leaf.filename()) else None,
                              _escaped(leaf.content_type), _size(leaf))
                   for leaf in others[:MAX_LISTED])
    return BodyView(tuple(text), listed, max(0, len(others) - MAX_LISTED), truncated)


def _text(leaf: MimeLeaf, room: int) -> str:
    """A part's text, a little more than `room` characters of it at most."""
    if leaf.content_type == "text/html":
        return html_to_text(leaf.text(MAX_HTML))
    # A character is at most 4 bytes in any charset a mail uses (UTF-8's longest).
    return leaf.text(room * 4 + 4)


def _size(leaf: MimeLeaf) -> int:
    """Bytes of content, counted without decoding it: base64 carries 3 in every 4."""
    if leaf.transfer_encoding == "base64":
        return len(leaf.body.translate(None, _NOT_BASE64)) * 3 // 4
    return len(leaf.body)


def _escaped(line: str) -> str:
    """`line` with anything that is not printable as an escape, then tabs as spaces
    (to the columns the escaped line is shown in)."""
    if not line.isprintable():
        line = "".join(c if c.isprintable() or c == "\t" else
                       c.encode("unicode_escape").decode("ascii") for c in line)
    return line.expandtabs(8)
