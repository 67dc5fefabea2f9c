"""The outage journal (bounds, order, tokens) and ResilientStore's merge of it.

The merge is driven here over an in-memory backend that fails on command
(`Breakable`: a real MemoryStore behind a switch), so a failure can land
on an exact entry of a replay; tests/test_state_mergeback.py does the same
against a real redis-server and a locked SQLite file.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from test_state_backends import THREADS, hard_bounce
from trustmilter.state.base import HardBounce, Reputation, SentMessage, StateError, StateStore
from trustmilter.state.journal import (
    NOUNS,
    JournalEntry,
    MergeSummary,
    OutageJournal,
    apply,
    apply_plain,
)
from trustmilter.state.memory import MemoryStore
from trustmilter.state.open import ResilientStore

T0 = 1_700_000_000.0
HOUR = 3600.0
LOGGER = "test.state.journal"


def hits(journal: OutageJournal, *times: float) -> list[JournalEntry]:
    """Entries of rate events at `times`, one-hour window, appended at T0."""
    made = [journal.entry("hit", ("k", at, HOUR), at + HOUR) for at in times]
    for entry in made:
        journal.append(entry, T0)
    return made


# ---- the journal itself ----------------------------------------------------------


def test_entries_come_back_in_order_with_unique_tokens() -> None:
    journal = OutageJournal(100)
    made = hits(journal, T0, T0 + 1, T0 + 2)
    assert [entry.seq for entry in made] == [1, 2, 3]
    assert len({entry.token for entry in made}) == 3
    assert all(entry.token.startswith(f"{journal.origin}:") for entry in made)
    assert OutageJournal(100).origin != journal.origin  # another process, another origin
    assert journal.take(2, T0) == made[:2]
    assert journal.take(10, T0) == made[2:]
    assert journal.take(10, T0) == []


def test_a_forked_process_draws_its_own_tokens() -> None:
    """The store is opened after milter.processes fork today; if that changed, a
    copied journal must still not hand out its parent's tokens."""
    journal = OutageJournal(10)
    journal.entry("hit", ("k", T0, HOUR))
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's coverage is not collected)
        os.write(writer, journal.entry("hit", ("k", T0, HOUR)).token.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        token_in_child = pipe.read()
    os.waitpid(child, 0)
    assert token_in_child
    assert token_in_child != journal.entry("hit", ("k", T0, HOUR)).token
    assert not token_in_child.startswith(f"{journal.origin}:")


def test_a_full_journal_lets_the_oldest_go_and_says_so_once() -> None:
    journal = OutageJournal(3)
    made = [journal.entry("hit", ("k", T0 + i, HOUR), T0 + i + HOUR) for i in range(6)]
    first_losses = [journal.append(entry, T0) for entry in made]
    assert first_losses == [False, False, False, True, False, False]
    assert len(journal) == 3
    assert journal.take(10, T0) == made[3:]  # the newest three
    summary = journal.end_outage()
    assert summary.dropped == 3
    assert summary.losses() == "not merged: 3 dropped (journal full)"
    # The next outage reports its own first loss again.
    for entry in made:
        journal.append(entry, T0)
    assert journal.end_outage().dropped == 3


def test_expired_entries_are_dropped_not_replayed() -> None:
    journal = OutageJournal(100)
    old, mid, new = hits(journal, T0 - HOUR, T0 - HOUR / 2, T0)
    # On append only the front is trimmed (cheap), so `old` goes when T0 + 1 arrives...
    journal.append(journal.entry("hit", ("k", T0 + 1, HOUR), T0 + 1 + HOUR), T0 + 1)
    assert len(journal) == 3
    # ...and on take everything expired by then is skipped: `mid` at T0 + HOUR/2.
    batch = journal.take(10, T0 + HOUR / 2)
    assert [entry.args[1] for entry in batch] == [T0, T0 + 1]
    assert new in batch
    summary = journal.end_outage()
    assert summary.expired == 2
    assert old not in batch and mid not in batch


def test_entries_given_back_go_first_in_their_order() -> None:
    journal = OutageJournal(100)
    made = hits(journal, T0, T0 + 1, T0 + 2, T0 + 3)
    batch = journal.take(3, T0)
    later = hits(journal, T0 + 4)
    journal.confirm(batch[:1])
    journal.give_back(batch[1:])
    assert journal.take(10, T0) == [*made[1:], *later]
    assert journal.end_outage().merged == {"hit": 1}


def test_a_write_that_never_expires_stays_whatever_the_time() -> None:
    journal = OutageJournal(100)
    forget = journal.entry("forget", ("alice@example.com",))
    assert forget.expires == math.inf
    journal.append(forget, T0)
    assert journal.take(10, T0 + 1000 * 365 * 24 * HOUR) == [forget]


def test_the_merge_line_names_the_usual_three_and_anything_else() -> None:
    summary = MergeSummary({"hit": 40, "add_release": 2, "forget": 1}, expired=3, unmergeable=1)
    assert summary.describe() == "40 events, 2 releases, 0 bounces, 1 forgets"
    assert summary.losses() == "not merged: 3 expired, 1 unmergeable"
    assert MergeSummary().describe() == "0 events, 0 releases, 0 bounces"
    assert MergeSummary().losses() == ""


def test_a_journal_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        OutageJournal(0)


def test_apply_uses_a_replay_variant_with_the_token_when_there_is_one() -> None:
    class Tokened(MemoryStore):
        """A MemoryStore that remembers the tokens it was given (as a Redis store would)."""

        def __init__(self) -> None:
            super().__init__()
            self.tokens: list[str] = []

        def replay_hit(self, token: str, key: str, now: float, window: float) -> int:
            self.tokens.append(token)
            return self.hit(key, now, window)

    journal = OutageJournal(10)
    entry = journal.entry("hit", ("k", T0, HOUR), T0 + HOUR)
    store = Tokened()
    assert apply(store, entry) == 1
    assert store.tokens == [entry.token]
    assert apply_plain(store, entry) == 2  # the plain call, no token
    assert store.tokens == [entry.token]
    release = journal.entry("add_release", ("a@example.com", ("r",), T0, math.inf))
    assert apply(store, release) == Reputation("a@example.com", 1, T0, ("r",))


# ---- ResilientStore's merge ----------------------------------------------------------


class Breakable(MemoryStore):
    """A real MemoryStore behind a switch: `broken` fails every call, `writes_left`
    fails the writes after that many more (a backend dying in the middle of a merge)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.hang = 0.0  # seconds a broken call takes before it fails (a hung server)
        self.writes_left: int | None = None
        self.refused: set[str] = set()  # senders whose release it cannot take (not an outage)
        self.slow = 0.0  # seconds every write takes while it works

    def _gate(self, write: bool) -> None:
        if self.broken:
            time.sleep(self.hang)
            raise StateError("breakable: down")
        if write:
            time.sleep(self.slow)
        if write and self.writes_left is not None:
            if self.writes_left == 0:
                raise StateError("breakable: died mid-merge")
            self.writes_left -= 1

    def hit(self, key: str, now: float, window: float) -> int:
        self._gate(True)
        return super().hit(key, now, window)

    def count(self, key: str, now: float, window: float) -> int:
        self._gate(False)
        return super().count(key, now, window)

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        self._gate(True)
        if sender in self.refused:
            raise ValueError(f"cannot store {sender}")
        return super().add_release(sender, reasons, now, lapse)

    def reputation(self, sender: str) -> Reputation | None:
        self._gate(False)
        return super().reputation(sender)

    def forget(self, sender: str) -> bool:
        self._gate(True)
        return super().forget(sender)

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        self._gate(True)
        return super().add_bounce(bounce)

    def forget_bounce(self, recipient: str) -> bool:
        self._gate(True)
        return super().forget_bounce(recipient)

    def add_spam_mark(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        self._gate(True)
        return super().add_spam_mark(sender, reasons, now, lapse)

    def reputations(self) -> list[Reputation]:
        self._gate(False)
        return super().reputations()

    def hard_bounces(self, now: float) -> list[HardBounce]:
        self._gate(False)
        return super().hard_bounces(now)

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        self._gate(True)
        super().remember_sent(sent, max_entries)

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        self._gate(False)
        return super().sent_messages(digests, now)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def resilient(
    backend: MemoryStore, clock: Clock, *, limit: int = 1000,
    wall: Callable[[], float] = lambda: T0, merge_wait: float = 0.5,
) -> ResilientStore:
    return ResilientStore(
        backend,
        "memory",
        logging.getLogger(LOGGER),
        retry_interval=5.0,
        monotonic=clock,
        clock=wall,
        journal_limit=limit,
        merge_wait=merge_wait,
    )


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_writes_merge_in_their_order(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    backend, clock = Breakable(), Clock()
    backend.add_release("alice@example.com", ("before",), T0 - 10)
    store = resilient(backend, clock)
    backend.broken = True
    # In order: a forget, then a release, of a sender the backend knows; a hit.
    assert store.forget("alice@example.com") is False  # memory knows only the outage
    assert store.add_release("alice@example.com", ("during",), T0).releases == 1
    assert store.hit("k", T0, HOUR) == 1
    assert store.pending == 3
    backend.broken = False
    clock.now += 5.0
    assert store.hit("k", T0 + 1, HOUR) == 2  # the merged event, then this one
    assert store.pending == 0 and not store.down
    # The forget came first, so only the outage's release is left.
    assert backend.reputation("alice@example.com") == Reputation(
        "alice@example.com", 1, T0, ("during",)
    )
    assert messages(caplog)[-1] == (
        "state: backend back after 5.0 s, merged 1 events, 1 releases, 0 bounces,"
        " 1 forgets from the outage"
    )


def test_a_merge_cut_short_keeps_the_rest_and_finishes_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    backend, clock = Breakable(), Clock()
    store = resilient(backend, clock)
    backend.broken = True
    for i in range(10):
        store.hit("k", T0 + i, HOUR)
    store.add_bounce(hard_bounce("gone@example.net", T0))
    backend.broken = False
    backend.writes_left = 4  # the backend dies after four replayed writes
    clock.now += 5.0
    assert store.count("k", T0 + 10, HOUR) == 10  # the probe failed: from memory
    assert store.down
    assert store.pending == 7
    assert backend.count("k", T0 + 10, HOUR) == 4
    # Calls in between stay in memory and join the journal's end.
    assert store.hit("k", T0 + 11, HOUR) == 11
    backend.writes_left = None
    clock.now += 5.0
    assert store.count("k", T0 + 12, HOUR) == 11  # merged: now the backend's count
    assert backend.count("k", T0 + 12, HOUR) == 11
    assert backend.hard_bounces(T0)[0].bounces == 1
    assert [m for m in messages(caplog) if "merged" in m] == [
        "state: backend back after 10.0 s, merged 11 events, 0 releases, 1 bounces"
        " from the outage"
    ]
    # One warning for the outage, none for the failed merge.
    assert sum("down" in m for m in messages(caplog)) == 1


def test_a_full_journal_is_logged_once_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    backend, clock = Breakable(), Clock()
    store = resilient(backend, clock, limit=5)
    backend.broken = True
    assert [store.hit("k", T0 + i, HOUR) for i in range(8)] == list(range(1, 9))
    backend.broken = False
    clock.now += 5.0
    assert store.count("k", T0 + 8, HOUR) == 5  # the five newest reached the backend
    assert messages(caplog)[1:] == [
        "state: outage journal full (5 writes); the oldest give way and will not be merged",
        "state: backend back after 5.0 s, merged 5 events, 0 releases, 0 bounces"
        " from the outage; not merged: 3 dropped (journal full)",
    ]


def test_events_too_old_to_matter_are_not_merged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    backend, clock = Breakable(), Clock()
    wall = [T0]
    store = resilient(backend, clock, wall=lambda: wall[0])
    backend.broken = True
    store.hit("k", T0 - HOUR + 5, HOUR)  # leaves the window 5 s from now
    store.hit("k", T0, HOUR)
    backend.broken = False
    clock.now += 5.0
    wall[0] = T0 + 10
    assert store.count("k", T0 + 10, HOUR) == 1
    assert backend.count("k", T0 + 10, HOUR) == 1
    assert messages(caplog)[-1] == (
        "state: backend back after 5.0 s, merged 1 events, 0 releases, 0 bounces"
        " from the outage; not merged: 1 expired"
    )


def test_the_count_in_an_outage_is_the_outages_own() -> None:
    backend, clock = Breakable(), Clock()
    store = resilient(backend, clock)
    for i in range(5):
        store.hit("k", T0 + i, HOUR)
    backend.broken = True
    assert store.hit("k", T0 + 5, HOUR) == 1  # memory knows only the outage
    backend.broken = False
    clock.now += 5.0
    assert store.hit("k", T0 + 6, HOUR) == 7  # merged: 5 before, 1 during, this one
    # A second outage starts from nothing again: the first one is in the backend now.
    backend.broken = True
    assert store.hit("k", T0 + 7, HOUR) == 1


def test_tempfail_journals_nothing() -> None:
    backend, clock = Breakable(), Clock()
    store = ResilientStore(backend, "tempfail", logging.getLogger(LOGGER), monotonic=clock)
    backend.broken = True
    for _ in range(3):
        with pytest.raises(StateError):
            store.hit("k", T0, HOUR)
    assert store.pending == 0
    backend.broken = False
    clock.now += 5.0
    assert store.hit("k", T0, HOUR) == 1


def test_forty_threads_at_the_moment_of_recovery_count_exactly() -> None:
    """Writes keep arriving from 40 threads while the probe merges: none is lost or
    counted twice, and none reaches the backend before the journal is through."""
    backend, clock = Breakable(), Clock()
    store = resilient(backend, clock, limit=100_000)
    for i in range(50):
        store.hit("k", T0 + i, HOUR)
    backend.broken = True
    rounds = 60
    barrier = threading.Barrier(THREADS + 1, timeout=10)
    failures: list[BaseException] = []

    def session(n: int) -> None:
        try:
            barrier.wait()
            for i in range(rounds):
                store.hit("k", T0 + 100 + i, HOUR)
                if i % 20 == n % 20:
                    store.add_release("robot@example.com", (f"r{n}",), T0 + 100 + i)
                if i == rounds // 2 and n == 0:
                    backend.broken = False  # recovery lands in the middle of the sessions
                    clock.now += 5.0
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures
    clock.now += 5.0
    store.count("k", T0 + 200, HOUR)  # a last probe, in case the sessions ended first
    assert not store.down and store.pending == 0
    assert backend.count("k", T0 + 200, HOUR) == 50 + THREADS * rounds
    reputation = backend.reputation("robot@example.com")
    assert reputation is not None
    assert reputation.releases == THREADS * (rounds // 20)
    assert set(reputation.reasons) == {f"r{n}" for n in range(THREADS)}


# One call of every method of the StateStore protocol except `close`. A method
# added to the protocol without a line here fails the test below, which then
# checks that it is journaled (a write) or not (a read).
SAMPLE_CALLS: dict[str, tuple[Any, ...]] = {
    "hit": ("k", T0, HOUR),
    "count": ("k", T0, HOUR),
    "add_release": ("alice@example.com", ("r",), T0, math.inf),
    "add_spam_mark": ("mallory@example.org", ("s",), T0, math.inf),
    "reputation": ("alice@example.com",),
    "reputations": (),
    "forget": ("alice@example.com",),
    "add_bounce": (hard_bounce("gone@example.net", T0),),
    "hard_bounces": (T0,),
    "forget_bounce": ("gone@example.net",),
    "remember_sent": (SentMessage("0" * 32, "", T0, T0 + HOUR), 100),
    "sent_messages": (["0" * 32], T0),
}
READS = {"count", "reputation", "reputations", "hard_bounces", "sent_messages"}


def test_every_write_of_the_protocol_is_journaled_and_named_in_the_merge_line() -> None:
    protocol = {name for name, _ in inspect.getmembers(StateStore, inspect.isfunction)
                if not name.startswith("_")} - {"close"}
    assert set(SAMPLE_CALLS) == protocol
    assert set(NOUNS) == protocol - READS
    backend, clock = Breakable(), Clock()
    store = resilient(backend, clock)
    backend.broken = True
    for name, args in SAMPLE_CALLS.items():
        before = store.pending
        getattr(store, name)(*args)
        assert store.pending == before + (name not in READS), name


def test_spam_marks_forgets_and_sent_records_merge_in_their_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A forget made in the outage undoes both directions the backend knew, and
    nothing the outage learned after it."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    backend, clock = Breakable(), Clock()
    backend.add_release("alice@example.com", ("before",), T0 - 20)
    backend.add_spam_mark("mallory@example.org", ("before",), T0 - 20)
    record = SentMessage("a" * 32, "b" * 32, T0, T0 + HOUR)
    store = resilient(backend, clock)
    backend.broken = True
    assert store.forget("mallory@example.org") is False  # memory knows only the outage
    assert store.add_spam_mark("mallory@example.org", ("during",), T0).spam_marks == 1
    assert store.add_spam_mark("alice@example.com", ("during",), T0 - 5).spam_marks == 1
    store.remember_sent(record, 100)
    assert store.sent_messages([record.digest], T0) == [record]  # from memory
    assert MemoryStore.sent_messages(backend, [record.digest], T0) == []  # past the gate
    assert store.pending == 4
    backend.broken = False
    clock.now += 5.0
    assert store.sent_messages([record.digest], T0) == [record]  # merged: the backend's
    assert store.pending == 0 and not store.down
    assert backend.reputation("mallory@example.org") == Reputation(
        "mallory@example.org", 0, 0.0, spam_marks=1, last_spam_mark=T0,
        spam_reasons=("during",))
    # The mark cancelled alice's release in the backend, as a live mark would.
    assert backend.reputation("alice@example.com") == Reputation(
        "alice@example.com", 0, 0.0, spam_marks=1, last_spam_mark=T0 - 5,
        spam_reasons=("during",))
    assert backend.sent_messages([record.digest], T0) == [record]
    assert messages(caplog)[-1] == (
        "state: backend back after 5.0 s, merged 0 events, 0 releases, 0 bounces,"
        " 2 spam marks, 1 forgets, 1 sent messages from the outage"
    )


def test_spam_marks_and_sent_records_lapse_out_of_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A spam mark whose lapse has passed, or a record expired, would teach the
    backend nothing by the time it is back: neither is replayed."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    backend, clock = Breakable(), Clock()
    wall = [T0]
    store = resilient(backend, clock, wall=lambda: wall[0])
    backend.broken = True
    store.add_spam_mark("mallory@example.org", ("s",), T0, HOUR)
    store.remember_sent(SentMessage("a" * 32, "", T0, T0 + HOUR), 100)
    store.add_spam_mark("eve@example.org", ("s",), T0, 3 * HOUR)
    backend.broken = False
    wall[0] = T0 + 2 * HOUR
    clock.now += 5.0
    store.count("k", wall[0], HOUR)
    assert not store.down
    assert backend.reputation("mallory@example.org") is None
    assert backend.sent_messages(["a" * 32], T0) == []
    eve = backend.reputation("eve@example.org")
    assert eve is not None and eve.spam_marks == 1
    assert messages(caplog)[-1].endswith(
        "merged 0 events, 0 releases, 0 bounces, 1 spam marks from the outage;"
        " not merged: 2 expired"
    )


def test_an_entry_the_backend_cannot_take_is_dropped_and_the_rest_merged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    backend, clock = Breakable(), Clock()
    store = resilient(backend, clock)
    backend.broken = True
    store.hit("k", T0, HOUR)
    store.add_release("bad@example.com", ("r",), T0)
    store.add_release("bad@example.com", ("r",), T0)
    store.hit("k", T0 + 1, HOUR)
    backend.broken = False
    backend.refused.add("bad@example.com")
    clock.now += 5.0
    assert store.count("k", T0 + 1, HOUR) == 2
    assert not store.down
    assert messages(caplog)[1:] == [
        "state: a journaled add_release cannot be merged; dropped",
        "state: backend back after 5.0 s, merged 2 events, 0 releases, 0 bounces"
        " from the outage; not merged: 2 unmergeable",
    ]


def test_a_probe_of_a_hung_backend_holds_up_no_other_call() -> None:
    """While one caller waits on a backend that does not answer, the others
    count in memory at once (a merge under way is waited for; a probe is not)."""
    backend, clock = Breakable(), Clock()
    store = resilient(backend, clock)
    backend.broken = True
    store.hit("k", T0, HOUR)  # down
    backend.hang = 1.0
    clock.now += 5.0
    prober = threading.Thread(target=store.hit, args=("k", T0 + 1, HOUR))
    prober.start()
    time.sleep(0.1)  # the prober is inside the backend now
    started = time.monotonic()
    assert store.hit("k", T0 + 2, HOUR) == 2
    assert time.monotonic() - started < 0.5
    prober.join(timeout=5)
    assert store.pending == 3


def test_writes_faster_than_the_merge_wait_for_it_so_it_ends() -> None:
    """Sessions writing to memory faster than a slow backend takes the journal
    would keep a merge from ever ending; once it is under way they wait for it."""
    backend, clock = Breakable(), Clock()
    # A wait long enough that a loaded test machine (the merge is 300 writes of
    # 2 ms, slower when the CPU is shared) never runs the writers out of it:
    # what is tested is that they wait, not how long the merge takes.
    store = resilient(backend, clock, limit=100_000, merge_wait=15.0)
    backend.broken = True
    for i in range(300):
        store.hit("k", T0 + i, HOUR)
    backend.broken = False
    backend.slow = 0.002  # 500 writes a second at most
    stop = threading.Event()
    made = [0] * 8

    def session(n: int) -> None:
        while not stop.is_set():
            store.hit("k", T0 + 400, HOUR)
            made[n] += 1

    clock.now += 5.0  # the first session to write probes, and merges
    writers = [threading.Thread(target=session, args=(n,)) for n in range(len(made))]
    for thread in writers:
        thread.start()
    try:
        started = time.monotonic()
        while store.down:
            assert time.monotonic() - started < 30.0, f"{store.pending} writes still pending"
            store.count("k", T0 + 400, HOUR)
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=10)
    assert store.pending == 0
    assert backend.count("k", T0 + 400, HOUR) == 300 + sum(made)
