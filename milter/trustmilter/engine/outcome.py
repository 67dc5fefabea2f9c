"""What the engine answers: a refusal at MAIL/RCPT, or the end-of-message outcome.

`Disposition` is the one vocabulary for what the MTA is to do with the
message; the policy's `Action` (which knows "low-trust") maps onto it
once, here, and the adapter maps it onto Milter codes once, there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from trustmilter.authresults import ForgedHeader
from trustmilter.engine.record import VerdictRecord
from trustmilter.verdict import Action, Reply


class Disposition(StrEnum):
    """What the MTA does with the message (or this step of it)."""

    ACCEPT = "accept"
    QUARANTINE = "quarantine"  # accepted into the MTA's hold queue
    DISCARD = "discard"
    TEMPFAIL = "tempfail"
    REJECT = "reject"

    @classmethod
    def of(cls, action: Action) -> Disposition:
        """The disposition of a policy action: low-trust mail is accepted (marked)."""
        return cls.ACCEPT if action is Action.LOW_TRUST else cls(action.value)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A MAIL FROM or RCPT TO refused: reject (5xx) or tempfail (4xx), with its reply."""

    disposition: Disposition
    reply: Reply | None

    @classmethod
    def of(cls, action: Action, reply: Reply | None) -> Refusal:
        return cls(Disposition.REJECT if action is Action.REJECT else Disposition.TEMPFAIL, reply)


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """End of message: the disposition, its reply, and the header edits to make.

    Headers are inserted at the top in `add_headers` order (RFC 8601 §5:
    ours first) and forgeries removed; both only for delivered mail
    (accept, quarantine). `record` is what the log line, the metrics and
    `trustmilter check` report.
    """

    disposition: Disposition
    reply: Reply | None
    record: VerdictRecord
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[ForgedHeader, ...] = ()
    quarantine_reason: str | None = None
