"""The messages we sent, remembered by every backend alike: bounded, expiring, hashed.

`state_store` (conftest.py) runs each test on memory, SQLite and a real
redis-server. Times are explicit, so records expire without sleeping.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from trustmilter.config.state import StateConfig
from trustmilter.state.base import SentMessage, StateError, StateStore
from trustmilter.state.open import ResilientStore, open_store
from trustmilter.state.sqlite import SqliteStore

T0 = 1_700_000_000.0
DAY = 86400.0


def sent(n: int, at: float = T0, keep: float = 90 * DAY, sender: str = "") -> SentMessage:
    return SentMessage(f"{n:032x}", sender, at, at + keep)


def test_a_recorded_message_is_found(state_store: StateStore) -> None:
    record = sent(1, sender="ab" * 16)
    state_store.remember_sent(record, 100)
    assert state_store.sent_messages([record.digest], T0 + 1) == [record]
    assert state_store.sent_messages([sent(2).digest], T0 + 1) == []
    assert state_store.sent_messages([], T0 + 1) == []


def test_found_in_the_order_asked_each_once(state_store: StateStore) -> None:
    for n in range(1, 4):
        state_store.remember_sent(sent(n, T0 + n), 100)
    asked = [sent(3).digest, sent(9).digest, sent(1).digest, sent(3).digest]
    assert [r.digest for r in state_store.sent_messages(asked, T0 + 10)] == [
        sent(3).digest, sent(1).digest]


def test_times_keep_their_fractions(state_store: StateStore) -> None:
    record = SentMessage("f" * 32, "", T0 + 0.123456, T0 + 0.123456 + DAY)
    state_store.remember_sent(record, 100)
    assert state_store.sent_messages([record.digest], T0 + 1) == [record]


def test_an_expired_record_is_not_found(state_store: StateStore) -> None:
    record = sent(1, keep=DAY)
    state_store.remember_sent(record, 100)
    assert state_store.sent_messages([record.digest], T0 + DAY - 1) == [record]
    assert state_store.sent_messages([record.digest], T0 + DAY) == []


def test_the_oldest_go_beyond_max_entries(state_store: StateStore) -> None:
    for n in range(1, 8):
        state_store.remember_sent(sent(n, T0 + n), 5)
    digests = [sent(n).digest for n in range(1, 8)]
    assert [r.digest for r in state_store.sent_messages(digests, T0 + 10)] == digests[2:]


def test_a_message_recorded_again_counts_as_the_newest(state_store: StateStore) -> None:
    for n in (1, 2, 3):
        state_store.remember_sent(sent(n, T0 + n), 3)
    state_store.remember_sent(sent(1, T0 + 4), 3)  # the same digest, sent again
    state_store.remember_sent(sent(4, T0 + 5), 3)
    found = state_store.sent_messages([sent(n).digest for n in (1, 2, 3, 4)], T0 + 10)
    assert [r.digest for r in found] == [sent(1).digest, sent(3).digest, sent(4).digest]
    assert found[0].sent_at == T0 + 4


def test_expired_records_are_dropped_on_the_way(state_config: StateConfig) -> None:
    """Writing removes what has expired: the store does not grow with old mail."""
    store = open_store(state_config)
    try:
        for n in range(1, 6):
            store.remember_sent(sent(n, T0, keep=DAY), 1000)
        store.remember_sent(sent(99, T0 + 2 * DAY), 1000)
        assert stored_count(state_config, store) == 1
    finally:
        store.close()


def stored_count(config: StateConfig, store: StateStore) -> int:
    """How many records the backend holds, whatever their expiry."""
    if config.backend == "sqlite":
        with sqlite3.connect(config.sqlite_path) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM sent").fetchone()
        return int(count)
    if config.backend == "redis":
        import redis

        client = redis.Redis.from_url(config.redis_url, decode_responses=True)
        try:
            index = int(client.zcard(f"{config.key_prefix}sent"))
            records = int(client.hlen(f"{config.key_prefix}sent:records"))
        finally:
            client.close()
        assert index == records
        return index
    return len(store._sent)  # type: ignore[attr-defined]


def test_concurrent_records_stay_within_the_bound(state_store: StateStore) -> None:
    """40 threads recording at once: all land, and no more than max_entries stay."""
    barrier = threading.Barrier(40, timeout=10)
    errors: list[BaseException] = []

    def record(n: int) -> None:
        try:
            barrier.wait()
            state_store.remember_sent(sent(n, T0 + n / 100), 30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    found = state_store.sent_messages([sent(n).digest for n in range(40)], T0 + 10)
    assert len(found) == 30


def test_records_survive_reopening(state_config: StateConfig) -> None:
    if state_config.backend == "memory":
        pytest.skip("memory forgets by design")
    record = sent(7, sender="cd" * 16)
    store = open_store(state_config)
    store.remember_sent(record, 100)
    store.close()
    store = open_store(state_config)
    try:
        assert store.sent_messages([record.digest], T0 + 1) == [record]
    finally:
        store.close()


def test_sqlite_adds_the_sent_table_to_an_older_file(tmp_path: Path) -> None:
    """A state file from before sent mail was remembered gains the table."""
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE events (key TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL);"
            "CREATE TABLE reputation (sender TEXT PRIMARY KEY, releases INTEGER NOT NULL,"
            " last_release REAL NOT NULL, reasons TEXT NOT NULL);"
            "CREATE TABLE bounces (recipient TEXT PRIMARY KEY, expires REAL NOT NULL,"
            " record TEXT NOT NULL);")
    store = SqliteStore(path, 1.0)
    try:
        store.remember_sent(sent(1), 10)
        assert store.sent_messages([sent(1).digest], T0) == [sent(1)]
    finally:
        store.close()


def test_an_unreadable_record_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path, 1.0)
    try:
        store.remember_sent(sent(1), 10)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE sent SET record = '{not json'")
        with pytest.raises(StateError, match="sent-message record"):
            store.sent_messages([sent(1).digest], T0)
    finally:
        store.close()


class DownStore(SqliteStore):
    """A backend that has gone away."""

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        raise StateError("sqlite test: gone")

    def sent_messages(self, digests: object, now: float) -> list[SentMessage]:  # type: ignore[override]
        raise StateError("sqlite test: gone")


def test_resilient_store_records_in_memory_while_the_backend_is_down(tmp_path: Path) -> None:
    """state.on_error memory: the record goes to the in-process store, one call."""
    import logging

    store = ResilientStore(DownStore(tmp_path / "s.sqlite3", 1.0), "memory",
                           logging.getLogger("test"))
    store.remember_sent(sent(1), 10)
    assert store.sent_messages([sent(1).digest], T0) == [sent(1)]
    tempfail = ResilientStore(DownStore(tmp_path / "t.sqlite3", 1.0), "tempfail",
                              logging.getLogger("test"))
    with pytest.raises(StateError):
        tempfail.remember_sent(sent(1), 10)
