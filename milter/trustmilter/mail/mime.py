"""The MIME structure of a message, walked without recursion (RFC 2045, RFC 2046).

The email package's parser recurses once per nesting level: a body nested
about a thousand multipart levels deep (57 KB, which MTAs pass) raises
RecursionError, and whatever read the body through it learns nothing. Here
one forward pass over the message keeps the open multiparts on an explicit
stack, with their boundaries in a dictionary, so each line is looked at once
and a boundary line is recognised in constant time, however deep it sits:
time and memory are linear in the message, whatever the sender wrote.

What it yields are the leaf parts (anything that is not a multipart or an
encapsulated message) with their content type, charset, transfer encoding,
nesting depth and body; `MimeLeaf.text` undoes base64 or quoted-printable
and the charset, leniently. The header fields of each encapsulated message
(message/rfc822, as a bounce returns ours) are kept too (`messages`).
Bounds, each reported rather than silent:
- at most `MAX_PARTS` parts (containers included) are read; beyond that the
  walk stops and `truncated` says so. This also bounds the depth;
- nesting deeper than `NESTING_LIMIT` is still walked (a link a thousand
  levels down is still found), but `too_deep` says so: no mail program
  nests that deep, so the depth is a signal of its own.

How lines are read follows the stdlib's feedparser where the RFCs leave
room: a delimiter line is ``--boundary`` with optional trailing blanks,
``--boundary--`` closes (RFC 2046 §5.1.1, the CRLF before a delimiter
belongs to it); the innermost open multipart with that boundary wins; a
header block ends at an empty line, at a delimiter, or at the first line
that is neither a field nor a continuation (that line starts the body); a
multipart that is never closed ends where an outer delimiter or the
message does (`unclosed` counts them); a multipart without a boundary is a
leaf; parts of a multipart/digest default to message/rfc822 (§5.1.5).
"""

from __future__ import annotations

import binascii
import codecs
import email.message
import re
from collections.abc import Iterator
from dataclasses import dataclass

from trustmilter.mail.fields import FIELD_NAME, HeaderFields, field_value, split_fields
from trustmilter.memo import remembered_when

# Parts read per message at most, containers included (bounds the work and the depth).
MAX_PARTS = 2000
# Nesting deeper than this is reported. Postfix's mime_nesting_limit defaults
# to the same number; real mail (forwards of forwards) stays far below it.
NESTING_LIMIT = 100

TEXT_TYPES = frozenset({"text/plain", "text/html"})
# Transfer encodings under which an encapsulated message can be read as it is
# (RFC 2046 §5.2.1: message/rfc822 is only ever 7bit, 8bit or binary).
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
# Codecs Python knows that are no MIME charset, with pure-Python decoders that
# are not linear in their input (punycode's is quadratic): read as UTF-8.
_UNSAFE_CODECS = frozenset({"punycode", "idna"})

# A line that may be a delimiter starts with this; whether it is, the
# boundary dictionary says. A line ends at CR or LF.
_DASHES = b"--"
_LINE_END = re.compile(rb"[\r\n]")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]+")
_PADDING = re.compile(rb"=+")


def decode_text(data: bytes, charset: str | None) -> str:
    """`data` in `charset`, bad bytes replaced; an unknown charset reads as UTF-8."""
    name = "utf-8"
    if charset:
        try:
            info = codecs.lookup(charset)
        except (LookupError, ValueError, TypeError):
            info = None
        # _is_text_encoding is False for bytes-to-bytes codecs (zlib, base64, rot13).
        if info is not None and info.name not in _UNSAFE_CODECS and getattr(
            info, "_is_text_encoding", True
        ):
            name = info.name
    try:
        return data.decode(name, "replace")
    except (LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def unbase64(data: bytes) -> bytes:
    """RFC 2045 §6.8, leniently: characters outside the alphabet are ignored,
    and each run up to padding is decoded on its own (concatenated encodings)."""
    chunks = []
    for chunk in _PADDING.split(_NOT_BASE64.sub(b"", data)):
        usable = len(chunk) - (len(chunk) % 4 == 1)  # a lone sixth of a byte: dropped
        if usable > 0:
            chunk = chunk[:usable] + b"=" * (-usable % 4)
            chunks.append(binascii.a2b_base64(chunk))
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class MimeLeaf:
    """One part that holds content rather than other parts."""

    content_type: str  # lower-case type/subtype
    charset: str | None
    transfer_encoding: str  # lower-case; "7bit" when absent
    depth: int  # 0: the message itself; 1: a part of the top multipart; ...
    body: bytes  # as sent, transfer encoding not undone
    fields: HeaderFields = ()  # the part's own header fields, unfolded

    @property
    def attached(self) -> bool:
        """Sent as an attachment (RFC 2183 ``Content-Disposition: attachment``)."""
        disposition = field_value(self.fields, "Content-Disposition") or ""
        return disposition.split(";", 1)[0].strip().lower() == "attachment"

    def filename(self) -> str | None:
        """The part's file name: Content-Disposition's filename (RFC 2183, RFC 2231
        encoded too), else Content-Type's older name parameter; None when it has none."""
        holder = email.message.Message()
        for name in ("Content-Disposition", "Content-Type"):
            value = field_value(self.fields, name)
            if value is not None:
                holder[name] = value
        found = holder.get_filename()
        return found if isinstance(found, str) else None

    def payload(self, limit: int) -> bytes:
        """The body with its transfer encoding undone, at most `limit` bytes of it."""
        if self.transfer_encoding == "base64":
            # 76-character lines: 4 encoded characters (plus line ends) per 3 bytes.
            return unbase64(self.body[: limit * 2 + 4])[:limit]
        if self.transfer_encoding == "quoted-printable":
            # Each decoded byte takes at most three encoded ones ("=XX").
            return binascii.a2b_qp(self.body[: limit * 3])[:limit]
        return self.body[:limit]

    def text(self, limit: int) -> str:
        """The decoded text of at most `limit` payload bytes."""
        return decode_text(self.payload(limit), self.charset)


@dataclass(frozen=True, slots=True)
class MimeStructure:
    """What the walk found: the leaves in order, and how the message is built."""

    leaves: tuple[MimeLeaf, ...]
    parts: int  # parts read, containers included
    depth: int  # nesting level of the deepest part read
    truncated: bool  # the walk stopped at MAX_PARTS
    unclosed: int  # multiparts whose closing delimiter never came
    # The header fields of each encapsulated message (message/rfc822 read as
    # it is), in order: a bounce's returned message, a forwarded one.
    messages: tuple[HeaderFields, ...] = ()

    @property
    def too_deep(self) -> bool:
        return self.depth > NESTING_LIMIT

    def text_leaves(self) -> Iterator[MimeLeaf]:
        """The text/plain and text/html leaves, in order."""
        return (leaf for leaf in self.leaves if leaf.content_type in TEXT_TYPES)


@dataclass(frozen=True, slots=True)
class _Kind:
    """What a part's header says it is."""

    content_type: str
    charset: str | None
    transfer_encoding: str
    boundary: bytes | None  # set for a multipart with a usable boundary


def _kind(fields: HeaderFields, default_type: str) -> _Kind:
    """What a part's Content-Type and Content-Transfer-Encoding fields say."""
    return _kind_of(field_value(fields, "Content-Type"),
                    field_value(fields, "Content-Transfer-Encoding"), default_type)


# Leaf parts repeat their fields from message to message ("text/plain;
# charset=utf-8"), and the stdlib builds a Message and parses the parameters
# twice for each: short field values are remembered (boundaries make each
# multipart's value new, and it simply takes its turn in the memo).
MEMO_FIELD_CHARS = 512


@remembered_when(
    lambda value, encoding, default_type: len(value or "") + len(encoding or "")
    <= MEMO_FIELD_CHARS,
    maxsize=1024,
)
def _kind_of(value: str | None, encoding: str | None, default_type: str) -> _Kind:
    """Content-Type and Content-Transfer-Encoding read by the stdlib's
    parameter code (RFC 2231 too; linear once compat is installed)."""
    holder = email.message.Message()
    holder.set_default_type(default_type)
    if value is not None:
        holder["Content-Type"] = value
    content_type = holder.get_content_type()
    boundary: bytes | None = None
    if content_type.startswith("multipart/"):
        text = holder.get_boundary()
        if text:
            try:
                boundary = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                boundary = None  # an RFC 2231 value decoded to text the wire cannot hold
    transfer_encoding = (encoding or "7bit").strip().lower()
    return _Kind(content_type, holder.get_content_charset(), transfer_encoding, boundary)


@dataclass(frozen=True, slots=True)
class _Frame:
    """An open multipart."""

    boundary: bytes
    depth: int
    digest: bool
    shadowed: int | None  # the outer frame with the same boundary, restored on pop


@dataclass(frozen=True, slots=True)
class _Delimiter:
    start: int  # where the delimiter line starts
    end: int  # after its line end
    frame: int  # index of the multipart it belongs to
    closing: bool


class _Walker:
    """One walk over one message; see the module docstring."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.stack: list[_Frame] = []
        self.active: dict[bytes, int] = {}  # boundary -> innermost open frame
        self.leaves: list[MimeLeaf] = []
        self.parts = 0
        self.depth = 0
        self.unclosed = 0
        self.messages: list[HeaderFields] = []

    def walk(self) -> MimeStructure:
        start: int | None = 0
        depth, default_type = 0, "text/plain"
        truncated = False
        encapsulated = False  # the part at `start` is a message inside a message/rfc822
        while start is not None:
            if self.parts >= MAX_PARTS:
                truncated = True
                break
            self.parts += 1
            self.depth = max(self.depth, depth)
            # A returned message's header is kept whole (the bounce and reply
            # checks read its Message-ID, Date and token); a part's, only its
            # Content-* fields (its kind, and the name an attachment is listed by).
            fields, body = self._header(start, whole=encapsulated)
            if encapsulated:
                self.messages.append(fields)
            kind = _kind(fields, default_type)
            encapsulated = False
            if kind.boundary is not None:
                self._push(kind.boundary, depth, kind.content_type == "multipart/digest")
                start, depth, default_type = self._follow(self._next_delimiter(body))
            elif kind.content_type == "message/rfc822" and (
                kind.transfer_encoding in _IDENTITY_ENCODINGS
            ):
                start, depth, default_type = body, depth + 1, "text/plain"
                encapsulated = True
            else:
                delimiter = self._next_delimiter(body)
                end = _before_line_end(self.raw, body, delimiter.start) if delimiter else len(
                    self.raw
                )
                self.leaves.append(MimeLeaf(kind.content_type, kind.charset,
                                            kind.transfer_encoding, depth, self.raw[body:end],
                                            fields))
                start, depth, default_type = self._follow(delimiter)
        if start is None:
            self.unclosed += len(self.stack)
        return MimeStructure(tuple(self.leaves), self.parts, self.depth, truncated, self.unclosed,
                             tuple(self.messages))

    def _header(self, start: int, *, whole: bool = False) -> tuple[HeaderFields, int]:
        """The Content-* fields (all of them when `whole`) of the header block at
        `start`, and where the body starts.

        Only those fields' lines are kept for `split_fields`: a message's own
        header has dozens of fields (a DKIM signature alone folds over several
        lines), and decoding all of them to read two was most of the walk.
        """
        raw, position = self.raw, start
        lines: list[bytes] = []
        kept = False  # whether the field that a continuation line continues is kept
        while position < len(raw):
            newline = raw.find(b"\n", position)
            following = len(raw) if newline < 0 else newline + 1
            line = raw[position:following].rstrip(b"\r\n")
            if not line:
                return split_fields(lines), following
            if line.startswith(b"--") and self._delimiter_of(line) is not None:
                break  # a part with no body at all
            if line[:1] in (b" ", b"\t"):
                if kept:
                    lines.append(line)
            elif match := FIELD_NAME.match(line):
                kept = whole or match.group(1)[:8].lower() == b"content-"
                if kept:
                    lines.append(line)
            elif not line.startswith(b"From "):
                break  # not a header line: the body starts here
            position = following
        return split_fields(lines), position

    def _push(self, boundary: bytes, depth: int, digest: bool) -> None:
        self.stack.append(_Frame(boundary, depth, digest, self.active.get(boundary)))
        self.active[boundary] = len(self.stack) - 1

    def _pop(self) -> None:
        frame = self.stack.pop()
        if frame.shadowed is None:
            del self.active[frame.boundary]
        else:
            self.active[frame.boundary] = frame.shadowed

    def _delimiter_of(self, line: bytes) -> tuple[int, bool] | None:
        """(frame, closing) if `line` (without its line end) is a delimiter of an open multipart."""
        rest = line[2:].rstrip(b" \t")
        frame = self.active.get(rest)
        if frame is not None:
            return frame, False
        if rest.endswith(b"--"):
            frame = self.active.get(rest[:-2])
            if frame is not None:
                return frame, True
        return None

    def _next_delimiter(self, start: int) -> _Delimiter | None:
        """The first delimiter line of any open multipart at or after `start`."""
        if not self.active:
            return None
        raw = self.raw
        for line_start, line_end in _dash_lines(raw, start):
            found = self._delimiter_of(raw[line_start:line_end])
            if found is not None:
                end = line_end  # at the line end, if any: CRLF, LF or a bare CR
                end += 2 if raw.startswith(b"\r\n", end) else int(end < len(raw))
                return _Delimiter(line_start, end, found[0], found[1])
        return None

    def _follow(self, delimiter: _Delimiter | None) -> tuple[int | None, int, str]:
        """From a delimiter on: where the next part starts, its depth and default
        type; None when no part follows. Closing delimiters and epilogues are
        passed over, and multiparts inside the one a delimiter belongs to that
        were never closed are closed by it."""
        while delimiter is not None:
            while len(self.stack) > delimiter.frame + 1:
                self._pop()
                self.unclosed += 1
            frame = self.stack[delimiter.frame]
            if not delimiter.closing:
                return delimiter.end, frame.depth + 1, (
                    "message/rfc822" if frame.digest else "text/plain"
                )
            self._pop()
            delimiter = self._next_delimiter(delimiter.end)
        return None, 0, "text/plain"


def _dash_lines(raw: bytes, start: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each line at or after `start` that starts with ``--``;
    `end` is where its line end (CR or LF) or the message ends.

    A line starts at 0 or after an LF. `bytes.find` jumps from one LF and
    dashes to the next: a multiline regex (``^--``) would try a match at
    every byte of every attachment, which was most of the walk's cost.
    """
    line_start = start if start == 0 and raw.startswith(_DASHES) else _next_dash_line(raw, start)
    while line_start >= 0:
        line_end = _line_end(raw, line_start)
        yield line_start, line_end
        line_start = _next_dash_line(raw, line_end)


def _next_dash_line(raw: bytes, start: int) -> int:
    """Where the first line after `start`, or at it, that starts with ``--``
    starts (-1: none); a line at 0 is not looked for."""
    newline = raw.find(b"\n" + _DASHES, max(start - 1, 0))
    return newline + 1 if newline >= 0 else -1


def _line_end(raw: bytes, start: int) -> int:
    """Where the line at `start` ends: its CR or LF, or the end of `raw`."""
    found = _LINE_END.search(raw, start)
    return found.start() if found is not None else len(raw)


def _before_line_end(raw: bytes, body: int, delimiter: int) -> int:
    """Where a body ends that a delimiter line at `delimiter` follows: the
    CRLF before the delimiter belongs to it (RFC 2046 §5.1.1)."""
    end = delimiter
    if end > body and raw[end - 1 : end] == b"\n":
        end -= 1
        if end > body and raw[end - 1 : end] == b"\r":
            end -= 1
    return end


def walk(raw: bytes) -> MimeStructure:
    """The MIME structure of the message `raw`; linear, never raises for bad MIME."""
    return _Walker(raw).walk()
