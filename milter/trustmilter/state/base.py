"""The state interface the rate and reputation checks use, and its errors.

Two things are kept: sliding-window event counts (how many messages a key
sent in the last hour — exact under concurrency, also across processes and,
with Redis, across hosts) and learned reputation (how often mail from a
sender was released from quarantine). Backends: `memory.py` (one process;
the fallback when the real store is down), `sqlite.py` (the embedded
default), `redis.py` (a fleet of MTAs sharing one view).

Every method may raise `StateError` when the backend is unreachable or
fails; callers decide (policy `state.on_error`) and never hang: backends
bound each operation by `StateConfig.timeout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StateError(Exception):
    """The backend is unreachable or failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Reputation:
    """What releases from quarantine taught about one sender address."""

    sender: str  # lower-case address, '' never stored
    releases: int
    last_release: float  # epoch seconds
    reasons: tuple[str, ...] = ()  # verdict reasons of the released messages, deduplicated


class StateStore(Protocol):
    def hit(self, key: str, now: float, window: float) -> int:
        """Record one event for `key` at `now`; the events in (now - window, now],
        this one included. Atomic: N concurrent calls return 1..N exactly once each."""
        ...

    def count(self, key: str, now: float, window: float) -> int:
        """The events for `key` in (now - window, now], recording nothing."""
        ...

    def add_release(self, sender: str, reasons: tuple[str, ...], now: float) -> Reputation:
        """Count one release of mail from `sender`; its reputation afterwards."""
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

    def close(self) -> None:
        """Release connections and files."""
        ...
