"""A held message as the page shows it: plain words, escaped, in the reader's language.

Everything here comes from a stranger's message, so every string is made
printable (control characters, bidirectional overrides and line
separators shown as escapes) before a template sees it; the templates
escape HTML on top (autoescaping), so nothing of a message is ever markup.
Each reason a message was held for is told in the words the checks
document for it (`trustmilter.signals.FINDINGS`, translated); a reason
without such words (a check's outcome, ``spf.mailfrom.fail``) is shown
by its name. A bounce is told as ``explain-bounce`` tells it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trustmilter.bounce.commands import report
from trustmilter.bounce.explain import explain
from trustmilter.command_support import age, utc
from trustmilter.quarantine.review import HeldMessage
from trustmilter.signals import FINDINGS

AUTHENTICATION_RESULTS = "authentication-results"
# Bytes of a bounce read for its explanation (explain() reads no more itself).
BOUNCE_READ = 256 * 1024


def printable(text: str) -> str:
    """`text` with anything that is not printable as an escape (\\x1b, \\u202e)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


@dataclass(frozen=True, slots=True)
class Reason:
    name: str
    words: str  # what it means, translated; '' when the checks document nothing


@dataclass(frozen=True, slots=True)
class ShownMessage:
    """What the list and the message view show of one held message."""

    queue_id: str
    sender: str  # printable; '' for the null sender (a bounce)
    recipients: tuple[str, ...]
    subject: str
    age: str  # "3h"
    arrived: str  # "2026-11-24 22:30:00Z"
    arrival_time: float
    size: int
    held_by_trustmilter: bool
    marked: bool  # it carries trustmilter's header at all
    level: str
    action: str
    score: str  # "8" or ''
    rules: tuple[str, ...]
    reasons: tuple[Reason, ...]
    authentication_results: tuple[str, ...]

    @property
    def is_bounce(self) -> bool:
        return not self.sender


def reasons_in_words(names: tuple[str, ...], tr: Callable[[str], str]) -> tuple[Reason, ...]:
    return tuple(Reason(printable(name), tr(FINDINGS[name]) if name in FINDINGS else "")
                 for name in names)


def shown(message: HeldMessage, tr: Callable[[str], str]) -> ShownMessage:
    mark = message.mark
    return ShownMessage(
        queue_id=message.queue_id,
        sender=printable(message.sender),
        recipients=tuple(printable(r) for r in message.entry.recipients),
        subject=printable(message.subject),
        age=age(message.age),
        arrived=utc(message.entry.arrival_time),
        arrival_time=message.entry.arrival_time,
        size=message.entry.size,
        held_by_trustmilter=message.held_by_trustmilter,
        marked=mark is not None,
        level=printable(mark.level) if mark else "",
        action=printable(mark.action) if mark else "",
        score=f"{mark.score:g}" if mark and mark.score is not None else "",
        rules=tuple(printable(rule) for rule in mark.rules) if mark else (),
        reasons=reasons_in_words(message.reasons, tr),
        authentication_results=tuple(
            printable(value) for name, value in message.headers
            if name.lower() == AUTHENTICATION_RESULTS),
    )


def header_fields(message: HeldMessage) -> tuple[tuple[str, str], ...]:
    """Every header field, top first, printable."""
    return tuple((printable(name), printable(value)) for name, value in message.headers)


def bounce_reading(raw: bytes, own_domains: tuple[str, ...],
                   tr: Callable[[str], str]) -> tuple[str, ...]:
    """``explain-bounce``'s readable report of the bounce `raw`, line by line.

    Whether it returns our own mail is judged from the policy's own_domains
    only: the marks that prove it (token, DKIM signature, BATV, the
    reporting MTA) need the SMTP session and keys the milter had.
    """
    return tuple(printable(line) for line in report(explain(raw, own_domains), tr).splitlines())
