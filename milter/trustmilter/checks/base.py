"""The one small interface every check implements.

A check is a class with a `name`, the SMTP `stage` whose facts it needs,
the names of checks whose results it reads (`requires`), and
``run(ctx) -> list[CheckResult]``. Its I/O is `ctx.dns`, and for the
rate and reputation checks `ctx.state`. It is built once at start-up from its
own section of the policy (a frozen `Config` dataclass in the same module)
and then called from many threads, so it keeps no per-message state.
A check whose only wait is `ctx.dns` says so with ``dns_only = True``:
the pipeline may then run it in the calling thread while every lookup is
a cache hit (see pipeline.py); one whose only wait is `ctx.state` says
``state_only = True``; a check that says neither always gets a thread.
It does not raise for bad input: malformed mail is a finding. An
unexpected exception is caught by the pipeline and turned into a
`temperror` result for that check alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar, Protocol

from trustmilter.domains import DomainTools
from trustmilter.lookup import Resolver
from trustmilter.model import Connection, Envelope, Facts, Message
from trustmilter.results import CheckResult, Outcome, Results

if TYPE_CHECKING:
    from trustmilter.state.base import StateStore


class Stage(IntEnum):
    """SMTP stages in protocol order; a check runs once its stage's facts exist."""

    CONNECT = 1
    HELO = 2
    MAIL = 3
    RCPT = 4
    DATA = 5  # end of message: headers and body are complete


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check may look at: the facts, earlier results, DNS, domain tools."""

    facts: Facts
    dns: Resolver
    domains: DomainTools
    results: Results  # results of the checks named in `requires` (and any earlier)
    # Shared counters and reputation (rate tiers, learned senders); None offline.
    state: StateStore | None = None
    # Wall-clock seconds (epoch); injectable so rate-window tests control time.
    clock: Callable[[], float] = field(default=time.time)

    @property
    def connection(self) -> Connection:
        return self.facts.connection

    @property
    def envelope(self) -> Envelope:
        return self.facts.envelope

    @property
    def message(self) -> Message | None:
        return self.facts.message


def skipped(result: str, check: str, why: str) -> CheckResult:
    """A SKIPPED result for a module whose checks share one result name;
    `data["check"]` says which of them skipped."""
    return CheckResult(result, Outcome.SKIPPED, why, data={"check": check})


class Check(Protocol):
    """A check module's class. See the module docstring for the contract."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    requires: ClassVar[tuple[str, ...]]

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Examine `ctx` and report; never raise for bad input or DNS trouble."""
        ...
