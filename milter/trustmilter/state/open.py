"""Open the store the policy's `state:` section names, and keep mail flowing when it fails.

`open_store(config)` builds the backend: memory, SQLite (the file and its
schema are created now, so a path that cannot work stops start-up with
one clear line) or Redis (the URL is checked now; the server is first
reached by the first operation, so a Redis outage at start-up is handled
like any other outage).

`ResilientStore(store, on_error, log)` is what the checks should get. On
a `StateError` it either re-raises (``tempfail``: the session answers
451 4.3.0 and the sender retries) or answers from an in-process
`MemoryStore` (``memory``: mail flows, counted per process). While the
backend is down it is tried again at most every `retry_interval` seconds
— one caller probes, the others do not wait on a dead server — and
calls in between fail fast or go to memory at once. It logs one warning
when the backend goes down and one info line when it answers again, not
a line per call. What was counted or learned in memory during an outage
stays in memory: it is not copied to the backend when it is back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from trustmilter.config.state import StateConfig
from trustmilter.state.base import HardBounce, Reputation, SentMessage, StateError, StateStore
from trustmilter.state.memory import MemoryStore

T = TypeVar("T")

RETRY_INTERVAL = 5.0  # seconds between tries of a backend that is down


def open_store(config: StateConfig) -> StateStore:
    """The backend `config` names; StateError (one line) if it cannot be opened."""
    if config.backend == "memory":
        return MemoryStore()
    if config.backend == "sqlite":
        from trustmilter.state.sqlite import SqliteStore

        return SqliteStore(config.sqlite_path, config.timeout)
    # Imported here: a host on SQLite never needs the redis package loaded.
    from trustmilter.state.redis import RedisStore

    return RedisStore(config.redis_url, config.key_prefix, config.timeout)


class ResilientStore:
    """A StateStore that survives its backend's outages as the policy says."""

    def __init__(
        self,
        store: StateStore,
        on_error: Literal["tempfail", "memory"],
        log: logging.Logger,
        *,
        retry_interval: float = RETRY_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.on_error = on_error
        self.fallback = MemoryStore()
        self._log = log
        self._retry_interval = retry_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the first failure
        self._next_try = 0.0
        self._last_error: StateError | None = None

    @property
    def down(self) -> bool:
        """True while the backend is taken to be down."""
        with self._lock:
            return self._down_since is not None

    def hit(self, key: str, now: float, window: float) -> int:
        return self._call(lambda store: store.hit(key, now, window))

    def count(self, key: str, now: float, window: float) -> int:
        return self._call(lambda store: store.count(key, now, window))

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        return self._call(lambda store: store.add_release(sender, reasons, now, lapse))

    def add_spam_mark(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        return self._call(lambda store: store.add_spam_mark(sender, reasons, now, lapse))

    def reputation(self, sender: str) -> Reputation | None:
        return self._call(lambda store: store.reputation(sender))

    def reputations(self) -> list[Reputation]:
        return self._call(lambda store: store.reputations())

    def forget(self, sender: str) -> bool:
        return self._call(lambda store: store.forget(sender))

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        return self._call(lambda store: store.add_bounce(bounce))

    def hard_bounces(self, now: float) -> list[HardBounce]:
        return self._call(lambda store: store.hard_bounces(now))

    def forget_bounce(self, recipient: str) -> bool:
        return self._call(lambda store: store.forget_bounce(recipient))

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        self._call(lambda store: store.remember_sent(sent, max_entries))

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        return self._call(lambda store: store.sent_messages(digests, now))

    def close(self) -> None:
        self.store.close()
        self.fallback.close()

    # ---- the outage state machine ------------------------------------------

    def _call(self, operation: Callable[[StateStore], T]) -> T:
        """`operation` on the backend if it may be tried, else as on_error says."""
        probe = self._may_try()
        if probe is None:
            return self._degraded(operation, None)
        try:
            result = operation(self.store)
        except StateError as exc:
            self._failed(exc)
            return self._degraded(operation, exc)
        if probe:
            self._answered()
        return result

    def _may_try(self) -> bool | None:
        """False: backend up, use it; True: down, this caller probes it; None: skip it."""
        with self._lock:
            if self._down_since is None:
                return False
            now = self._monotonic()
            if now < self._next_try:
                return None
            self._next_try = now + self._retry_interval  # the other callers do not probe
            return True

    def _failed(self, exc: StateError) -> None:
        """Note a failure; the first of an outage is logged."""
        with self._lock:
            now = self._monotonic()
            self._next_try = now + self._retry_interval
            self._last_error = exc
            if self._down_since is not None:
                return
            self._down_since = now
        then = "answering 4xx (tempfail)" if self.on_error == "tempfail" else "counting in memory"
        self._log.warning("state backend down: %s; %s until it answers again", exc, then)

    def _answered(self) -> None:
        """A probe succeeded: the outage is over; logged once."""
        with self._lock:
            if self._down_since is None:
                return
            lasted = self._monotonic() - self._down_since
            self._down_since = None
        self._log.info("state backend answers again after %.1f s", lasted)

    def _degraded(self, operation: Callable[[StateStore], T], exc: StateError | None) -> T:
        """What on_error says to do while the backend is down."""
        if self.on_error == "memory":
            return operation(self.fallback)
        if exc is not None:
            raise exc
        with self._lock:
            last = self._last_error
        raise StateError(f"{last} (backend down, next try within {self._retry_interval:g} s)")
