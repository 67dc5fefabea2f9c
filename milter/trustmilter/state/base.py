"""The state interface the rate and reputation checks use, and its errors.

Three things are kept: sliding-window event counts (how many messages a
key sent in the last hour — exact under concurrency, also across processes
and, with Redis, across hosts), learned reputation (how often mail from a
sender was released from quarantine) and hard bounces (recipients our own
outbound mail could not reach: 5.1.x, SEED-RULES §6), kept for a policy-set
time after the last report. Backends: `memory.py` (one process;
the fallback when the real store is down), `sqlite.py` (the embedded
default), `redis.py` (a fleet of MTAs sharing one view).

Every method may raise `StateError` when the backend is unreachable or
fails; callers decide (policy `state.on_error`) and never hang: backends
bound each operation by `StateConfig.timeout`. Writes made in memory
while the backend was down are merged back into it when it returns
(`journal.py`, `open.ResilientStore`); a backend whose failures can hide
a success adds ``replay_<write>(token, ...)`` variants for that.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol


class StateError(Exception):
    """The backend is unreachable or failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Reputation:
    """What releases from quarantine taught about one sender address."""

    sender: str  # lower-case address, '' never stored
    releases: int
    last_release: float  # epoch seconds
    reasons: tuple[str, ...] = ()  # verdict reasons of the released messages, deduplicated


@dataclass(frozen=True, slots=True)
class HardBounce:
    """A recipient that bounced our own outbound mail permanently (5.1.x).

    Several reports for one recipient merge: `bounces` counts them,
    `first_seen` stays, everything else is the latest report's.
    """

    recipient: str  # lower-case address that could not be reached
    status: str  # RFC 3463 code of the latest report, e.g. "5.1.1"
    cause: str  # plain words: "user unknown", "host unknown", ...
    reporting_mta: str  # who reported it ('' unknown)
    sender: str  # our address whose mail bounced ('' unknown)
    message_id: str  # the returned message's Message-ID ('' unknown)
    diagnostic: str  # the remote server's words, clipped ('' none)
    client: str  # the IP address that delivered the bounce to us
    first_seen: float  # epoch seconds
    last_seen: float
    expires: float  # forgotten after this, unless reported again
    bounces: int = 1

    def as_json(self) -> dict[str, Any]:
        """The record as a JSON object (also how the stores keep it)."""
        return asdict(self)


def decode_bounce(fields: Any) -> HardBounce:
    """A HardBounce from its stored JSON object; StateError when it cannot be one
    (a record written by another version, or damaged)."""
    try:
        record = HardBounce(**fields)
        return replace(record, first_seen=float(record.first_seen),
                       last_seen=float(record.last_seen), expires=float(record.expires),
                       bounces=int(record.bounces))
    except (TypeError, ValueError) as exc:
        raise StateError(f"a stored hard-bounce record cannot be read: {exc}") from exc


def is_current(reputation: Reputation, now: float, lapse: float) -> bool:
    """Whether what was learned still counts: its last release is under `lapse` seconds old."""
    return reputation.last_release > now - lapse


class StateStore(Protocol):
    def hit(self, key: str, now: float, window: float) -> int:
        """Record one event for `key` at `now`; the events in (now - window, now],
        this one included. Atomic: N concurrent calls return 1..N exactly once each."""
        ...

    def count(self, key: str, now: float, window: float) -> int:
        """The events for `key` in (now - window, now], recording nothing."""
        ...

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one release of mail from `sender`; its reputation afterwards.
        A reputation whose last release is `lapse` seconds old or older has
        lapsed: this release starts it afresh (see `is_current`)."""
        ...

    def reputation(self, sender: str) -> Reputation | None:
        """What is known about `sender`, or None."""
        ...

    def reputations(self) -> list[Reputation]:
        """Every sender with a reputation, most releases first."""
        ...

    def forget(self, sender: str) -> bool:
        """Drop what was learned about `sender`; True if there was anything."""
        ...

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        """Record one report (`bounces` 1, first_seen = last_seen); the merged record."""
        ...

    def hard_bounces(self, now: float) -> list[HardBounce]:
        """The records not expired at `now`, latest report first."""
        ...

    def forget_bounce(self, recipient: str) -> bool:
        """Drop the record of `recipient`; True if there was one."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
