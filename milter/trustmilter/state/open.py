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
a line per call.

Merging an outage back (``memory``). Every write made in memory is also
kept in an `OutageJournal` (journal.py: bounds, tokens, how to add a
write method). The caller that probes the returning backend replays the
journal into it, oldest first, before its own call; callers arriving
meanwhile wait for it a moment (`merge_wait`, so the merge outpaces
them), then count in memory and journal, and the replay takes their
entries too. The backend takes new writes only once, under the same lock
that journals, the journal is found empty: so every write of the outage
reaches the backend exactly once and before any later write of this
process. If the backend fails again during the replay, the unconfirmed
rest stays journaled for the next probe. Then one line:
``state: backend back after 12.0 s, merged 40 events, 2 releases,
0 bounces from the outage``. The journal lives in this process's memory:
a restart during an outage loses it.

What a count means during an outage: the fallback knows only the
outage's own events (it starts empty with each outage), not what the
backend held before it, so a rate count in an outage is the sender's
count since the outage began, in this process; once merged, the backend
holds both and counts them together, with each event at its own time.
Reputations and bounces read during an outage likewise show only what
was learned in it.

Several processes (``milter.processes`` > 1) each journal and replay
their own writes under their own tokens. Exactness holds across them
because every journaled write commutes with the other processes' writes:
a rate event is one member of a sorted set (SQLite: one row) at its own
time; a release adds one, keeps the later last_release and the union of
reasons; a spam mark likewise (the later last_spam_mark); a bounce report
adds one and keeps the earlier first_seen and the later report's details;
a sent-message record is keyed by its digest, so writing it again changes
nothing. A forget is ordered only among the writes of its own process, and
so is a spam mark's cancelling of the releases recorded before it arrives.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, cast

from trustmilter.config.state import StateConfig
from trustmilter.state.base import HardBounce, Reputation, SentMessage, StateError, StateStore
from trustmilter.state.journal import (
    JournalEntry,
    MergeSummary,
    OutageJournal,
    apply,
    apply_plain,
)
from trustmilter.state.memory import MemoryStore

T = TypeVar("T")

RETRY_INTERVAL = 5.0  # seconds between tries of a backend that is down
# Writes kept from one outage at most (a few hundred bytes each): an hour of
# 28 messages a second, the rate window's worth for a busy MX.
JOURNAL_LIMIT = 100_000
MERGE_BATCH = 256  # entries taken from the journal per step of a merge
# Seconds a write waits for a merge in progress before it is journaled
# instead (the default state.timeout: no longer than a slow backend).
MERGE_WAIT = 0.5


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


class _Route(enum.Enum):
    """Where one call goes."""

    BACKEND = "backend"  # up: the backend
    PROBE = "probe"  # down, and this caller tries it (merging the journal first)
    FALLBACK = "fallback"  # down: memory (and the journal) or a fast StateError


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
        clock: Callable[[], float] = time.time,
        journal_limit: int = JOURNAL_LIMIT,
        merge_wait: float = MERGE_WAIT,
    ) -> None:
        self.store = store
        self.on_error = on_error
        self.fallback = MemoryStore()
        self.journal = OutageJournal(journal_limit)
        self._log = log
        self._retry_interval = retry_interval
        self._monotonic = monotonic
        self._clock = clock  # epoch seconds: when a journaled write stops mattering
        self._lock = threading.Lock()
        self._merged = threading.Condition(self._lock)  # notified when a merge ends
        self._merge_wait = merge_wait
        self._down_since: float | None = None  # monotonic time of the first failure
        self._next_try = 0.0
        self._last_error: StateError | None = None
        self._merger: int | None = None  # the thread probing (and merging) right now
        self._replaying = False  # the backend has taken part of the journal in this probe

    @property
    def down(self) -> bool:
        """True while the backend is taken to be down."""
        with self._lock:
            return self._down_since is not None

    @property
    def pending(self) -> int:
        """Writes journaled and not yet merged into the backend."""
        with self._lock:
            return len(self.journal)

    # ---- reads: the backend, or memory while it is down -----------------------

    def count(self, key: str, now: float, window: float) -> int:
        return self._call(lambda store: store.count(key, now, window))

    def reputation(self, sender: str) -> Reputation | None:
        return self._call(lambda store: store.reputation(sender))

    def reputations(self) -> list[Reputation]:
        return self._call(lambda store: store.reputations())

    def hard_bounces(self, now: float) -> list[HardBounce]:
        return self._call(lambda store: store.hard_bounces(now))

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        return self._call(lambda store: store.sent_messages(digests, now))

    # ---- writes: journaled while the backend is down (journal.py) --------------

    def hit(self, key: str, now: float, window: float) -> int:
        return cast(int, self._write("hit", key, now, window, expires=now + window))

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        return cast(Reputation, self._write("add_release", sender, reasons, now, lapse,
                                            expires=now + lapse))

    def add_spam_mark(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        return cast(Reputation, self._write("add_spam_mark", sender, reasons, now, lapse,
                                            expires=now + lapse))

    def forget(self, sender: str) -> bool:
        return cast(bool, self._write("forget", sender))

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        return cast(HardBounce, self._write("add_bounce", bounce, expires=bounce.expires))

    def forget_bounce(self, recipient: str) -> bool:
        return cast(bool, self._write("forget_bounce", recipient))

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        self._write("remember_sent", sent, max_entries, expires=sent.expires)

    def close(self) -> None:
        self.store.close()
        self.fallback.close()

    # ---- the outage state machine ------------------------------------------

    def _call(self, operation: Callable[[StateStore], T]) -> T:
        """A read (or an unjournaled call): the backend if it may be tried, else memory."""
        return self._run(operation, operation, None)

    def _write(self, operation: str, *args: Any, expires: float = math.inf) -> Any:
        """`operation(*args)` as a write: with a token on the backend, journaled in memory."""
        entry = self.journal.entry(operation, args, expires)
        return self._run(
            lambda store: apply(store, entry), lambda store: apply_plain(store, entry), entry
        )

    def _run(
        self,
        on_backend: Callable[[StateStore], T],
        in_memory: Callable[[StateStore], T],
        entry: JournalEntry | None,
    ) -> T:
        with self._lock:
            route = self._route(write=entry is not None)
            if route is _Route.FALLBACK:
                if self.on_error == "memory":
                    return self._in_memory(in_memory, entry)
                last = self._last_error
        if route is _Route.FALLBACK:
            raise StateError(
                f"{last} (backend down, next try within {self._retry_interval:g} s)"
            )
        if route is _Route.PROBE:
            return self._probe(on_backend, in_memory, entry)
        try:
            return on_backend(self.store)
        except StateError as exc:
            return self._failed(exc, in_memory, entry)

    def _route(self, *, write: bool) -> _Route:
        """Where a call goes now (the caller holds the lock).

        A write that meets a merge under way (the backend is taking the journal)
        waits for it, up to `merge_wait`: writes journaled faster than the merge
        replays them would keep it from ever finishing, and most of them can go
        to the backend a moment later. A probe that is still waiting for an
        answer is not waited for: the backend may be hung.
        """
        if write and self._replaying and self._merger != threading.get_ident():
            self._merged.wait_for(lambda: not self._replaying, timeout=self._merge_wait)
        if self._down_since is None:
            return _Route.BACKEND
        now = self._monotonic()
        if self._merger is not None or now < self._next_try:
            return _Route.FALLBACK
        self._next_try = now + self._retry_interval  # the other callers do not probe
        self._merger = threading.get_ident()
        return _Route.PROBE

    def _probe(
        self,
        on_backend: Callable[[StateStore], T],
        in_memory: Callable[[StateStore], T],
        entry: JournalEntry | None,
    ) -> T:
        """Try the backend: merge the journal first (it happened before this call),
        then this call, then what was journaled meanwhile; then it is up."""
        try:
            self._merge(verified=False)
            result = on_backend(self.store)
        except StateError as exc:
            return self._failed(exc, in_memory, entry, probing=True)
        except BaseException:
            self._give_up_probe()
            raise
        try:
            self._merge(verified=True)
        except StateError as exc:
            # This call reached the backend; the rest of the journal waits for the next probe.
            self._mark_down(exc, probing=True)
        except BaseException:
            self._give_up_probe()
            raise
        return result

    def _merge(self, *, verified: bool) -> None:
        """Replay the journal until it is empty, then declare the backend up.
        `verified`: the backend has answered this probe already; without that,
        an empty journal returns without declaring anything."""
        while True:
            with self._lock:
                if self._down_since is None:
                    return  # an earlier round of this probe finished the merge
                batch = self.journal.take(MERGE_BATCH, self._clock())
                if not batch and verified:
                    lasted, summary = self._back_up()
                    break
            if not batch:
                return
            self._replay(batch)
            verified = True
        if self.on_error == "memory":
            losses = summary.losses()
            self._log.info("state: backend back after %.1f s, merged %s from the outage%s",
                           lasted, summary.describe(), f"; {losses}" if losses else "")
        else:
            self._log.info("state backend answers again after %.1f s", lasted)

    def _replay(self, batch: list[JournalEntry]) -> None:
        """Apply `batch` to the backend in order; on StateError the unconfirmed rest
        goes back to the front of the journal and the error propagates."""
        applied: list[JournalEntry] = []
        done = 0
        try:
            for entry in batch:
                try:
                    apply(self.store, entry)
                    applied.append(entry)
                    if not self._replaying:
                        self._now_replaying()
                except StateError:
                    raise
                except Exception:
                    # Not an outage but an entry the backend cannot take (a bug or
                    # a damaged record): retrying it would stop every later merge.
                    self._unmergeable(entry)
                done += 1
        finally:
            with self._lock:
                self.journal.confirm(applied)
                self.journal.give_back(batch[done:])

    def _now_replaying(self) -> None:
        """The backend took a journaled write: from now on writes wait for the merge."""
        with self._lock:
            if self._merger == threading.get_ident():
                self._replaying = True

    def _unmergeable(self, entry: JournalEntry) -> None:
        """Drop `entry` (called while handling its exception); the first is logged."""
        with self._lock:
            first = self.journal.lose()
        if first:
            self._log.exception("state: a journaled %s cannot be merged; dropped",
                                entry.operation)

    def _back_up(self) -> tuple[float, MergeSummary]:
        """The outage is over (the caller holds the lock, the journal is empty)."""
        assert self._down_since is not None
        lasted = self._monotonic() - self._down_since
        self._down_since = None
        self._end_probe()
        self.fallback = MemoryStore()  # the next outage counts only its own events
        return lasted, self.journal.end_outage()

    def _in_memory(self, operation: Callable[[StateStore], T], entry: JournalEntry | None) -> T:
        """`operation` on the fallback, journaled if a write (the caller holds the lock:
        the journal and the decision to use it are one step)."""
        if entry is not None and self.journal.append(entry, self._clock()):
            self._log.warning(
                "state: outage journal full (%d writes); the oldest give way and will"
                " not be merged", self.journal.limit)
        return operation(self.fallback)

    def _failed(
        self,
        exc: StateError,
        in_memory: Callable[[StateStore], T],
        entry: JournalEntry | None,
        *,
        probing: bool = False,
    ) -> T:
        """The backend failed this call: as on_error says, journaling it in the
        same step that marks the backend down, so no merge can miss it."""
        with self._lock:
            first = self._note_failure(exc, probing)
            if self.on_error == "memory":
                result = self._in_memory(in_memory, entry)
        if first:
            self._log_down(exc)
        if self.on_error != "memory":
            raise exc
        return result

    def _mark_down(self, exc: StateError, *, probing: bool) -> None:
        """Note a failure outside any call's own fate (a merge after the call succeeded)."""
        with self._lock:
            first = self._note_failure(exc, probing)
        if first:
            self._log_down(exc)

    def _note_failure(self, exc: StateError, probing: bool) -> bool:
        """Record a failure (the caller holds the lock); True if it starts an outage."""
        now = self._monotonic()
        self._next_try = now + self._retry_interval
        self._last_error = exc
        if probing and self._merger == threading.get_ident():
            self._end_probe()
        if self._down_since is not None:
            return False
        self._down_since = now
        return True

    def _give_up_probe(self) -> None:
        """A probe ended by something other than StateError: let the next one try."""
        with self._lock:
            if self._merger == threading.get_ident():
                self._end_probe()

    def _end_probe(self) -> None:
        """No probe or merge under way any more (the caller holds the lock)."""
        self._merger = None
        self._replaying = False
        self._merged.notify_all()

    def _log_down(self, exc: StateError) -> None:
        then = "answering 4xx (tempfail)" if self.on_error == "tempfail" else "counting in memory"
        self._log.warning("state backend down: %s; %s until it answers again", exc, then)
