"""Backends that are down fail fast with one clear line; ResilientStore does what on_error says.

Real failures only: a Redis port nobody listens on, a real redis-server
stopped under a store, a socket that accepts and never answers, a SQLite
path that cannot be a file, a SQLite write lock held by someone else.
The outage clock of ResilientStore is injected, so no test sleeps for it.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import pytest

from test_state_backends import NOW, hard_bounce
from trustmilter.config.state import StateConfig
from trustmilter.state.base import Reputation, StateError
from trustmilter.state.open import ResilientStore, open_store
from trustmilter.state.redis import RedisStore
from trustmilter.state.sqlite import SqliteStore
from trustmilter.testing.redisserver import RedisServer, free_port

T = TypeVar("T")
T0 = 1_700_000_000.0
HOUR = 3600.0
TIMEOUT = 0.2  # the store's per-operation bound in these tests
FAST = 2.0  # "quickly": well under an SMTP client's patience, well over TIMEOUT
LOGGER = "test.state.resilient"


def timed(call: Callable[[], T]) -> tuple[T | StateError, float]:
    """The result of `call` (or the StateError it raised) and how long it took."""
    start = time.monotonic()
    try:
        result: T | StateError = call()
    except StateError as exc:
        result = exc
    return result, time.monotonic() - start


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- Redis ------------------------------------------------------------------------


def test_redis_on_a_closed_port_is_refused_at_once() -> None:
    port = free_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", "t:", TIMEOUT)
    try:
        error, elapsed = timed(lambda: store.hit("k", T0, HOUR))
    finally:
        store.close()
    assert isinstance(error, StateError)
    assert str(error) == f"redis 127.0.0.1:{port}: connection refused"
    assert elapsed < FAST


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_redis_that_never_answers_times_out(silent_port: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{silent_port}/0", "t:", TIMEOUT)
    try:
        error, elapsed = timed(lambda: store.reputation("alice@example.com"))
    finally:
        store.close()
    assert str(error) == f"redis 127.0.0.1:{silent_port}: timed out after 0.2 s"
    assert TIMEOUT <= elapsed < FAST


def test_redis_stopped_under_a_store_fails_fast_and_recovers(
    redis_installed: None, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    store = RedisStore(server.url, "t:", TIMEOUT)
    try:
        assert store.hit("k", T0, HOUR) == 1
        server.stop()
        error, elapsed = timed(lambda: store.hit("k", T0, HOUR))
        assert isinstance(error, StateError)
        assert str(error).startswith(f"redis 127.0.0.1:{server.port}: ")
        assert "\n" not in str(error)
        assert elapsed < FAST
        # The same store reconnects once a server is there again (a new, empty one).
        server.start()
        assert store.hit("k", T0, HOUR) == 1
    finally:
        store.close()
        server.stop()


def test_a_bad_redis_url_is_refused_without_its_password() -> None:
    config = StateConfig(backend="redis", redis_url="redis://:s3cret@127.0.0.1:port/0")
    with pytest.raises(StateError) as caught:
        open_store(config)
    assert str(caught.value).startswith("redis URL redis://***@127.0.0.1:port/0: ")
    assert "s3cret" not in str(caught.value)


# ---- SQLite -----------------------------------------------------------------------


def test_sqlite_under_a_regular_file_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    path = tmp_path / "file" / "state.sqlite3"
    config = StateConfig(backend="sqlite", sqlite_path=str(path), timeout=TIMEOUT)
    error, elapsed = timed(lambda: open_store(config))
    assert isinstance(error, StateError)
    assert str(error) == f"sqlite {path}: Not a directory"
    assert elapsed < FAST


def test_sqlite_on_a_directory_cannot_be_opened(tmp_path: Path) -> None:
    config = StateConfig(backend="sqlite", sqlite_path=str(tmp_path), timeout=TIMEOUT)
    error, elapsed = timed(lambda: open_store(config))
    assert isinstance(error, StateError)
    assert str(error).startswith(f"sqlite {tmp_path}: ")
    assert elapsed < FAST


def test_sqlite_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not an SQLite file, just text that is long enough" * 20)
    error, _ = timed(lambda: SqliteStore(path, TIMEOUT))
    assert str(error) == f"sqlite {path}: file is not a database"


@pytest.fixture
def locked_sqlite(tmp_path: Path) -> Iterator[Path]:
    """A store's file whose write lock another connection holds for the whole test."""
    path = tmp_path / "state.sqlite3"
    SqliteStore(path, TIMEOUT).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield path
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_sqlite_locked_beyond_the_timeout_fails(locked_sqlite: Path) -> None:
    store = SqliteStore(locked_sqlite, TIMEOUT)
    try:
        error, elapsed = timed(lambda: store.hit("k", T0, HOUR))
        # Readers are not blocked by a writer (WAL).
        assert store.count("k", T0, HOUR) == 0
    finally:
        store.close()
    assert str(error) == f"sqlite {locked_sqlite}: database is locked (busy longer than 0.2 s)"
    assert TIMEOUT * 0.9 <= elapsed < FAST


# ---- ResilientStore -----------------------------------------------------------------


@pytest.fixture
def down_port() -> int:
    """A loopback port where no Redis listens (yet)."""
    return free_port()


def resilient(
    port: int, on_error: Literal["tempfail", "memory"], clock: FakeClock
) -> ResilientStore:
    """A ResilientStore over Redis on `port`, retrying every 5 s of `clock`; its
    wall clock stands at T0, so what it journals has not expired."""
    backend = RedisStore(f"redis://127.0.0.1:{port}/0", "t:", TIMEOUT)
    log = logging.getLogger(LOGGER)
    return ResilientStore(
        backend, on_error, log, retry_interval=5.0, monotonic=clock, clock=lambda: T0
    )


def log_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_tempfail_reraises_and_logs_one_line_per_outage(
    redis_installed: None, down_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    store = resilient(down_port, "tempfail", clock)
    server = RedisServer(tmp_path / "redis", port=down_port)
    try:
        refused = f"redis 127.0.0.1:{down_port}: connection refused"
        for _ in range(5):
            with pytest.raises(StateError, match=refused):
                store.hit("k", T0, HOUR)
        assert store.down
        assert log_lines(caplog) == [
            (
                logging.WARNING,
                f"state backend down: {refused}; answering 4xx (tempfail) until it answers again",
            )
        ]
        # Back: not tried before the retry interval has passed, then at once.
        server.start()
        with pytest.raises(StateError, match="backend down, next try within 5 s"):
            store.hit("k", T0, HOUR)
        clock.now += 5.0
        assert store.hit("k", T0, HOUR) == 1
        assert store.hit("k", T0, HOUR) == 2
        assert not store.down
        assert log_lines(caplog)[1:] == [(logging.INFO, "state backend answers again after 5.0 s")]
        # A second outage: a second warning, still only one.
        server.stop()
        for _ in range(3):
            with pytest.raises(StateError):
                store.hit("k", T0, HOUR)
        assert [level for level, _ in log_lines(caplog)] == [
            logging.WARNING,
            logging.INFO,
            logging.WARNING,
        ]
    finally:
        store.close()
        server.stop()


def test_memory_counts_in_memory_while_the_backend_is_down(
    redis_installed: None, down_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    store = resilient(down_port, "memory", clock)
    server = RedisServer(tmp_path / "redis", port=down_port)
    try:
        assert [store.hit("k", T0, HOUR) for _ in range(3)] == [1, 2, 3]
        assert store.add_release("Alice@Example.com", ("r",), T0).releases == 1
        assert store.reputation("alice@example.com") is not None
        bounce = hard_bounce("bob@example.net", NOW)
        assert store.add_bounce(bounce) == bounce
        assert store.hard_bounces(NOW) == [bounce]
        assert store.forget_bounce("bob@example.net") is True
        assert [level for level, _ in log_lines(caplog)] == [logging.WARNING]
        assert log_lines(caplog)[0][1].endswith("; counting in memory until it answers again")
        server.start()
        clock.now += 5.0
        # The backend answers again (a new, empty server): what the outage wrote is
        # merged into it first, then this hit counts on top.
        assert store.hit("k", T0, HOUR) == 4
        assert store.reputation("alice@example.com") == Reputation(
            "alice@example.com", 1, T0, ("r",)
        )
        assert store.hard_bounces(NOW) == []  # added, then forgotten, in that order
        assert log_lines(caplog)[1] == (
            logging.INFO,
            "state: backend back after 5.0 s, merged 3 events, 1 releases, 1 bounces,"
            " 1 bounce forgets from the outage",
        )
        assert len(log_lines(caplog)) == 2
    finally:
        store.close()
        server.stop()


def test_a_down_backend_is_tried_at_most_once_per_interval(
    silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung backend costs one timeout per retry interval, not one per call."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    store = resilient(silent_port, "memory", clock)
    try:
        _, first = timed(lambda: store.hit("k", T0, HOUR))
        assert first >= TIMEOUT
        results, rest = timed(lambda: [store.hit("k", T0, HOUR) for _ in range(20)])
        assert results == list(range(2, 22))
        assert rest < TIMEOUT  # no call waited on the dead server
        clock.now += 5.0
        _, probe = timed(lambda: store.hit("k", T0, HOUR))
        assert probe >= TIMEOUT  # the next try, which fails again
        assert len(log_lines(caplog)) == 1
    finally:
        store.close()


def test_sqlite_locked_falls_back_to_memory(
    locked_sqlite: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = ResilientStore(SqliteStore(locked_sqlite, TIMEOUT), "memory", logging.getLogger(LOGGER))
    try:
        assert store.hit("k", T0, HOUR) == 1
        assert store.down
        ((level, message),) = log_lines(caplog)
        assert level == logging.WARNING
        assert f"sqlite {locked_sqlite}: database is locked" in message
    finally:
        store.close()
