"""What was written while the state backend was down, kept to be merged into it later.

While `ResilientStore` (open.py) answers from memory, every write it takes
— a rate `hit`, `add_release`, `add_spam_mark`, `forget`, `add_bounce`,
`forget_bounce`, `remember_sent` — is also appended to an `OutageJournal`
as a `JournalEntry`: the name of the StateStore method and its arguments
exactly as called (a hit keeps its own time, so a merged event lands
where it happened in the sliding window). When the backend answers again
the entries are replayed into it in order, through the same method,
before any new write reaches it.

Exactly once. Every entry carries a token unique across processes and
restarts (a random journal id, drawn again in a process forked from the
one that drew it, and a sequence number). `apply` runs an entry through
the backend's ``replay_<method>(token, *args)`` when the backend has one,
else through ``<method>(*args)``. A backend whose failures can hide a
success (Redis: a command that timed out on our side may still run once
the server wakes up) offers ``replay_`` variants that apply a token at
most once: a rate event is stored under the token as its member, so
adding it again changes nothing; a release, spam mark or bounce first
sets a marker key for the token. A write that is idempotent by itself
needs no variant (`remember_sent`: the same record under the same
digest). `ResilientStore` sends its live writes through `apply` too, so a
write that failed ambiguously, was journaled and is replayed later still
counts once. A backend whose failures are clean (SQLite: a locked
database or a failed COMMIT applies nothing) needs no variant. An entry
leaves the journal only once the backend confirmed it; when the backend
fails during a replay, the unconfirmed rest stays, in order, for the next
try. (On Redis this costs a live write nothing more, a release, spam mark
or bounce one marker key kept for two days.)

Bounds. A journal holds at most `limit` entries. An entry also has an
expiry: a rate event matters for one window and is useless after it
(`now + window`), a release or spam mark for its lapse, a bounce or a
sent-message record until the record expires; forgets never expire.
Expired entries are dropped as they are met — from the front on each
append, and as a merge takes them — and are never replayed. When the
journal is full, the oldest entry gives way: the newest events are the
ones still inside the window when the backend returns. The owner logs
the first loss of an outage once; the losses are counted and reported in
the merge line.

Adding a write method to the StateStore protocol (say ``add_complaint``):
implement it in the backends, then give `ResilientStore` one line,
``return cast(X, self._write("add_complaint", sender, now, expires=...))``
with every argument passed positionally and `expires` when replaying it
late stops mattering (default: never). Add ``replay_add_complaint(token,
...)`` to a backend whose failures can be ambiguous (redis.py shows how
with a marker key) and a plural noun to `NOUNS` for the merge line. The
entry must be order-independent across processes (additive, or
latest-wins by its own timestamp): each process replays only its own
journal, so the writes of two processes meet the backend in any
interleaving.

Not thread-safe by itself: its owner serialises every call under one lock
(the same lock that decides whether a write goes to the backend or here,
which is what keeps a write from slipping between the last replayed entry
and the backend taking new writes). `entry()` alone may be called without it.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# The nouns of the merge line ("merged 40 events, 2 releases, 0 bounces"); the
# first three are always shown, any other method when it had entries.
NOUNS: dict[str, str] = {
    "hit": "events",
    "add_release": "releases",
    "add_bounce": "bounces",
    "add_spam_mark": "spam marks",
    "forget": "forgets",
    "forget_bounce": "bounce forgets",
    "remember_sent": "sent messages",
}
ALWAYS_SHOWN = ("hit", "add_release", "add_bounce")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One write to a StateStore: `operation(*args)`, identified by `token`."""

    seq: int  # order within its journal
    token: str  # unique across processes: what a backend recognises a replay by
    operation: str  # the StateStore method's name
    args: tuple[Any, ...]
    expires: float  # epoch seconds after which replaying it would change nothing


@dataclass(frozen=True, slots=True)
class MergeSummary:
    """What one outage's journal came to."""

    merged: dict[str, int] = field(default_factory=dict)  # operation -> entries replayed
    dropped: int = 0  # given way to newer ones because the journal was full
    expired: int = 0  # too old to matter by the time they were replayed
    unmergeable: int = 0  # a replay that raised something other than StateError

    def describe(self) -> str:
        """``40 events, 2 releases, 0 bounces`` and any other write merged (``, 1 forgets``)."""
        shown = [*ALWAYS_SHOWN, *sorted(op for op in self.merged if op not in ALWAYS_SHOWN)]
        return ", ".join(f"{self.merged.get(op, 0)} {NOUNS.get(op, op)}" for op in shown)

    def losses(self) -> str:
        """``not merged: 5 dropped (journal full), 3 expired``, or '' when nothing was lost."""
        lost = [
            f"{count} {what}"
            for count, what in (
                (self.dropped, "dropped (journal full)"),
                (self.expired, "expired"),
                (self.unmergeable, "unmergeable"),
            )
            if count
        ]
        return f"not merged: {', '.join(lost)}" if lost else ""


class OutageJournal:
    """An ordered, bounded journal of the writes made while the backend was down."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a journal holds at least one entry, not {limit}")
        self.limit = limit
        self._pid = os.getpid()
        self.origin = uuid.uuid4().hex[:16]  # 64 random bits: unique per process and start
        self._seq = itertools.count(1)  # next() is atomic in CPython: entry() needs no lock
        self._entries: deque[JournalEntry] = deque()
        self._merged: Counter[str] = Counter()
        self._dropped = 0
        self._expired = 0
        self._unmergeable = 0

    def __len__(self) -> int:
        return len(self._entries)

    def entry(
        self, operation: str, args: tuple[Any, ...], expires: float = math.inf
    ) -> JournalEntry:
        """A new entry with the next sequence number and its own token (not appended)."""
        if os.getpid() != self._pid:
            # A forked copy would repeat its parent's tokens, and on Redis two
            # events under one token are one event.
            self._pid = os.getpid()
            self.origin = uuid.uuid4().hex[:16]
        seq = next(self._seq)
        return JournalEntry(seq, f"{self.origin}:{seq}", operation, args, expires)

    def append(self, entry: JournalEntry, now: float) -> bool:
        """Keep `entry`; True when this is the first entry of the outage that had to
        push an older one out (the caller logs that once)."""
        entries = self._entries
        while entries and entries[0].expires <= now:
            entries.popleft()
            self._expired += 1
        first_loss = False
        if len(entries) >= self.limit:
            first_loss = self._dropped == 0
            while len(entries) >= self.limit:
                entries.popleft()
                self._dropped += 1
        entries.append(entry)
        return first_loss

    def take(self, count: int, now: float) -> list[JournalEntry]:
        """Remove and return up to `count` of the oldest entries still worth replaying."""
        batch: list[JournalEntry] = []
        entries = self._entries
        while entries and len(batch) < count:
            entry = entries.popleft()
            if entry.expires <= now:
                self._expired += 1
            else:
                batch.append(entry)
        return batch

    def give_back(self, entries: Iterable[JournalEntry]) -> None:
        """Put entries taken but not confirmed back in front, in their order."""
        self._entries.extendleft(reversed(list(entries)))

    def confirm(self, entries: Iterable[JournalEntry]) -> None:
        """Count `entries` as merged into the backend."""
        self._merged.update(entry.operation for entry in entries)

    def lose(self) -> bool:
        """Count one entry that cannot be merged (its replay fails other than by an
        outage); True for the first of the outage (the caller logs that one)."""
        self._unmergeable += 1
        return self._unmergeable == 1

    def end_outage(self) -> MergeSummary:
        """The tally of the outage now merged, and a fresh tally for the next one."""
        summary = MergeSummary(
            dict(self._merged), self._dropped, self._expired, self._unmergeable
        )
        self._merged = Counter()
        self._dropped = self._expired = self._unmergeable = 0
        return summary


def apply(store: object, entry: JournalEntry) -> Any:
    """Run `entry` on a backend: ``replay_<operation>(token, *args)`` if it has one
    (applied at most once per token), else ``<operation>(*args)``."""
    replay = getattr(store, f"replay_{entry.operation}", None)
    if replay is not None:
        return replay(entry.token, *entry.args)
    return getattr(store, entry.operation)(*entry.args)


def apply_plain(store: object, entry: JournalEntry) -> Any:
    """Run `entry` as the plain call it records (the in-memory fallback knows no tokens)."""
    return getattr(store, entry.operation)(*entry.args)
