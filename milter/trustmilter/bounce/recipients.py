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

# flufl.bounce logs a whole traceback when one of its detectors raises (Yale's
# on a message without From: IndexError), then raises it again: a log entry
# of many lines from one stranger's message, in the milter's log. Its records
# are kept from every handler; flufl_failures logs the failure in one line.
_FLUFL_LOG = logging.getLogger("flufl.bounce")
_FLUFL_LOG.propagate = False
_FLUFL_LOG.addHandler(logging.NullHandler())

TEXT_LIMIT = 16_000  # characters of text handed to flufl.bounce, all parts together
LINE_LIMIT = 256  # characters of one line
LINE_COST = 40  # the least a line costs of TEXT_LIMIT
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
        # Every detector pattern is tried on every line: a line costs at least
        # LINE_COST of the budget, so a run of empty lines cannot buy many.
        budget.text -= max(len(line) + 1, LINE_COST)
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


# What flufl.bounce returns must at least look like an address: its looser
# patterns also match runs of an attachment's bytes. A local part of visible
# characters; a domain of host-name labels, or an address literal.
_PLAUSIBLE = re.compile(
    r"[!-~]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])")


def plausible(address: str) -> bool:
    """Whether `address` can be a mail address (RFC 5321 §4.1.2, loosely)."""
    return _PLAUSIBLE.fullmatch(address) is not None and address.count("@") == 1


def _addresses(found: frozenset[bytes]) -> list[str]:
    decoded = (address.decode("utf-8", "replace") for address in found)
    return [address for address in decoded if plausible(address)]


def flufl_failures(message: Message, order: str) -> Failures:
    """What flufl.bounce finds in `message` (temporary, permanent), each in
    the order the addresses first appear in `order` (the report's text).
    Never raises: a detector that fails only means it found nothing."""
    try:
        temporary, permanent = all_failures(_copy(message, _Budget()))
    except Exception as error:  # a stranger's mail must not stop the reader
        log.warning("flufl.bounce could not read a bounce: %s: %s", type(error).__name__,
                    " ".join(str(error).split()))
        return Failures()
    folded = order.lower()

    def ordered(found: frozenset[bytes]) -> tuple[str, ...]:
        addresses = [a for a in _addresses(found) if a.strip()]
        return tuple(sorted(addresses, key=lambda a: (folded.find(a.lower()) % (len(folded) + 1),
                                                       a)))

    return Failures(ordered(temporary), ordered(permanent))


# "<addr> (expanded from <orig>)" (Postfix), "addr\n (expanded from: <orig>)"
# (Sendmail), "(generated from orig)", "(ultimately generated from orig)"
# (Exim, through several aliases): the address the sender used.
_EXPANDED = re.compile(
    r"\((?:ultimately )?(?:expanded|generated) from:?"
    r"\s*<?([^\s<>()]+@[^\s<>()]+|[^\s<>()@]+)>?\s*\)",
    re.IGNORECASE)
# Another address between the one named and the expansion note: the note is not
# its. A match starts only where a run of address characters does (linear).
_ANOTHER_ADDRESS = re.compile(r"(?<![^\s<>()])[^\s<>()]+@[^\s<>()]+")
_NOTE_REACH = 300  # characters after an address where its expansion note may stand
_MENTIONS = 5  # mentions of one address looked at


def expanded_from(text: str, address: str) -> str | None:
    """The address `address` was expanded (or generated) from, where the text
    says so right after naming it: on its line or the next, close by."""
    folded = text.lower()
    start = folded.find(address.lower())
    for _ in range(_MENTIONS):
        if start < 0:
            return None
        end = start + len(address)
        second_line = folded.find("\n", folded.find("\n", end, end + _NOTE_REACH) + 1,
                                  end + _NOTE_REACH)
        window = text[end : second_line if second_line >= 0 else end + _NOTE_REACH]
        match = _EXPANDED.search(window)
        if match and not _ANOTHER_ADDRESS.search(window, 0, match.start()):
            original = match.group(1)
            return original if original.lower() != address.lower() else None
        start = folded.find(address.lower(), end)
    return None


def first_mentions(text: str, addresses: tuple[str, ...]) -> dict[str, int]:
    """Where each address is first named in `text` (lower-case address -> index)."""
    folded = text.lower()
    found = {}
    for address in addresses:
        position = folded.find(address.lower())
        if position >= 0:
            found[address.lower()] = position
    return found


def words_for(text: str, address: str, mentions: dict[str, int],
              also: str | None = None, limit: int = 1000) -> str | None:
    """The words that go with `address` in a bounce's text: from the line that
    first names it on, up to the line that first names another failed address
    (a list of recipients with a reason each), at most `limit` characters.
    `mentions` is `first_mentions` of all the failed addresses; `also` is
    another name of the same recipient (the address it was expanded from)."""
    start = mentions.get(address.lower())
    if start is None:
        return None
    line_start = text.rfind("\n", 0, start) + 1
    after = start + len(address)
    own = {address.lower(), (also or "").lower()}
    later = [p for a, p in mentions.items() if p >= after and a not in own]
    end = min([line_start + limit, len(text), *later])
    if later and end == min(later):
        end = max(after, text.rfind("\n", 0, end) + 1)
    chunk = " ".join(text[line_start:end].split())
    return chunk or None


# One line of an SMTP reply as a transcript copies it ("<<< 550-5.7.1 ...",
# "    550-5.7.1 ..."): its code, "-" for "more lines follow" or " " for the
# last line (RFC 5321 §4.2.1), and the words.
_REPLY_LINE = re.compile(r"[ \t]{0,20}(?:<<<[ \t]{0,20})?([245]\d\d)([- ])(.*)")
_ENHANCED_LEAD = re.compile(r"[ \t]*[245]\.\d{1,3}\.\d{1,3}[ \t]*")
REPLY_LINES = 20  # continuation lines read after the first
_FIRST_LINE_LENGTH = 200  # characters of the first line looked for in the text


def continued_reply(text: str, diagnostic: str) -> str | None:
    """The whole reply where `diagnostic` holds only its first line: a
    Diagnostic-Code of "550-5.7.1 ... this message is" (a "-" after the code
    says more lines follow) whose other lines only the transcript in `text`
    has. None when it is no cut reply or the transcript does not hold it.
    Blanks are compared as one space (a field's value is unfolded)."""
    first = " ".join(diagnostic.split())
    head = _REPLY_LINE.fullmatch(first)
    if head is None or head.group(2) != "-":
        return None
    probe = first[:_FIRST_LINE_LENGTH]
    lines = text.split("\n")
    tried = 0
    for index, line in enumerate(lines):
        if probe not in " ".join(line.split()):
            continue
        words = [first]
        for following in lines[index + 1 : index + 1 + REPLY_LINES]:
            match = _REPLY_LINE.fullmatch(following)
            if match is None or match.group(1) != head.group(1):
                break
            words.append(" ".join(_ENHANCED_LEAD.sub("", match.group(3), count=1).split()))
            if match.group(2) == " ":
                break
        if len(words) > 1:
            return " ".join(words)
        tried += 1
        if tried >= _MENTIONS:
            break
    return None
