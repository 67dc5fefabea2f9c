"""The record of one decision: what the verdict line, the metrics and `check` report.

One is made for every decision the engine gives: the end of a message,
a recipient refused at RCPT TO, a message refused early (once, at its
first recipient), and a refusal no policy rule made (too big, busy).
`pairs()` is the verdict line's content, in the order of
daemon/verdictlog.py's keys.

A finding is named once in the line however many results report it (the
envelope sender and the From field both "no-reply", two lists listing
the client): the line says which signals the message showed; each
result's details are `trustmilter check`'s. Forged fields removed from a
delivered message are named with their count, and the authserv-ids the
removed Authentication-Results fields claimed, escaped and clipped: the
sender wrote them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trustmilter.authresults import HEADER_NAME, ForgedHeader
from trustmilter.checks import rate
from trustmilter.checks.base import Direction
from trustmilter.mail.authres_syntax import read_authserv_id
from trustmilter.results import Results
from trustmilter.verdict import Verdict

if TYPE_CHECKING:
    from trustmilter.engine.client import Client, ClientKind

# Of the authserv-ids forged fields claimed: how many, and how much of each, to name.
SHOWN_CLAIMS = 3
CLAIM_LENGTH = 64


# Every line carries these keys, in this order; check results follow
# (``iprev=pass spf.mailfrom=fail dkim=pass,fail ...``), then any check's summary
# (``bounce_summary="own; 5.1.1 <a@example.net> user unknown"``), then, when a
# rate tier fired, the key and count that decided it
# (``rate_key=from:robot@example.com|ticket:ref:4711 rate_count=23``), before `findings`;
# forged fields removed (``removed=Authentication-Results:2 removed_authserv_id=...``)
# come just before `findings`, on the lines of messages that had any.
# A result named like one of these keys is written with "_check" after it
# (``helo=mail.example.com ... helo_check=pass``).
LEADING_KEYS = ("action", "reply", "client", "client_name", "helo", "from", "rcpt")
TRAILING_KEYS = ("findings", "score", "rules", "stage", "ms")


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """One decision about one message (or one recipient of it)."""

    queue_id: str
    verdict: Verdict
    results: Results
    stage: str  # "mail", "rcpt" or "eom": where the MTA got the answer
    client: Client
    kind: ClientKind
    mail_from: str
    rcpts: tuple[str, ...]
    elapsed_ms: int
    # Outbound: our own client's mail, on which the outbound checks ran (the line
    # says direction=outbound). Inbound (judged) and None (passed) say nothing.
    direction: Direction | None = None
    # Forged fields removed from the delivered message (engine/edits.py).
    forged: tuple[ForgedHeader, ...] = ()

    def pairs(self) -> Iterator[tuple[str, str]]:
        """The verdict line's keys and values, in order."""
        yield "action", self.verdict.action.value
        yield "reply", str(self.verdict.reply) if self.verdict.reply else ""
        yield "client", str(self.client.ip) if self.client.ip else "local"
        yield "client_name", self.client.hostname or ""
        yield "helo", self.client.helo or ""
        yield "from", f"<{self.mail_from}>"
        yield "rcpt", ",".join(f"<{r}>" for r in self.rcpts)
        yield "client_kind", self.kind.value
        if self.direction is Direction.OUTBOUND:
            yield "direction", self.direction.value
        outcomes: dict[str, list[str]] = {}
        for result in self.results.all():
            outcomes.setdefault(result.check, []).append(result.outcome)  # a StrEnum is its value
        # A result named like a connection field (the `helo` check) gets a suffix.
        yield from (
            (f"{check}_check" if check in LEADING_KEYS else check, ",".join(values))
            for check, values in outcomes.items()
        )
        # A check's one-line summary (the bounce check's), after all outcomes.
        for result in self.results.all():
            if result.summary:
                yield f"{result.check}_summary", result.summary
        # The sender identity and count behind a rate tier (none on ordinary mail).
        decided = rate.deciding(self.results)
        if decided is not None:
            yield "rate_key", decided.key
            yield "rate_count", str(decided.count)
        if self.verdict.explained:
            # Signals a trusted party's pass explained (neither scored nor ruled on).
            yield "explained", ",".join(self.verdict.explained)
        if self.forged:
            yield from _removed(self.forged)
        # Each finding once, in the order first reported.
        yield "findings", ",".join(dict.fromkeys(
            f.name for r in self.results.all() for f in r.findings))
        yield "score", f"{self.verdict.score:g}"
        yield "rules", ",".join(
            f"{hit.rule}(shadow)" if hit.shadow else hit.rule for hit in self.verdict.hits
        )
        yield "stage", self.stage
        yield "ms", str(self.elapsed_ms)


def _removed(forged: tuple[ForgedHeader, ...]) -> Iterator[tuple[str, str]]:
    """``removed`` (each field name and how many) and, for forged A-R fields,
    ``removed_authserv_id`` (the ids they claimed, as written, escaped)."""
    counts: dict[str, int] = {}
    for field in forged:
        counts[field.name] = counts.get(field.name, 0) + 1
    yield "removed", ",".join(f"{name}:{count}" for name, count in counts.items())
    claims = dict.fromkeys(
        _escaped(claim[:CLAIM_LENGTH]) for field in forged if field.name == HEADER_NAME
        if (claim := read_authserv_id(field.value)) is not None
    )
    if claims:
        shown = list(claims)[:SHOWN_CLAIMS]
        more = len(claims) - len(shown)
        yield "removed_authserv_id", ",".join(shown) + (f",+{more}" if more else "")


def _escaped(text: str) -> str:
    """`text` with anything but printable characters (controls, U+2028, U+0085, a
    comma that would split the list) written as ``\\xNN``/``\\uNNNN``."""
    return "".join(c if c.isprintable() and c not in ",\\" else
                   c.encode("unicode_escape").decode("ascii") if c != "," else "\\x2c"
                   for c in text)
