"""Failed recipients of bounces that are no RFC 3464 report, found by flufl.bounce.

flufl.bounce is Mailman's collection of bounce detectors, kept up by its
maintainers for two decades of real bounces (Exim, qmail, Yahoo, AOL,
GroupWise, Exchange, SMTP32, Netscape, Sina, ...). It answers one question
well: which addresses failed, and whether for good. It knows nothing of
codes, causes, the reporting MTA or the returned message; that is ours
(explain.py, causes.py).

Its SimpleMatch detector searches every line with every pattern, and some
patterns are quadratic in a line's length: 100 KB of long lines took 8 s. So
it never sees the message itself, only a copy made here: the same parts and
headers, each text decoded, cut to ASCII, lines cut at `LINE_LIMIT` and the
text of all parts together at `TEXT_LIMIT` (a bounce's report is a few KB;
the worst such copy takes it about a quarter of a second).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message

from flufl.bounce import all_failures

from trustmilter.mail.mime import decode_text

log = logging.getLogger(__name__)

TEXT_LIMIT = 16_000  # characters of text handed to flufl.bounce, all parts together
LINE_LIMIT = 256  # characters of one line
PART_LIMIT = 60  # parts copied
FIELD_LIMIT = 100  # header fields copied per part
_CONTAINERS = ("multipart/", "message/rfc822")


@dataclass(frozen=True)
class Failures:
    """The addresses flufl.bounce found, in the order of their first mention."""

    temporary: tuple[str, ...] = ()
    permanent: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.permanent + tuple(a for a in self.temporary if a not in self.permanent)


class _Budget:
    def __init__(self) -> None:
        self.text = TEXT_LIMIT
        self.parts = PART_LIMIT


def _cut(text: str, budget: _Budget) -> str:
    lines = []
    for line in text.splitlines():
        if budget.text <= 0:
            break
        line = line[:LINE_LIMIT]
        budget.text -= len(line) + 1
        lines.append(line)
    return "\n".join(lines).encode("ascii", "replace").decode("ascii")


def _copy(part: Message, budget: _Budget) -> Message:
    """A bounded, decoded copy of `part` (see the module docstring)."""
    budget.parts -= 1
    copy = Message()
    for name, value in list(part.items())[:FIELD_LIMIT]:
        if name.lower() != "content-transfer-encoding":
            copy[name] = _cut(str(value), _Budget())[:998].replace("\n", " ")
    payload = part.get_payload()
    content_type = part.get_content_type()
    if isinstance(payload, list) and content_type.startswith(_CONTAINERS):
        copy.set_payload([_copy(child, budget) for child in payload
                          if isinstance(child, Message) and budget.parts > 0])
        return copy
    if isinstance(payload, list):  # message/delivery-status: its blocks as text
        text = "\n".join(block.as_string() for block in payload if isinstance(block, Message))
    else:
        data = part.get_payload(decode=True)
        text = decode_text(data, part.get_content_charset()) if isinstance(data, bytes) else ""
    copy.set_payload(_cut(text, budget))
    return copy


def _addresses(found: frozenset[bytes]) -> list[str]:
    return [address.decode("utf-8", "replace") for address in found]


def flufl_failures(message: Message, order: str) -> Failures:
    """What flufl.bounce finds in `message` (temporary, permanent), each in
    the order the addresses first appear in `order` (the report's text).
    Never raises: a detector that fails only means it found nothing."""
    try:
        temporary, permanent = all_failures(_copy(message, _Budget()))
    except Exception as error:  # a stranger's mail must not stop the reader
        log.warning("flufl.bounce could not read a bounce: %s", error)
        return Failures()
    folded = order.lower()

    def ordered(found: frozenset[bytes]) -> tuple[str, ...]:
        addresses = [a for a in _addresses(found) if a.strip()]
        return tuple(sorted(addresses, key=lambda a: (folded.find(a.lower()) % (len(folded) + 1),
                                                       a)))

    return Failures(ordered(temporary), ordered(permanent))


# "<addr> (expanded from <orig>)" (Postfix), "addr\n (expanded from: <orig>)"
# (Sendmail), "(generated from orig)" (Exim): the address the sender used.
_EXPANDED = re.compile(
    r"\((?:expanded|generated) from:?\s*<?([^\s<>()]+@[^\s<>()]+|[^\s<>()@]+)>?\s*\)",
    re.IGNORECASE)


def expanded_from(text: str, address: str) -> str | None:
    """The address `address` was expanded (or generated) from, where the
    text says so right after naming it: within its line and the next."""
    folded = text.lower()
    start = folded.find(address.lower())
    while start >= 0:
        end = start + len(address)
        window_end = folded.find("\n", folded.find("\n", end) + 1)
        window = text[end : window_end if window_end >= 0 else len(text)]
        match = _EXPANDED.search(window)
        if match and not _BEFORE_EXPANSION.search(window[: match.start()]):
            original = match.group(1)
            return original if original.lower() != address.lower() else None
        start = folded.find(address.lower(), end)
    return None


# Another address between the one named and the expansion note: the note is not its.
_BEFORE_EXPANSION = re.compile(r"[^\s<>()]+@[^\s<>()]+")


def words_for(text: str, address: str, others: tuple[str, ...] = (),
              limit: int = 1000) -> str | None:
    """The words that go with `address` in a bounce's text: from the line that
    first names it on, up to the line that names another failed address (a
    list of recipients with a reason each), at most `limit` characters."""
    folded = text.lower()
    start = folded.find(address.lower())
    if start < 0:
        return None
    line_start = text.rfind("\n", 0, start) + 1
    end = min(len(text), line_start + limit)
    after = start + len(address)
    for other in others:
        if other.lower() == address.lower():
            continue
        position = folded.find(other.lower(), after, end)
        if position >= 0:
            end = min(end, text.rfind("\n", 0, position) + 1 or position)
    chunk = " ".join(text[line_start:max(end, after)].split())
    return chunk or None
