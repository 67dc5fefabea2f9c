"""The one small interface every check implements.

A check is a class that describes itself once, in a `CheckSpec` (its name,
the result name it reports under, the SMTP stage whose facts it needs, the
checks whose results it reads, what it waits on, its RFC 8601 method and
the findings it may report with their meanings), and has
``run(ctx) -> list[CheckResult]``. The registry (registry.py) derives the
rest from the specs: the signal catalogue, the Authentication-Results
methods, which checks run where. Its I/O is `ctx.dns`, and for the rate,
reputation and bounce checks `ctx.state`. It is built once at start-up from
its own section of the policy (a frozen `Config` dataclass in the same
module), only when that section is enabled, and then called from many
threads, so it keeps no per-message state. It does not raise for bad
input: malformed mail is a finding. An unexpected exception is caught by
the pipeline and turned into a `temperror` result for that check alone.

What a check learnt that a later check needs (the domain SPF evaluated,
the d= of a DKIM signature) travels as typed, frozen evidence on its
results (`CheckResult.evidence`), defined in the producing module together
with the function that reads it back.

A check also says which way of mail it is for (`CheckSpec.direction`):
inbound mail from strangers, which is judged (the default), outbound mail
from our own clients (trusted networks, local submission, SASL users),
which is not judged but may still be refused by a rule on what such a
check reports (a notification sent to a support address), or both.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Generic, Literal, Protocol, TypeVar

from trustmilter.domains import DomainTools
from trustmilter.lookup import Resolver
from trustmilter.mail.identity import Identities
from trustmilter.model import Connection, Envelope, Facts, Message
from trustmilter.results import AuthMethod, CheckResult, Outcome, Results

if TYPE_CHECKING:
    from trustmilter.state.base import StateStore


class Direction(StrEnum):
    """Which way a message goes: from a stranger to us, or from our own clients."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


# Which mail a check runs on: "inbound" (from strangers: the trust checks),
# "outbound" (from our own clients only) or "both".
CheckDirection = Literal["inbound", "outbound", "both"]


class Stage(IntEnum):
    """SMTP stages in protocol order; a check runs once its stage's facts exist."""

    CONNECT = 1
    HELO = 2
    MAIL = 3
    RCPT = 4
    DATA = 5  # end of message: headers and body are complete


# Not frozen: one is built for every check of every message, and a frozen
# dataclass sets each field through object.__setattr__. Nothing assigns to
# one; a check that needs another view makes one (dataclasses.replace).
@dataclass(slots=True)
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
    # The sender behind SRS, BATV, VERP and sub-addresses (the policy's
    # address_separators): one identity for rate keys, support addresses
    # and the allow-list.
    identities: Identities = field(default=Identities())

    @property
    def connection(self) -> Connection:
        return self.facts.connection

    @property
    def envelope(self) -> Envelope:
        return self.facts.envelope

    @property
    def message(self) -> Message | None:
        return self.facts.message


# What a check waits on, which decides where the pipeline may run it:
# "dns": only `ctx.dns`; it may run in the calling thread while every lookup
#        is a cache hit (see pipeline.py);
# "state": only `ctx.state`; it may run in the calling thread while the
#        store's longest wait fits before the deadline;
# "cpu": anything else; it always gets a thread of the pool.
WaitsOn = Literal["dns", "state", "cpu"]


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """Everything about a check that is not its code, said once."""

    name: str  # unique: "spf.mailfrom", "names.envelope"
    result: str  # the result name it reports under; checks of one module may share it
    stage: Stage
    requires: tuple[str, ...] = ()  # checks whose results it reads
    waits_on: WaitsOn = "cpu"
    # RFC 8601 method its results are reported under in Authentication-Results,
    # or None when they do not belong there.
    method: AuthMethod | None = None
    # Finding name -> what it means (for `policy show` and the signal catalogue).
    findings: Mapping[str, str] = field(default_factory=dict)
    # It writes to the state store while it runs (the rate count: atomic, and
    # its own answer). Every other write is an effect on its results, applied
    # by the engine after the verdict (state/effects.py).
    writes_state: bool = False
    # Which mail it runs on. Outbound mail comes from our own clients: such a
    # check sees the envelope and, at end of message, the header only (our
    # own mail is not read whole), and no inbound check's results.
    direction: CheckDirection = "inbound"

    def __post_init__(self) -> None:
        # A read-only copy: a spec is shared by every thread and never changes.
        object.__setattr__(self, "findings", MappingProxyType(dict(self.findings)))

    def runs_on(self, direction: Direction) -> bool:
        """Whether the check runs on mail going `direction`."""
        return self.direction in ("both", direction.value)


ConfigT = TypeVar("ConfigT")


class BaseCheck(ABC, Generic[ConfigT]):
    """The common part of every check class: built from its section's Config,
    and its name, stage and requirements read from its `spec`."""

    spec: ClassVar[CheckSpec]
    # Copied from `spec` when the class is made: the pipeline reads them for
    # every check of every message, and a class attribute is a plain lookup.
    name: ClassVar[str]
    stage: ClassVar[Stage]
    requires: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls.name, cls.stage, cls.requires = spec.name, spec.stage, spec.requires

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    def explainable(self) -> tuple[str, ...]:
        """The signal patterns this check's results may explain (CheckResult.explains),
        as configured: the engine gives no early verdict that they could undo."""
        return ()

    @abstractmethod
    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Examine `ctx` and report; never raise for bad input or DNS trouble."""


def skipped(result: str, why: str) -> CheckResult:
    """A SKIPPED result: the check did not apply to this message."""
    return CheckResult(result, Outcome.SKIPPED, why)


class Check(Protocol):
    """A check class as the pipeline sees it. See the module docstring for the contract."""

    spec: ClassVar[CheckSpec]

    @property
    def name(self) -> str: ...

    @property
    def stage(self) -> Stage: ...

    @property
    def requires(self) -> tuple[str, ...]: ...

    def explainable(self) -> tuple[str, ...]:
        """The signal patterns its results may explain."""
        ...

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Examine `ctx` and report; never raise for bad input or DNS trouble."""
        ...
