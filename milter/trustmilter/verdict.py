"""What the policy engine decides for a message."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """Actions, in `SEVERITY` order: when several apply, the most severe wins."""

    ACCEPT = "accept"
    LOW_TRUST = "low-trust"  # accepted, marked with the low-trust header
    QUARANTINE = "quarantine"
    DISCARD = "discard"
    TEMPFAIL = "tempfail"
    REJECT = "reject"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def smtp_action(self) -> str:
        """The action as the MTA sees it: low-trust mail is accepted."""
        return "accept" if self is Action.LOW_TRUST else self.value


_SEVERITY = {action: rank for rank, action in enumerate(Action)}


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: basic code (RFC 5321), enhanced code (RFC 3463), text."""

    code: int
    dsn: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.dsn} {self.text}"


@dataclass(frozen=True, slots=True)
class RuleHit:
    """A policy rule that matched; `shadow` ones are reported but do not act."""

    rule: str
    action: Action | None
    score: float
    shadow: bool
    signals: tuple[str, ...]  # the signals that made it match
    reason: str = ""  # the rule's own explanation, for logs and reports


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reply: Reply | None  # for tempfail/reject; None otherwise
    score: float
    reasons: tuple[str, ...]  # signal names that raised the score or forced the action
    hits: tuple[RuleHit, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # verdict headers the policy asks to add
    quarantine_reason: str = ""
    # Signals present but explained by a trusted party's pass (CheckResult.explains):
    # neither scored nor matched by rules.
    explained: tuple[str, ...] = ()
