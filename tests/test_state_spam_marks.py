"""Spam marks ("quarantine delete --spam") in every backend: memory, SQLite, a real Redis.

`state_config` / `state_store` (conftest.py) run each test once per backend.
A mark is counted per sender with the reasons of the marked mail, lapses
on its own clock, and cancels what releases taught in the same write.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from test_state_backends import THREADS, at_once
from trustmilter.config.state import StateConfig
from trustmilter.state.base import Reputation, StateError, StateStore, current, is_current
from trustmilter.state.open import ResilientStore, open_store
from trustmilter.state.redis import RedisStore
from trustmilter.state.sqlite import SqliteStore
from trustmilter.testing.redisserver import free_port

T0 = 1_700_000_000.0
ALICE = "alice@example.com"


def marked(sender: str, marks: int, last: float, reasons: tuple[str, ...]) -> Reputation:
    """A record with spam marks and no releases."""
    return Reputation(sender, 0, 0.0, (), marks, last, reasons)


def test_a_spam_mark_is_counted_with_its_reasons(state_store: StateStore) -> None:
    first = state_store.add_spam_mark(ALICE, ("auto.bulk", "dnsbl.listed"), T0)
    assert first == marked(ALICE, 1, T0, ("auto.bulk", "dnsbl.listed"))
    second = state_store.add_spam_mark(ALICE, ("dnsbl.listed", "uribl.listed"), T0 + 60)
    expected = marked(ALICE, 2, T0 + 60, ("auto.bulk", "dnsbl.listed", "uribl.listed"))
    assert second == expected
    assert state_store.reputation(ALICE) == expected
    assert state_store.reputations() == [expected]


def test_a_spam_mark_cancels_what_releases_taught(state_store: StateStore) -> None:
    for i in range(3):
        state_store.add_release(ALICE, ("auto.bulk",), T0 + i)
    assert state_store.add_spam_mark(ALICE, ("auto.noreply_sender",), T0 + 10) == marked(
        ALICE, 1, T0 + 10, ("auto.noreply_sender",))
    assert state_store.reputation(ALICE) == marked(ALICE, 1, T0 + 10, ("auto.noreply_sender",))
    # Releases count again from nothing, beside the mark, and say so.
    again = state_store.add_release(ALICE, ("auto.noreply_sender",), T0 + 20)
    assert again == Reputation(ALICE, 1, T0 + 20, ("auto.noreply_sender",),
                               1, T0 + 10, ("auto.noreply_sender",))
    assert state_store.reputation(ALICE) == again


def test_both_directions_are_listed(state_store: StateStore) -> None:
    state_store.add_release("released@example.com", ("r",), T0)
    state_store.add_spam_mark("spammer@example.net", ("s",), T0)
    state_store.add_spam_mark("spammer@example.net", ("s",), T0 + 1)
    state_store.add_spam_mark("both@example.org", ("s",), T0)
    state_store.add_release("both@example.org", ("r",), T0 + 1)
    assert state_store.reputations() == [
        Reputation("both@example.org", 1, T0 + 1, ("r",), 1, T0, ("s",)),
        Reputation("released@example.com", 1, T0, ("r",)),
        marked("spammer@example.net", 2, T0 + 1, ("s",)),
    ]


def test_forget_undoes_both_directions(state_store: StateStore) -> None:
    state_store.add_spam_mark(ALICE, ("s",), T0)
    state_store.add_release(ALICE, ("r",), T0 + 1)
    state_store.add_spam_mark("bob@example.com", ("s",), T0)
    assert state_store.forget("Alice@Example.com") is True
    assert state_store.reputation(ALICE) is None
    assert state_store.forget(ALICE) is False
    assert [r.sender for r in state_store.reputations()] == ["bob@example.com"]
    assert state_store.forget("bob@example.com") is True  # marks alone are something
    assert state_store.reputations() == []
    assert state_store.add_spam_mark(ALICE, (), T0 + 2).spam_marks == 1  # afresh


def test_marks_are_case_insensitive_and_the_null_sender_is_never_stored(
    state_store: StateStore,
) -> None:
    state_store.add_spam_mark("Alice@EXAMPLE.com", ("s1",), T0)
    assert state_store.add_spam_mark(ALICE, ("s2",), T0 + 1) == marked(ALICE, 2, T0 + 1,
                                                                       ("s1", "s2"))
    assert state_store.add_spam_mark("", ("auto.bounce",), T0).spam_marks == 0
    assert state_store.reputation("") is None
    assert [r.sender for r in state_store.reputations()] == [ALICE]


def test_lapsed_marks_start_afresh_and_lapse_on_their_own(state_store: StateStore) -> None:
    """Each direction lapses `lapse` seconds after its own last event."""
    now = float(int(time.time()))  # Redis expires a lapsing hash by its own clock
    state_store.add_spam_mark(ALICE, ("s1",), now - 100, lapse=1000)
    kept = state_store.add_spam_mark(ALICE, ("s2",), now, lapse=1000)
    assert (kept.spam_marks, kept.spam_reasons) == (2, ("s1", "s2"))
    afresh = state_store.add_spam_mark(ALICE, ("s3",), now + 1000, lapse=1000)
    assert afresh == marked(ALICE, 1, now + 1000, ("s3",))
    both = state_store.add_release(ALICE, ("r",), now + 1500, lapse=1000)
    # At now + 2000 the mark has lapsed, the release has not.
    assert current(both, now + 2000, 1000) == Reputation(ALICE, 1, now + 1500, ("r",))
    assert is_current(both, now + 2499, 1000) and not is_current(both, now + 2500, 1000)
    assert current(both, now + 1999, 1000) == both


def test_forty_concurrent_marks_are_counted_once_each(state_store: StateStore) -> None:
    results = at_once(THREADS, lambda i: state_store.add_spam_mark(ALICE, (f"r{i}",), T0)
                      .spam_marks)
    assert sorted(results) == list(range(1, THREADS + 1))
    known = state_store.reputation(ALICE)
    assert known is not None and known.spam_marks == THREADS
    assert sorted(known.spam_reasons) == sorted(f"r{i}" for i in range(THREADS))


def test_releases_and_marks_racing_count_each_run_exactly(state_store: StateStore) -> None:
    """A mark drops the releases in the same atomic write: whatever the interleaving,
    each release sees the releases since the last mark, so the counts form runs
    1, 2, 3 ... restarting after each mark, with no number twice in one run."""
    marks = THREADS // 4
    results = at_once(THREADS, lambda i: (
        -1 if state_store.add_spam_mark(ALICE, ("s",), T0 + i).releases == 0 else -2)
        if i % 4 == 0 else state_store.add_release(ALICE, ("r",), T0 + i).releases)
    assert results.count(-1) == marks  # every mark answered with no releases left
    counts = [n for n in results if n > 0]
    assert len(counts) == THREADS - marks
    assert counts.count(1) <= marks + 1  # a run starts before the first mark or after one
    for n in range(2, max(counts) + 1):
        assert counts.count(n) <= counts.count(n - 1), (n, sorted(counts))
    known = state_store.reputation(ALICE)
    assert known is not None and known.spam_marks == marks
    assert known.releases == 0 or known.releases in counts


@pytest.mark.parametrize("state_config", ["sqlite", "redis"], indirect=True)
def test_marks_survive_reopening(state_config: StateConfig) -> None:
    store = open_store(state_config)
    store.add_spam_mark(ALICE, ("s",), T0)
    store.close()
    store = open_store(state_config)
    try:
        assert store.reputation(ALICE) == marked(ALICE, 1, T0, ("s",))
    finally:
        store.close()


def test_sqlite_adds_the_spam_marks_table_and_keeps_the_reputation_table(tmp_path: Path) -> None:
    """A file from before spam marks gains their table, keeps its data, and the
    reputation table keeps its four columns, so an older version still writes it."""
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE events (key TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL);"
            "CREATE TABLE reputation (sender TEXT PRIMARY KEY, releases INTEGER NOT NULL,"
            " last_release REAL NOT NULL, reasons TEXT NOT NULL);"
            "CREATE TABLE bounces (recipient TEXT PRIMARY KEY, expires REAL NOT NULL,"
            " record TEXT NOT NULL);"
            "INSERT INTO reputation VALUES ('alice@example.com', 3, 1.0, '[\"r\"]');")
    store = SqliteStore(path, 1.0)
    try:
        assert store.reputation(ALICE) == Reputation(ALICE, 3, 1.0, ("r",))
        store.add_spam_mark("bob@example.com", ("s",), T0)
        assert store.reputation("bob@example.com") == marked("bob@example.com", 1, T0, ("s",))
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(reputation)")]
        db.execute("INSERT OR REPLACE INTO reputation VALUES ('carol@example.com', 1, 2.0, '[]')")
    assert columns == ["sender", "releases", "last_release", "reasons"]


@pytest.mark.parametrize("state_config", ["redis"], indirect=True)
def test_redis_keeps_marks_in_their_own_keys_and_expires_them(
    state_config: StateConfig, state_store: StateStore
) -> None:
    import redis

    prefix = state_config.key_prefix
    now = time.time()
    state_store.add_release(ALICE, ("r",), now)
    client = redis.Redis.from_url(state_config.redis_url, decode_responses=True)
    try:
        state_store.add_spam_mark(ALICE, ("s",), now, lapse=60)
        keys = set(client.scan_iter(match=f"{prefix}*"))
        # The mark took the release hash and its index entry in the same script.
        assert keys == {f"{prefix}spam:{ALICE}", f"{prefix}spams"}
        assert 0 < client.pttl(f"{prefix}spam:{ALICE}") <= 60_001
        state_store.add_spam_mark(ALICE, ("s",), now)  # no lapse now
        assert client.pttl(f"{prefix}spam:{ALICE}") == -1
        client.delete(f"{prefix}spam:{ALICE}")  # as if it had expired
        assert state_store.reputations() == []
        assert client.smembers(f"{prefix}spams") == set()
    finally:
        client.close()


def test_resilient_store_takes_a_mark_while_the_backend_is_down(
    redis_installed: None,
) -> None:
    """A mark while Redis is down: `memory` keeps it in this process (one call, as
    every other write), `tempfail` raises the one-line StateError."""
    log = logging.getLogger("test.state.spam")
    port = free_port()
    for on_error in ("memory", "tempfail"):
        store = ResilientStore(RedisStore(f"redis://127.0.0.1:{port}/0", "t:", 0.2), on_error,
                               log)
        try:
            if on_error == "memory":
                assert store.add_spam_mark(ALICE, ("s",), T0).spam_marks == 1
                assert store.fallback.reputation(ALICE) == marked(ALICE, 1, T0, ("s",))
                assert store.reputation(ALICE) == marked(ALICE, 1, T0, ("s",))
            else:
                with pytest.raises(StateError, match=rf"redis 127.0.0.1:{port}: "):
                    store.add_spam_mark(ALICE, ("s",), T0)
        finally:
            store.close()
