"""The one small interface every check implements.

A check is a class with a `name`, the SMTP `stage` whose facts it needs,
the names of checks whose results it reads (`requires`), and
``run(ctx) -> list[CheckResult]``. It is built once at start-up from its
own section of the policy (a frozen `Config` dataclass in the same module)
and then called from many threads, so it keeps no per-message state.
Its only I/O is `ctx.dns`. It does not raise for bad input: malformed mail
is a finding. An unexpected exception is caught by the pipeline and turned
into a `temperror` result for that check alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol

from trustmilter.domains import DomainTools
from trustmilter.lookup import Resolver
from trustmilter.model import Connection, Envelope, Facts, Message
from trustmilter.results import CheckResult, Results


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

    @property
    def connection(self) -> Connection:
        return self.facts.connection

    @property
    def envelope(self) -> Envelope:
        return self.facts.envelope

    @property
    def message(self) -> Message | None:
        return self.facts.message


class Check(Protocol):
    """A check module's class. See the module docstring for the contract."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    requires: ClassVar[tuple[str, ...]]

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Examine `ctx` and report; never raise for bad input or DNS trouble."""
        ...
