"""Writes made in memory during a real outage reach the real backend exactly once.

Real parts: a private redis-server (stalled by a busy script, stopped and
started again on its port with its data on disk, or out of memory in the
middle of a merge), a SQLite file whose write lock another connection
holds, and two real processes sharing one Redis. Forty threads stand for
forty milter sessions and keep writing through the outage and the
moment of recovery; afterwards the backend holds exactly the hits,
releases, bounce reports, spam marks and sent-message records they made.

Run as a script (``python test_state_mergeback.py worker URL PREFIX``),
this file is one of those processes.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from test_state_backends import HOUR, THREADS, hard_bounce
from trustmilter.state.base import Reputation, SentMessage, StateStore
from trustmilter.state.journal import OutageJournal, apply
from trustmilter.state.open import ResilientStore
from trustmilter.state.redis import RedisStore
from trustmilter.state.sqlite import SqliteStore
from trustmilter.testing.redisserver import RedisServer, free_port

TIMEOUT = 0.3  # the store's bound per operation: well under the outages below
RETRY = 0.1  # seconds between probes of a backend that is down
STALL = 1.2  # seconds a busy script keeps the server from answering
SETTLE = 15.0  # seconds a store gets to merge after the outage
LOGGER = "test.state.mergeback"
KEY = "robot"
SENDER = "robot@example.com"
GONE = "gone@example.net"
SPAMMER = "spammer@example.org"  # apart from SENDER: a spam mark cancels releases
DAY = 86400.0

# Keeps the server busy for ARGV[1] microseconds: every client waits, and what
# they sent meanwhile runs afterwards, also for those that timed out.
BUSY_SCRIPT = """
local start = redis.call('TIME')
local t0 = start[1] * 1000000 + start[2]
while true do
  local now = redis.call('TIME')
  if now[1] * 1000000 + now[2] - t0 > tonumber(ARGV[1]) then return 1 end
end
"""


# ---- sessions: forty threads writing until told to stop -------------------------------


@dataclass(frozen=True, slots=True)
class Tally:
    """What the sessions wrote, each call counted once."""

    hits: int
    releases: int
    bounces: int


class Sessions:
    """`threads` threads acting as milter sessions on `store`: every message one rate
    hit on KEY; every 10th also a release of SENDER, every 25th a bounce report."""

    def __init__(self, store: StateStore, threads: int = THREADS, pause: float = 0.02) -> None:
        self.store = store
        self.pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = [0, 0, 0]
        self.errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._session, args=(n,), daemon=True)
            for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def hits(self) -> int:
        with self._lock:
            return self._counts[0]

    def wait_for(self, hits: int, timeout: float = 10.0) -> None:
        """Until the sessions have made `hits` hits in all."""
        deadline = time.monotonic() + timeout
        while self.hits < hits:
            assert time.monotonic() < deadline, f"only {self.hits} hits in {timeout} s"
            assert not self.errors, self.errors
            time.sleep(0.01)

    def stop(self) -> Tally:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a session hung"
        assert not self.errors, self.errors
        return Tally(*self._counts)

    def _session(self, n: int) -> None:
        message = 0
        try:
            while not self._stop.is_set():
                now = time.time()
                self.store.hit(KEY, now, HOUR)
                self._count(0)
                if message % 10 == n % 10:
                    self.store.add_release(SENDER, (f"r{n}",), now)
                    self._count(1)
                if message % 25 == n % 25:
                    self.store.add_bounce(hard_bounce(GONE, now))
                    self._count(2)
                message += 1
                time.sleep(self.pause)
        except BaseException as exc:
            with self._lock:
                self.errors.append(exc)

    def _count(self, which: int) -> None:
        with self._lock:
            self._counts[which] += 1


def settle(store: ResilientStore) -> None:
    """Until the store is up and its journal merged (probing as a session would)."""
    deadline = time.monotonic() + SETTLE
    while store.down or store.pending:
        assert time.monotonic() < deadline, f"still down, {store.pending} writes pending"
        store.count(KEY, time.time(), HOUR)
        time.sleep(RETRY / 2)


def resilient(backend: StateStore) -> ResilientStore:
    return ResilientStore(backend, "memory", logging.getLogger(LOGGER), retry_interval=RETRY)


def merged_events(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The event counts of the merge lines logged so far."""
    found = [re.search(r"merged (\d+) events", r.getMessage()) for r in caplog.records
             if r.name == LOGGER]
    return [int(match.group(1)) for match in found if match]


def warm_up(backend: RedisStore, connections: int, now: float) -> None:
    """Scripts loaded and `connections` connections open, as on a server that has
    run a while: a command sent into a stall then really is sent (a new connection
    would still be greeting the server, a missing script be refused after it)."""
    backend.hit("warm-up", now, HOUR)
    backend.add_release("warm-up@example.com", (), now)
    backend.add_bounce(hard_bounce("warm-up@example.net", now))
    backend.add_spam_mark("warm-up@example.org", (), now)
    backend.remember_sent(sent_record("warm-up", now), 1_000_000)
    pool = backend._client.connection_pool
    opened = [pool.get_connection() for _ in range(connections)]
    for connection in opened:
        pool.release(connection)


def sent_record(name: str, now: float) -> SentMessage:
    """A record of one message we sent, its digest made from `name`."""
    return SentMessage(uuid.uuid5(uuid.NAMESPACE_URL, name).hex * 2, "", now, now + DAY)


def stall(server: RedisServer, seconds: float) -> None:
    """Keep `server` busy for `seconds` (returns when it answers again)."""
    client = redis.Redis.from_url(server.url, socket_timeout=seconds + 10)
    try:
        client.eval(BUSY_SCRIPT, 0, int(seconds * 1_000_000))
    finally:
        client.close()


@pytest.fixture
def admin() -> Iterator[list[redis.Redis]]:
    """Clients the test opens to look into its servers, closed afterwards."""
    clients: list[redis.Redis] = []
    yield clients
    for client in clients:
        client.close()


def redis_tally(url: str, prefix: str, admin: list[redis.Redis]) -> Tally:
    """What a Redis holds: events of KEY, releases of SENDER, reports of GONE."""
    client = redis.Redis.from_url(url, decode_responses=True)
    admin.append(client)
    record = client.get(f"{prefix}bounce:{GONE}")
    return Tally(
        int(client.zcard(f"{prefix}rate:{KEY}")),
        int(client.hget(f"{prefix}rep:{SENDER}", "releases") or 0),
        int(json.loads(record)["bounces"]) if record else 0,
    )


def store_tally(store: StateStore) -> Tally:
    reputation = store.reputation(SENDER)
    bounces = {b.recipient: b.bounces for b in store.hard_bounces(time.time())}
    return Tally(
        store.count(KEY, time.time(), HOUR),
        reputation.releases if reputation else 0,
        bounces.get(GONE, 0),
    )


# ---- Redis ----------------------------------------------------------------------------


def test_a_stalled_redis_with_forty_sessions_ends_exact(
    redis_installed: None, tmp_path: Path, admin: list[redis.Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server stops answering for a while but runs what was sent meanwhile
    afterwards, including writes the sessions gave up on and journaled."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    prefix = f"t:{uuid.uuid4().hex}:"
    with RedisServer(tmp_path / "redis") as server:
        backend = RedisStore(server.url, prefix, TIMEOUT)
        warm_up(backend, THREADS, time.time())
        store = resilient(backend)
        sessions = Sessions(store)
        sessions.start()
        try:
            sessions.wait_for(THREADS * 3)
            stall(server, STALL)
            settle(store)
            sessions.wait_for(sessions.hits + THREADS * 3)  # and on, with the backend back
        finally:
            made = sessions.stop()
        settle(store)
        assert sum(merged_events(caplog)) > 0  # there was an outage, and it was merged
        assert redis_tally(server.url, prefix, admin) == made
        assert store_tally(store) == made
        store.close()


def test_redis_stopped_and_started_again_with_forty_sessions_ends_exact(
    redis_installed: None, tmp_path: Path, admin: list[redis.Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    prefix = f"t:{uuid.uuid4().hex}:"
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        store = resilient(RedisStore(server.url, prefix, TIMEOUT))
        sessions = Sessions(store)
        sessions.start()
        try:
            sessions.wait_for(THREADS * 3)
            server.stop()
            sessions.wait_for(sessions.hits + THREADS * 5)  # counted in memory meanwhile
            server.start()  # same port, its data back from the AOF
            settle(store)
            sessions.wait_for(sessions.hits + THREADS * 3)
        finally:
            made = sessions.stop()
        settle(store)
        assert sum(merged_events(caplog)) >= THREADS * 5
        assert redis_tally(server.url, prefix, admin) == made
        store.close()
    finally:
        server.stop()


def test_writes_that_timed_out_but_ran_are_not_merged_twice(
    redis_installed: None, tmp_path: Path, admin: list[redis.Redis]
) -> None:
    """A hit, a release and a bounce are sent just as the server stalls: each times
    out here, is journaled, and still runs on the server once it wakes."""
    prefix = f"t:{uuid.uuid4().hex}:"
    now = time.time()
    with RedisServer(tmp_path / "redis") as server:
        backend = RedisStore(server.url, prefix, TIMEOUT)
        store = resilient(backend)
        warm_up(backend, 3, now)
        staller = threading.Thread(target=stall, args=(server, 1.0))
        staller.start()
        time.sleep(0.1)
        writes = [
            threading.Thread(target=call) for call in (
                lambda: store.hit(KEY, now, HOUR),
                lambda: store.add_release(SENDER, ("r",), now),
                lambda: store.add_bounce(hard_bounce(GONE, now)),
            )
        ]
        for thread in writes:
            thread.start()
        for thread in writes:
            thread.join(timeout=10)
        staller.join(timeout=10)
        assert store.down and store.pending == 3
        # The server ran all three after all: merging them again must change nothing.
        assert redis_tally(server.url, prefix, admin) == Tally(1, 1, 1)
        settle(store)
        assert redis_tally(server.url, prefix, admin) == Tally(1, 1, 1)
        store.close()


def test_a_merge_cut_short_by_the_server_finishes_on_the_next_probe(
    redis_installed: None, tmp_path: Path, admin: list[redis.Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server returns, then refuses writes (out of memory) partway through the
    merge: what it took stays, the rest is merged at the next probe, nothing twice."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    prefix = f"t:{uuid.uuid4().hex}:"
    port = free_port()
    clock = [100.0]
    store = ResilientStore(
        RedisStore(f"redis://127.0.0.1:{port}/0", prefix, TIMEOUT), "memory",
        logging.getLogger(LOGGER), retry_interval=5.0, monotonic=lambda: clock[0],
    )
    now = time.time()
    events, releases = 3000, 30
    for i in range(events):  # nobody listens on the port yet: all in memory
        store.hit(KEY, now + i / 1000, HOUR)
        if i % (events // releases) == 0:
            store.add_release(SENDER, (f"r{i}",), now)
    assert store.down and store.pending == events + releases
    with RedisServer(tmp_path / "redis", port=port) as server:
        client = redis.Redis.from_url(server.url)
        admin.append(client)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 100_000)  # room for part of the journal
        clock[0] += 5.0
        store.count(KEY, now, HOUR)
        first = redis_tally(server.url, prefix, admin)
        assert 0 < first.hits < events
        assert store.down and store.pending == events + releases - first.hits - first.releases
        client.config_set("maxmemory", 0)
        clock[0] += 5.0
        assert store.count(KEY, now + 10, HOUR) == events
        assert not store.down and store.pending == 0
        assert redis_tally(server.url, prefix, admin) == Tally(events, releases, 0)
        assert merged_events(caplog) == [events]
    store.close()


def test_replaying_a_token_twice_applies_it_once(redis_server: RedisServer) -> None:
    prefix = f"t:{uuid.uuid4().hex}:"
    store = RedisStore(redis_server.url, prefix, 5.0)
    journal = OutageJournal(10)
    now = time.time()
    writes = [
        journal.entry("hit", (KEY, now, HOUR), now + HOUR),
        journal.entry("add_release", (SENDER, ("r",), now, math.inf)),
        journal.entry("add_bounce", (hard_bounce(GONE, now),)),
    ]
    try:
        first = [apply(store, entry) for entry in writes]
        again = [apply(store, entry) for entry in writes]
        assert first[0] == 1 and first[1].releases == 1 and first[2].bounces == 1
        assert again == first  # the same answers, nothing added
        assert store.count(KEY, now, HOUR) == 1
        # The same write made live (no token) does count: tokens are what dedupe.
        assert store.add_release(SENDER, ("r",), now).releases == 2
    finally:
        store.close()


class Reviews:
    """`threads` threads on `store`, each in a loop marking SPAMMER's mail as spam and
    remembering one message it sent (a digest of its own each time); what each
    thread wrote is kept, so the test knows every record that must be there."""

    def __init__(self, store: StateStore, threads: int = THREADS, pause: float = 0.02) -> None:
        self.store = store
        self.pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.marks = 0
        self.sent: list[SentMessage] = []
        self.errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._review, args=(n,), daemon=True)
            for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_for(self, marks: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.made() < marks:
            assert time.monotonic() < deadline, f"only {self.made()} marks in {timeout} s"
            assert not self.errors, self.errors
            time.sleep(0.01)

    def made(self) -> int:
        with self._lock:
            return self.marks

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a session hung"
        assert not self.errors, self.errors

    def _review(self, n: int) -> None:
        message = 0
        try:
            while not self._stop.is_set():
                now = time.time()
                self.store.add_spam_mark(SPAMMER, (f"s{n % 4}",), now)
                record = sent_record(f"{n}.{message}", now)
                self.store.remember_sent(record, 1_000_000)
                with self._lock:
                    self.marks += 1
                    self.sent.append(record)
                message += 1
                time.sleep(self.pause)
        except BaseException as exc:
            with self._lock:
                self.errors.append(exc)


def test_spam_marks_and_sent_records_survive_a_redis_restart_with_forty_sessions(
    redis_installed: None, tmp_path: Path, admin: list[redis.Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopped and started again on its port: every spam mark counted once, every
    record of a message we sent there, the latest mark's time kept."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    prefix = f"t:{uuid.uuid4().hex}:"
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        backend = RedisStore(server.url, prefix, TIMEOUT)
        store = resilient(backend)
        reviews = Reviews(store)
        reviews.start()
        try:
            reviews.wait_for(THREADS * 2)
            server.stop()
            reviews.wait_for(reviews.made() + THREADS * 4)  # in memory meanwhile
            assert store.down
            server.start()  # same port, its data back from the AOF
            settle(store)
            reviews.wait_for(reviews.made() + THREADS * 2)
        finally:
            reviews.stop()
        settle(store)
        merged = [r.getMessage() for r in caplog.records
                  if r.name == LOGGER and "merged" in r.getMessage()]
        assert merged and all(re.search(r"\d+ spam marks, \d+ sent messages", m)
                              for m in merged), merged
        client = redis.Redis.from_url(server.url, decode_responses=True)
        admin.append(client)
        assert int(client.hget(f"{prefix}spam:{SPAMMER}", "marks") or 0) == reviews.marks
        assert client.hlen(f"{prefix}sent:records") == len(reviews.sent)
        assert client.zcard(f"{prefix}sent") == len(reviews.sent)
        now = time.time()
        digests = [record.digest for record in reviews.sent]
        assert backend.sent_messages(digests, now) == reviews.sent
        marked = backend.reputation(SPAMMER)
        assert marked is not None
        assert marked.spam_marks == reviews.marks
        assert marked.last_spam_mark == max(record.sent_at for record in reviews.sent)
        assert set(marked.spam_reasons) == {"s0", "s1", "s2", "s3"}
        store.close()
    finally:
        server.stop()


def test_a_spam_mark_that_timed_out_but_ran_is_not_merged_twice(
    redis_installed: None, tmp_path: Path, admin: list[redis.Redis]
) -> None:
    """A spam mark and a sent record are sent just as the server stalls: each times
    out here, is journaled, and still runs on the server once it wakes. The mark
    counts once, the record is there once and as it was written."""
    prefix = f"t:{uuid.uuid4().hex}:"
    now = time.time()
    record = sent_record("ambiguous", now)
    with RedisServer(tmp_path / "redis") as server:
        backend = RedisStore(server.url, prefix, TIMEOUT)
        store = resilient(backend)
        warm_up(backend, 2, now)
        staller = threading.Thread(target=stall, args=(server, 1.0))
        staller.start()
        time.sleep(0.1)
        writes = [
            threading.Thread(target=call) for call in (
                lambda: store.add_spam_mark(SPAMMER, ("s",), now),
                lambda: store.remember_sent(record, 1_000_000),
            )
        ]
        for thread in writes:
            thread.start()
        for thread in writes:
            thread.join(timeout=10)
        staller.join(timeout=10)
        assert store.down and store.pending == 2
        client = redis.Redis.from_url(server.url, decode_responses=True)
        admin.append(client)

        def stored() -> tuple[str | None, float | None, str | None]:
            return (client.hget(f"{prefix}spam:{SPAMMER}", "marks"),
                    client.zscore(f"{prefix}sent", record.digest),
                    client.hget(f"{prefix}sent:records", record.digest))

        # The server ran both after all: merging them again must change nothing.
        ran = stored()
        assert ran[0] == "1" and ran[2] is not None
        settle(store)
        assert stored() == ran
        assert backend.sent_messages([record.digest], now) == [record]
        store.close()


def test_a_spam_mark_replayed_spares_what_came_after_it(redis_server: RedisServer) -> None:
    """The second application of a token is a no-op also in what the mark deletes:
    a release another process recorded in between stays."""
    prefix = f"t:{uuid.uuid4().hex}:"
    store = RedisStore(redis_server.url, prefix, 5.0)
    journal = OutageJournal(10)
    now = time.time()
    mark = journal.entry("add_spam_mark", (SENDER, ("s",), now, math.inf), math.inf)
    record = sent_record("twice", now)
    remember = journal.entry("remember_sent", (record, 100), record.expires)
    try:
        store.add_release(SENDER, ("before",), now - 10)
        first = apply(store, mark)
        assert first == Reputation(SENDER, 0, 0.0, spam_marks=1, last_spam_mark=now,
                                   spam_reasons=("s",))
        released = store.add_release(SENDER, ("after",), now + 1)
        assert released.releases == 1 and released.spam_marks == 1
        assert apply(store, mark) == first  # applied before: the answer it would have had
        assert store.reputation(SENDER) == released
        apply(store, remember)
        apply(store, remember)
        assert store.sent_messages([record.digest], now) == [record]
        # The same mark made live (no token) does count, and cancels the release.
        assert store.add_spam_mark(SENDER, ("s",), now + 2).spam_marks == 2
        assert store.reputation(SENDER) == Reputation(
            SENDER, 0, 0.0, spam_marks=2, last_spam_mark=now + 2, spam_reasons=("s",))
    finally:
        store.close()


def test_redis_keeps_each_half_one_lapse_after_its_later_time(
    redis_server: RedisServer,
) -> None:
    """A release or spam mark merged late does not shorten its hash's life: the hash
    expires one lapse after the later of the two times, not the merged one."""
    prefix = f"t:{uuid.uuid4().hex}:"
    store = RedisStore(redis_server.url, prefix, 5.0)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    now, lapse = time.time(), 3600.0
    try:
        store.add_release(SENDER, ("live",), now, lapse)
        store.add_release(SENDER, ("outage",), now - 3000, lapse)
        store.add_spam_mark(SPAMMER, ("live",), now, lapse)
        store.add_spam_mark(SPAMMER, ("outage",), now - 3000, lapse)
        for key in (f"{prefix}rep:{SENDER}", f"{prefix}spam:{SPAMMER}"):
            expires_ms = int(client.execute_command("PEXPIRETIME", key))
            assert expires_ms == math.ceil((now + lapse) * 1000), key
    finally:
        client.close()
        store.close()


# ---- two processes on one Redis ----------------------------------------------------------


def test_two_processes_each_merge_their_own_outage_exactly(
    redis_installed: None, tmp_path: Path, admin: list[redis.Redis]
) -> None:
    """milter.processes > 1: each process journals and merges its own writes."""
    prefix = f"t:{uuid.uuid4().hex}:"
    here = Path(__file__).resolve()
    with RedisServer(tmp_path / "redis") as server:
        workers = [
            subprocess.Popen(
                [sys.executable, str(here), "worker", server.url, prefix, str(THREADS // 2)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=here.parent,
            )
            for _ in range(2)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "writing"
            time.sleep(0.3)
            stall(server, STALL)
            time.sleep(0.5)
            reports = [json.loads(worker.communicate("stop\n", timeout=SETTLE + 10)[0])
                       for worker in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        assert all(report["merged_events"] > 0 for report in reports), reports
        made = Tally(*(sum(report[field] for report in reports)
                       for field in ("hits", "releases", "bounces")))
        assert redis_tally(server.url, prefix, admin) == made


def worker(url: str, prefix: str, threads: int) -> None:
    """One milter process: sessions on a ResilientStore until "stop" on stdin;
    then merged, it prints what it wrote and the events its merges carried."""
    merged: list[int] = []

    class MergeLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = re.search(r"merged (\d+) events", record.getMessage())
            if found:
                merged.append(int(found.group(1)))

    log = logging.getLogger(LOGGER)
    log.addHandler(MergeLines())
    log.setLevel(logging.INFO)
    store = resilient(RedisStore(url, prefix, TIMEOUT))
    sessions = Sessions(store, threads)
    sessions.start()
    sessions.wait_for(threads)
    print("writing", flush=True)
    sys.stdin.readline()
    made = sessions.stop()
    settle(store)
    store.close()
    print(json.dumps({"hits": made.hits, "releases": made.releases, "bounces": made.bounces,
                      "merged_events": sum(merged)}), flush=True)


# ---- SQLite -------------------------------------------------------------------------------


def test_a_locked_sqlite_with_forty_sessions_ends_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = tmp_path / "state.sqlite3"
    store = resilient(SqliteStore(path, TIMEOUT))
    sessions = Sessions(store)
    sessions.start()
    try:
        sessions.wait_for(THREADS * 3)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            sessions.wait_for(sessions.hits + THREADS * 5)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        settle(store)
        sessions.wait_for(sessions.hits + THREADS * 3)
    finally:
        made = sessions.stop()
    settle(store)
    store.close()
    assert sum(merged_events(caplog)) >= THREADS * 5
    check = SqliteStore(path, 5.0)
    try:
        assert store_tally(check) == made
    finally:
        check.close()


# ---- order of arrival does not matter (every backend) ------------------------------------


def test_a_release_merged_late_keeps_the_later_time(state_store: StateStore) -> None:
    now = time.time()
    state_store.add_release(SENDER, ("live",), now)
    merged = state_store.add_release(SENDER, ("outage",), now - 600)
    assert merged == Reputation(SENDER, 2, now, ("live", "outage"))
    assert state_store.reputation(SENDER) == merged


def test_a_spam_mark_merged_late_keeps_the_later_time(state_store: StateStore) -> None:
    now = time.time()
    state_store.add_spam_mark(SPAMMER, ("live",), now)
    merged = state_store.add_spam_mark(SPAMMER, ("outage",), now - 600)
    assert merged == Reputation(SPAMMER, 0, 0.0, spam_marks=2, last_spam_mark=now,
                                spam_reasons=("live", "outage"))
    assert state_store.reputation(SPAMMER) == merged
    # Lapses are reckoned from the later mark too: the late one does not end them.
    assert state_store.add_spam_mark(SPAMMER, (), now - 500, lapse=100).spam_marks == 3


def test_a_sent_record_written_twice_is_written_once(state_store: StateStore) -> None:
    """What a replay of remember_sent does: no replay variant is needed."""
    now = time.time()
    record = sent_record("replayed", now)
    other = sent_record("other", now + 1)
    state_store.remember_sent(record, 100)
    state_store.remember_sent(other, 100)
    state_store.remember_sent(record, 100)
    assert state_store.sent_messages([record.digest, other.digest], now) == [record, other]


def test_a_bounce_merged_late_keeps_the_later_report(state_store: StateStore) -> None:
    now = time.time()
    later = hard_bounce(GONE, now, status="5.1.10", cause="host unknown")
    state_store.add_bounce(later)
    merged = state_store.add_bounce(hard_bounce(GONE, now - 600))
    assert (merged.status, merged.cause, merged.last_seen, merged.expires) == (
        "5.1.10", "host unknown", now, later.expires)
    assert (merged.first_seen, merged.bounces) == (now - 600, 2)
    assert state_store.hard_bounces(now) == [merged]


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
