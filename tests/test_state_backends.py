"""The state backends (memory, SQLite, a real Redis) pass the same tests.

`state_config` / `state_store` (conftest.py) run each test once per backend.
Times are explicit `now` values, so windows roll over without sleeping.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trustmilter.config.state import StateConfig
from trustmilter.state.base import HardBounce, Reputation, StateError, StateStore, is_current
from trustmilter.state.memory import SWEEP_EVERY, MemoryStore
from trustmilter.state.open import open_store
from trustmilter.state.sqlite import SqliteStore

HOUR = 3600.0
T0 = 1_700_000_000.0  # 2023-11-14, an arbitrary fixed "now"
THREADS = 40


def at_once(count: int, task: Callable[[int], int]) -> list[int]:
    """Run `task(i)` for i in range(count) on `count` threads released together."""
    barrier = threading.Barrier(count, timeout=10)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            barrier.wait()
            value = task(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a hit hung"
    assert not errors, errors
    return results


# ---- counting ----------------------------------------------------------------


def test_counts_within_the_window(state_store: StateStore) -> None:
    assert [state_store.hit("s", T0 + i, HOUR) for i in range(5)] == [1, 2, 3, 4, 5]
    assert state_store.count("s", T0 + 4, HOUR) == 5
    # Events at T0 and T0+1 are an hour old (or more) at T0+HOUR+1: outside.
    assert state_store.count("s", T0 + HOUR + 1, HOUR) == 3


def test_the_hour_rolls_over(state_store: StateStore) -> None:
    for i in range(45):
        state_store.hit("loop", T0 + i, HOUR)
    assert state_store.count("loop", T0 + 44, HOUR) == 45
    # The window is (now - window, now]: the event at exactly T0 has left it.
    assert state_store.hit("loop", T0 + HOUR, HOUR) == 45
    assert state_store.hit("loop", T0 + HOUR + 44.5, HOUR) == 2  # T0+HOUR and this one
    assert state_store.count("loop", T0 + 3 * HOUR, HOUR) == 0
    assert state_store.hit("loop", T0 + 3 * HOUR, HOUR) == 1


def test_a_shorter_window_counts_fewer(state_store: StateStore) -> None:
    for i in range(10):
        state_store.hit("k", T0 + i * 60, 10 * HOUR)
    assert state_store.count("k", T0 + 540, 10 * HOUR) == 10
    assert state_store.count("k", T0 + 540, 300) == 5  # events at 300..540 s are newer than 240 s


def test_count_records_nothing(state_store: StateStore) -> None:
    assert state_store.count("k", T0, HOUR) == 0
    assert state_store.count("k", T0, HOUR) == 0
    assert state_store.hit("k", T0, HOUR) == 1


def test_keys_are_counted_apart(state_store: StateStore) -> None:
    keys = ["alice@example.com", "alice@example.com|support@example.org", "bob@example.net", "a"]
    for n, key in enumerate(keys, start=1):
        for _ in range(n):
            state_store.hit(key, T0, HOUR)
    assert [state_store.count(key, T0, HOUR) for key in keys] == [1, 2, 3, 4]
    assert state_store.count("alice@example.co", T0, HOUR) == 0


def test_hits_at_the_same_instant_all_count(state_store: StateStore) -> None:
    assert [state_store.hit("k", T0, HOUR) for _ in range(3)] == [1, 2, 3]


def test_forty_concurrent_hits_get_1_to_40_once_each(state_store: StateStore) -> None:
    results = at_once(THREADS, lambda i: state_store.hit("burst", T0, HOUR))
    assert sorted(results) == list(range(1, THREADS + 1))
    assert state_store.count("burst", T0, HOUR) == THREADS


@pytest.mark.parametrize("state_config", ["sqlite", "redis"], indirect=True)
def test_several_clients_count_exactly(state_config: StateConfig) -> None:
    """Four stores (SQLite pools, Redis clients) on one backend, ten threads each."""
    stores = [open_store(state_config) for _ in range(4)]
    try:
        results = at_once(THREADS, lambda i: stores[i % 4].hit("shared", T0, HOUR))
    finally:
        for store in stores:
            store.close()
    assert sorted(results) == list(range(1, THREADS + 1))


# Each child opens the store (all at once, on a file none created yet),
# says it is ready, waits for the go file, then hits from ten threads at once.
CHILD = """
import json, sys, threading, time
from pathlib import Path
from trustmilter.state.sqlite import SqliteStore
db, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
store = SqliteStore(db, 10.0)
ready.touch()
deadline = time.monotonic() + 20
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("no go file")
    time.sleep(0.001)
results = []
def hit():
    results.append(store.hit("shared", 1700000000.0, 3600.0))
threads = [threading.Thread(target=hit) for _ in range(10)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=20)
print(json.dumps(results))
"""


def test_sqlite_counts_exactly_across_four_processes(tmp_path: Path) -> None:
    db, go = tmp_path / "state" / "state.sqlite3", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(flag), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    try:
        deadline = time.monotonic() + 30
        while not all(flag.exists() for flag in ready):
            assert all(child.poll() is None for child in children), "a child died opening the db"
            assert time.monotonic() < deadline, "the children did not get ready"
            time.sleep(0.01)
        go.touch()
        outputs = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    assert [child.returncode for child in children] == [0, 0, 0, 0], outputs
    results = [n for out, _ in outputs for n in json.loads(out)]
    assert sorted(results) == list(range(1, 41))


# ---- reputation ------------------------------------------------------------------


def test_a_release_is_learned(state_store: StateStore) -> None:
    assert state_store.reputation("alice@example.com") is None
    first = state_store.add_release("alice@example.com", ("bulk.list_id", "bulk.precedence"), T0)
    assert first == Reputation("alice@example.com", 1, T0, ("bulk.list_id", "bulk.precedence"))
    second = state_store.add_release(
        "alice@example.com", ("bulk.precedence", "noreply.sender", "bulk.list_id"), T0 + 60
    )
    expected = Reputation(
        "alice@example.com", 2, T0 + 60, ("bulk.list_id", "bulk.precedence", "noreply.sender")
    )
    assert second == expected
    assert state_store.reputation("alice@example.com") == expected


def test_reputations_are_listed_most_releases_first(state_store: StateStore) -> None:
    for sender, releases in [("a@example.com", 1), ("b@example.net", 3), ("c@example.org", 2)]:
        for i in range(releases):
            state_store.add_release(sender, ("r",), T0 + i)
    listed = state_store.reputations()
    assert [(rep.sender, rep.releases) for rep in listed] == [
        ("b@example.net", 3),
        ("c@example.org", 2),
        ("a@example.com", 1),
    ]
    assert listed[0] == Reputation("b@example.net", 3, T0 + 2, ("r",))


def test_forget_undoes_what_was_learned(state_store: StateStore) -> None:
    state_store.add_release("alice@example.com", ("r",), T0)
    state_store.add_release("bob@example.com", ("r",), T0)
    assert state_store.forget("alice@example.com") is True
    assert state_store.reputation("alice@example.com") is None
    assert state_store.forget("alice@example.com") is False
    assert [rep.sender for rep in state_store.reputations()] == ["bob@example.com"]
    # Learning starts again from nothing.
    assert state_store.add_release("alice@example.com", (), T0 + 1).releases == 1


def test_addresses_are_case_insensitive(state_store: StateStore) -> None:
    state_store.add_release("Alice@Example.COM", ("r1",), T0)
    rep = state_store.add_release("alice@example.com", ("r2",), T0 + 1)
    assert rep == Reputation("alice@example.com", 2, T0 + 1, ("r1", "r2"))
    assert state_store.reputation("ALICE@EXAMPLE.com") == rep
    assert [r.sender for r in state_store.reputations()] == ["alice@example.com"]
    assert state_store.forget("ALICE@example.COM") is True
    assert state_store.reputations() == []


def test_an_8bit_sender_is_stored_with_its_bytes_escaped(state_store: StateStore) -> None:
    """MAIL FROM bytes that are not UTF-8 arrive with surrogate escapes, which SQLite
    and Redis cannot take as text: every backend stores them as \\xNN, and the
    escaped form does not meet the valid UTF-8 address with the same letters."""
    raw = b"\xff\xfe@example.net".decode("utf-8", "surrogateescape")
    assert state_store.reputation(raw) is None
    rep = state_store.add_release(raw, ("r",), T0)
    assert rep.sender == "\\xff\\xfe@example.net"
    assert state_store.reputation(raw) == rep
    assert state_store.reputation("\u00ff\u00fe@example.net") is None  # "ÿþ", valid UTF-8
    assert [r.sender for r in state_store.reputations()] == ["\\xff\\xfe@example.net"]
    assert state_store.forget(raw) is True


def test_a_lapsed_reputation_starts_afresh(state_store: StateStore) -> None:
    """A release after `lapse` seconds without one counts as the first again."""
    now = float(int(time.time()))  # Redis expires a lapsing hash by its own clock
    for i in range(3):
        state_store.add_release("alice@example.com", ("r1",), now - 100 + i, lapse=1000)
    kept = state_store.add_release("alice@example.com", ("r2",), now, lapse=1000)
    assert (kept.releases, kept.reasons) == (4, ("r1", "r2"))
    afresh = state_store.add_release("alice@example.com", ("r3",), now + 1000, lapse=1000)
    assert afresh == Reputation("alice@example.com", 1, now + 1000, ("r3",))
    assert is_current(afresh, now + 1999, 1000) and not is_current(afresh, now + 2000, 1000)


def test_a_release_without_lapse_keeps_the_reputation(state_store: StateStore) -> None:
    """Learned with a lapse, then released under a policy without one: it stays."""
    now = float(int(time.time()))
    state_store.add_release("alice@example.com", ("r",), now, lapse=60)
    state_store.add_release("alice@example.com", ("r",), now + 1)
    assert state_store.reputation("alice@example.com") == Reputation(
        "alice@example.com", 2, now + 1, ("r",))


@pytest.mark.parametrize("state_config", ["redis"], indirect=True)
def test_redis_lets_a_lapsed_reputation_expire(
    state_config: StateConfig, state_store: StateStore
) -> None:
    import redis

    state_store.add_release("alice@example.com", ("r",), time.time(), lapse=60)
    client = redis.Redis.from_url(state_config.redis_url, decode_responses=True)
    try:
        key = f"{state_config.key_prefix}rep:alice@example.com"
        assert 0 < client.pttl(key) <= 60_001
        state_store.add_release("alice@example.com", ("r",), time.time())  # no lapse now
        assert client.pttl(key) == -1
        client.delete(key)  # as if it had expired: the index entry is dropped on listing
        assert state_store.reputations() == []
        assert client.smembers(f"{state_config.key_prefix}reps") == set()
    finally:
        client.close()


def test_the_null_sender_is_never_stored(state_store: StateStore) -> None:
    assert state_store.add_release("", ("bounce.dsn",), T0).releases == 0
    assert state_store.reputation("") is None
    assert state_store.reputations() == []


@pytest.mark.parametrize("state_config", ["sqlite", "redis"], indirect=True)
def test_what_is_stored_survives_reopening(state_config: StateConfig) -> None:
    store = open_store(state_config)
    store.hit("k", T0, HOUR)
    store.add_release("alice@example.com", ("r",), T0)
    store.close()
    store = open_store(state_config)
    try:
        assert store.hit("k", T0 + 1, HOUR) == 2
        assert store.reputation("alice@example.com") == Reputation(
            "alice@example.com", 1, T0, ("r",)
        )
    finally:
        store.close()


# ---- hard bounces ------------------------------------------------------------------

# Redis expires records by its own clock (PXAT), so these times are real ones.
NOW = float(int(time.time()))
DAY = 86400.0


def hard_bounce(recipient: str, at: float, status: str = "5.1.1", keep: float = 90 * DAY,
                **fields: str) -> HardBounce:
    values = {"cause": "user unknown", "reporting_mta": "mx.example.net",
              "sender": "alice@example.com", "message_id": "<m1@example.com>",
              "diagnostic": "550 5.1.1 no such user", "client": "192.0.2.25", **fields}
    return HardBounce(recipient=recipient, status=status, first_seen=at, last_seen=at,
                      expires=at + keep, **values)


def test_a_hard_bounce_is_recorded_and_listed(state_store: StateStore) -> None:
    recorded = state_store.add_bounce(hard_bounce("Bob@Example.NET", NOW))
    assert recorded == hard_bounce("bob@example.net", NOW)
    assert state_store.hard_bounces(NOW + 1) == [recorded]


def test_reports_for_one_recipient_merge(state_store: StateStore) -> None:
    """Several bounces for one mail are common (docs/rules.md §6): counted, not repeated."""
    state_store.add_bounce(hard_bounce("bob@example.net", NOW))
    merged = state_store.add_bounce(hard_bounce("BOB@example.net", NOW + 60, status="5.1.10",
                                                cause="host unknown", message_id="<m2@x.test>"))
    assert (merged.recipient, merged.bounces, merged.first_seen, merged.last_seen) == (
        "bob@example.net", 2, NOW, NOW + 60)
    assert (merged.status, merged.cause, merged.message_id) == (
        "5.1.10", "host unknown", "<m2@x.test>")
    assert merged.expires == NOW + 60 + 90 * DAY
    assert state_store.hard_bounces(NOW + 61) == [merged]


def test_bounces_are_listed_latest_first(state_store: StateStore) -> None:
    for offset, address in enumerate(("a@example.net", "b@example.net", "c@example.net")):
        state_store.add_bounce(hard_bounce(address, NOW + offset))
    state_store.add_bounce(hard_bounce("a@example.net", NOW + 10))
    listed = [b.recipient for b in state_store.hard_bounces(NOW + 11)]
    assert listed == ["a@example.net", "c@example.net", "b@example.net"]


def test_expired_bounces_are_not_listed(state_store: StateStore) -> None:
    state_store.add_bounce(hard_bounce("old@example.net", NOW - 10, keep=5))
    state_store.add_bounce(hard_bounce("new@example.net", NOW, keep=DAY))
    assert [b.recipient for b in state_store.hard_bounces(NOW)] == ["new@example.net"]
    # A recipient that bounces again after its record expired starts afresh.
    again = state_store.add_bounce(hard_bounce("old@example.net", NOW + 1))
    assert (again.bounces, again.first_seen) == (1, NOW + 1)


def test_bounce_times_keep_their_fractions(state_store: StateStore) -> None:
    at = NOW + 0.123456789
    recorded = state_store.add_bounce(hard_bounce("bob@example.net", at))
    assert (recorded.first_seen, recorded.last_seen) == (at, at)
    again = state_store.add_bounce(hard_bounce("bob@example.net", at + 1.5))
    assert (again.first_seen, again.last_seen, again.bounces) == (at, at + 1.5, 2)
    assert state_store.hard_bounces(at + 2) == [again]


def test_an_unreadable_bounce_record_is_a_state_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite3", 1.0)
    try:
        with sqlite3.connect(tmp_path / "state.sqlite3") as db:
            db.execute("INSERT INTO bounces VALUES ('x@example.net', ?, '{\"new_field\": 1}')",
                       (NOW + 100,))
        with pytest.raises(StateError, match="hard-bounce record cannot be read"):
            store.hard_bounces(NOW)
    finally:
        store.close()


def test_forget_bounce(state_store: StateStore) -> None:
    state_store.add_bounce(hard_bounce("bob@example.net", NOW))
    assert state_store.forget_bounce("BOB@example.net") is True
    assert state_store.forget_bounce("bob@example.net") is False
    assert state_store.hard_bounces(NOW) == []


@pytest.mark.parametrize("state_config", ["sqlite", "redis"], indirect=True)
def test_bounces_survive_reopening(state_config: StateConfig) -> None:
    store = open_store(state_config)
    recorded = store.add_bounce(hard_bounce("bob@example.net", NOW))
    store.close()
    store = open_store(state_config)
    try:
        assert store.hard_bounces(NOW) == [recorded]
    finally:
        store.close()


def test_sqlite_adds_the_bounces_table_to_an_older_file(tmp_path: Path) -> None:
    """A state file from before hard bounces were kept gains the table, and keeps its data."""
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE events (key TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL);"
            "CREATE TABLE reputation (sender TEXT PRIMARY KEY, releases INTEGER NOT NULL,"
            " last_release REAL NOT NULL, reasons TEXT NOT NULL);"
            "INSERT INTO reputation VALUES ('alice@example.com', 3, 1.0, '[]');")
    store = SqliteStore(path, 1.0)
    try:
        assert store.reputation("alice@example.com") == Reputation("alice@example.com", 3, 1.0)
        store.add_bounce(hard_bounce("bob@example.net", NOW))
        assert len(store.hard_bounces(NOW)) == 1
    finally:
        store.close()


# ---- backend specifics -------------------------------------------------------------


def test_sqlite_creates_a_private_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.sqlite3"
    SqliteStore(path, 1.0).close()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_drops_expired_events(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path, 1.0)
    try:
        for i in range(100):
            store.hit(f"old{i}", T0, 60)  # keys nobody hits again
        for i in range(300):
            store.hit("hot", T0 + 120 + i, 60)
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT key = 'hot', COUNT(*) FROM events GROUP BY key = 'hot'"))
    assert rows.get(1) == 60  # the hot key keeps one window of events
    assert rows.get(0) is None  # the sweep removed the old keys


def test_memory_drops_keys_whose_window_passed() -> None:
    store = MemoryStore()
    for i in range(SWEEP_EVERY):
        store.hit(f"old{i}", T0, 60)
    for i in range(SWEEP_EVERY):
        store.hit("hot", T0 + 120 + i * 0.01, 60)
    assert set(store._windows) == {"hot"}  # white-box: the dict is what must stay bounded


@pytest.mark.parametrize("state_config", ["redis"], indirect=True)
def test_redis_keys_carry_the_prefix_and_expire(
    state_config: StateConfig, state_store: StateStore
) -> None:
    import redis

    state_store.hit("k", T0, 90)
    state_store.add_release("alice@example.com", ("r",), T0)
    client = redis.Redis.from_url(state_config.redis_url, decode_responses=True)
    try:
        keys = set(client.scan_iter(match=f"{state_config.key_prefix}*"))
        prefix = state_config.key_prefix
        assert keys == {f"{prefix}rate:k", f"{prefix}rep:alice@example.com", f"{prefix}reps"}
        assert 0 < client.pttl(f"{prefix}rate:k") <= 90_000
        assert client.pttl(f"{prefix}rep:alice@example.com") == -1  # learned until forgotten
        state_store.add_bounce(hard_bounce("bob@example.net", time.time(), keep=60))
        bounce_key = f"{prefix}bounce:bob@example.net"
        assert 0 < client.pttl(bounce_key) <= 60_001  # expires by itself (ms rounded up)
        assert client.zrange(f"{prefix}bounces", 0, -1) == ["bob@example.net"]
    finally:
        client.close()


@pytest.mark.parametrize("state_config", ["redis"], indirect=True)
def test_redis_reloads_a_script_it_forgot(
    state_config: StateConfig, state_store: StateStore
) -> None:
    """EVALSHA falls back to loading the script (a restarted or flushed server)."""
    import redis

    assert state_store.hit("k", T0, HOUR) == 1
    client = redis.Redis.from_url(state_config.redis_url)
    try:
        client.script_flush()
    finally:
        client.close()
    assert state_store.hit("k", T0, HOUR) == 2
