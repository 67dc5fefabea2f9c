"""The embedded state store: one SQLite file shared by the trustmilter processes of a host.

`SqliteStore(path, timeout)` opens (and if need be creates) the database:
its directory 0700 if missing, the file 0600 (SQLite gives its -wal and
-shm files the same mode), WAL journal so readers never wait for the
writer. Each `hit` is one ``BEGIN IMMEDIATE`` transaction — drop this
key's events older than the window, insert the event, count the key's
events in the window — so concurrent hits from threads and processes are
serialised by SQLite's write lock and each sees exactly the events
committed before it. Every `SWEEP_EVERY` hits a connection also deletes a
batch of expired events of any key, so keys nobody hits again do not
stay forever. Semantics as in `memory.py`.

Connections: sqlite3 connections must not be used by two threads at
once, and pymilter starts a thread per SMTP connection, so connections
are lent from a small pool (one per concurrently busy thread, at most
`POOL_IDLE` kept idle) rather than tied to threads that come and go.

Merging an outage back (state/journal.py) needs no special method here:
a failure is clean (a locked database or a failed COMMIT applies
nothing), so a journaled write is replayed through the plain method, and
a `hit` at a past time is just an event row at that time.

What it does not do: share state between hosts (that is Redis), or fsync
every hit (``synchronous=NORMAL``: with WAL a power loss may forget the
last moments of counts, never corrupt the file).

DIAGNOSTICS: every failure — the file cannot be created or opened, the
write lock is held longer than `timeout` (SQLite's busy timeout), a disk
or I/O error — raises `StateError` with one line:
``sqlite /var/lib/trustmilter/state.sqlite3: database is locked``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from trustmilter.state.base import (
    HardBounce,
    Reputation,
    SentMessage,
    StateError,
    decode_bounce,
    decode_sent,
)
from trustmilter.state.memory import (
    combined,
    latest_first,
    merge_bounce,
    next_reputation,
    next_spam_marks,
    normalize_sender,
    rank,
    unlearned,
)

T = TypeVar("T")

SWEEP_EVERY = 256  # hits per connection between sweeps of other keys' expired events
SWEEP_BATCH = 1000  # rows one sweep deletes at most, so a hit never stalls on a big backlog
POOL_IDLE = 8  # idle connections kept for reuse

SCHEMA_TABLES = ("events", "reputation", "bounces", "spam_marks", "sent")
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    key TEXT NOT NULL,
    at REAL NOT NULL,       -- epoch seconds of the event
    expires REAL NOT NULL   -- at + window: when no window can count it any more
);
CREATE INDEX IF NOT EXISTS events_key_at ON events (key, at);
CREATE INDEX IF NOT EXISTS events_expires ON events (expires);
CREATE TABLE IF NOT EXISTS reputation (
    sender TEXT PRIMARY KEY,  -- lower-case address
    releases INTEGER NOT NULL,
    last_release REAL NOT NULL,
    reasons TEXT NOT NULL     -- JSON list, deduplicated, in the order first seen
);
CREATE TABLE IF NOT EXISTS bounces (
    recipient TEXT PRIMARY KEY,  -- lower-case address
    expires REAL NOT NULL,       -- epoch seconds, the row is dead after this
    record TEXT NOT NULL         -- the HardBounce as a JSON object
);
CREATE INDEX IF NOT EXISTS bounces_expires ON bounces (expires);
-- Messages deleted as spam, per sender: a table of its own, so a file
-- written here still works for a version that knows only releases.
CREATE TABLE IF NOT EXISTS spam_marks (
    sender TEXT PRIMARY KEY,  -- lower-case address (a sender identity)
    marks INTEGER NOT NULL,
    last_mark REAL NOT NULL,
    reasons TEXT NOT NULL     -- JSON list, deduplicated, in the order first seen
);
CREATE TABLE IF NOT EXISTS sent (
    -- AUTOINCREMENT: numbers are never reused, so the rows numbered above
    -- (newest - max_entries) are the newest max_entries, found by the key.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE,  -- keyed hash of the Message-ID (mail/token.py)
    expires REAL NOT NULL,        -- epoch seconds, the row is dead after this
    record TEXT NOT NULL          -- the SentMessage as a JSON object
);
CREATE INDEX IF NOT EXISTS sent_expires ON sent (expires);
"""


class SqliteStore:
    """A StateStore in one SQLite file; safe for many threads and processes."""

    def __init__(self, path: str | os.PathLike[str], timeout: float) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        # Writers of this process take turns here rather than in SQLite's busy
        # loop: a thread holding the write lock may wait for the GIL between
        # statements while others verify DKIM, and SQLite's busy sleeps then
        # add up past the timeout under load. Other processes still meet
        # SQLite's own lock (busy timeout = `timeout`).
        self._writer = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        self._hits = 0
        with self._errors():
            _create_private_file(self.path)
            with self._connection() as db:
                _prepare(db, timeout)

    # ---- counting ---------------------------------------------------------

    def hit(self, key: str, now: float, window: float) -> int:
        """Record one event for `key` at `now`; the events in its window, this one included."""
        cutoff = now - window
        with self._lock:
            self._hits += 1
            sweep = self._hits % SWEEP_EVERY == 0

        def run(db: sqlite3.Connection) -> int:
            with _immediate(db):
                db.execute("DELETE FROM events WHERE key = ? AND at <= ?", (key, cutoff))
                db.execute("INSERT INTO events VALUES (?, ?, ?)", (key, now, now + window))
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM events WHERE key = ? AND at > ?", (key, cutoff)
                ).fetchone()
                if sweep:
                    db.execute(
                        "DELETE FROM events WHERE rowid IN"
                        " (SELECT rowid FROM events WHERE expires <= ? LIMIT ?)",
                        (now, SWEEP_BATCH),
                    )
            return int(count)

        return self._write(run)

    def count(self, key: str, now: float, window: float) -> int:
        """The events for `key` after ``now - window``, recording nothing."""

        def run(db: sqlite3.Connection) -> int:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM events WHERE key = ? AND at > ?", (key, now - window)
            ).fetchone()
            return int(count)

        return self._run(run)

    # ---- reputation -------------------------------------------------------

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one release of mail from `sender`; its reputation afterwards."""
        address = normalize_sender(sender)
        if not address:
            return unlearned(now)

        def run(db: sqlite3.Connection) -> Reputation:
            with _immediate(db):
                new = next_reputation(_reputation(db, address), address, reasons, now, lapse)
                db.execute(
                    "INSERT OR REPLACE INTO reputation VALUES (?, ?, ?, ?)",
                    (address, new.releases, new.last_release, json.dumps(list(new.reasons))),
                )
                marked = _spam_marks(db, address)
            return combined(new, marked) or new

        return self._write(run)

    def add_spam_mark(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one message of `sender` deleted as spam; its releases go, in the same
        transaction."""
        address = normalize_sender(sender)
        if not address:
            return unlearned(now)

        def run(db: sqlite3.Connection) -> Reputation:
            with _immediate(db):
                new = next_spam_marks(_spam_marks(db, address), address, reasons, now, lapse)
                db.execute(
                    "INSERT OR REPLACE INTO spam_marks VALUES (?, ?, ?, ?)",
                    (address, new.spam_marks, new.last_spam_mark,
                     json.dumps(list(new.spam_reasons))),
                )
                db.execute("DELETE FROM reputation WHERE sender = ?", (address,))
            return new

        return self._write(run)

    def reputation(self, sender: str) -> Reputation | None:
        """What is known about `sender` (both directions), or None."""
        address = normalize_sender(sender)

        def run(db: sqlite3.Connection) -> Reputation | None:
            with _snapshot(db):
                return combined(_reputation(db, address), _spam_marks(db, address))

        return self._run(run)

    def reputations(self) -> list[Reputation]:
        """Every sender with releases or spam marks, most releases first."""

        def run(db: sqlite3.Connection) -> list[Reputation]:
            with _snapshot(db):
                released = {row[0]: _row_reputation(row) for row in db.execute(
                    "SELECT sender, releases, last_release, reasons FROM reputation")}
                marked = {row[0]: _row_spam_marks(row) for row in db.execute(
                    "SELECT sender, marks, last_mark, reasons FROM spam_marks")}
            found = (combined(released.get(s), marked.get(s)) for s in released.keys() | marked)
            return rank(rep for rep in found if rep is not None)

        return self._run(run)

    def forget(self, sender: str) -> bool:
        """Drop what was learned about `sender`, both directions; True if there was anything."""
        address = normalize_sender(sender)

        def run(db: sqlite3.Connection) -> bool:
            with _immediate(db):
                released = db.execute("DELETE FROM reputation WHERE sender = ?", (address,))
                marked = db.execute("DELETE FROM spam_marks WHERE sender = ?", (address,))
                return released.rowcount > 0 or marked.rowcount > 0

        return self._write(run)

    # ---- hard bounces ------------------------------------------------------

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        """Record one report; the merged record. Expired rows go on the way."""
        address = normalize_sender(bounce.recipient)

        def run(db: sqlite3.Connection) -> HardBounce:
            with _immediate(db):
                db.execute("DELETE FROM bounces WHERE expires <= ?", (bounce.last_seen,))
                row = db.execute(
                    "SELECT record FROM bounces WHERE recipient = ?", (address,)
                ).fetchone()
                merged = merge_bounce(_row_bounce(row) if row else None, bounce)
                db.execute(
                    "INSERT OR REPLACE INTO bounces VALUES (?, ?, ?)",
                    (address, merged.expires, json.dumps(merged.as_json())),
                )
            return merged

        return self._write(run)

    def hard_bounces(self, now: float) -> list[HardBounce]:
        """The records not expired at `now`, latest report first."""

        def run(db: sqlite3.Connection) -> list[HardBounce]:
            rows = db.execute("SELECT record FROM bounces WHERE expires > ?", (now,))
            return latest_first((_row_bounce(row) for row in rows), now)

        return self._run(run)

    def forget_bounce(self, recipient: str) -> bool:
        """Drop the record of `recipient`; True if there was one."""
        return self._delete("DELETE FROM bounces WHERE recipient = ?", normalize_sender(recipient))

    # ---- the messages we sent -------------------------------------------------

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        """Record one message we sent; rows beyond the newest `max_entries` go, and a
        batch of expired ones: each step found through an index, never a count."""

        def run(db: sqlite3.Connection) -> None:
            with _immediate(db):
                # OR REPLACE: a digest recorded again gets a new number (the newest).
                inserted = db.execute(
                    "INSERT OR REPLACE INTO sent (digest, expires, record) VALUES (?, ?, ?)",
                    (sent.digest, sent.expires, json.dumps(sent.as_json())),
                )
                newest = int(inserted.lastrowid or 0)
                db.execute("DELETE FROM sent WHERE seq <= ?", (newest - max_entries,))
                db.execute(
                    "DELETE FROM sent WHERE rowid IN"
                    " (SELECT rowid FROM sent WHERE expires <= ? LIMIT ?)",
                    (sent.sent_at, SWEEP_BATCH),
                )

        self._write(run)

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        """The records among `digests` not expired at `now`, in the order asked."""
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return []

        def run(db: sqlite3.Connection) -> list[SentMessage]:
            rows = db.execute(
                f"SELECT digest, record FROM sent WHERE expires > ? AND digest IN"
                f" ({', '.join('?' * len(wanted))})",
                (now, *wanted),
            )
            found = {digest: _row_sent(record) for digest, record in rows}
            return [found[digest] for digest in wanted if digest in found]

        return self._run(run)

    def close(self) -> None:
        """Close the idle connections; busy ones close when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    # ---- connections and errors --------------------------------------------

    def _delete(self, statement: str, key: str) -> bool:
        """Run one ``DELETE ... WHERE <key column> = ?``; True if a row went."""

        def run(db: sqlite3.Connection) -> bool:
            with _immediate(db):
                deleted = db.execute(statement, (key,))
            return deleted.rowcount > 0

        return self._write(run)

    def _write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """`operation` (a write transaction) with this process's writers in line."""
        if not self._writer.acquire(timeout=self.timeout):
            raise StateError(f"sqlite {self.path}: busy longer than {self.timeout:g} s")
        try:
            return self._run(operation)
        finally:
            self._writer.release()

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """`operation` on a pooled connection, every failure as StateError."""
        with self._errors(), self._connection() as db:
            return operation(db)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a connection; a connection that failed is closed, not reused."""
        with self._lock:
            if self._closed:
                raise StateError(f"sqlite {self.path}: the store is closed")
            db = self._idle.pop() if self._idle else None
        if db is None:
            db = self._connect()
        try:
            yield db
        except BaseException:
            db.close()
            raise
        with self._lock:
            if not self._closed and len(self._idle) < POOL_IDLE:
                self._idle.append(db)
                return
        db.close()

    def _connect(self) -> sqlite3.Connection:
        """A new connection: autocommit (we BEGIN ourselves), busy timeout = `timeout`."""
        # check_same_thread=False: the pool hands a connection to one thread at
        # a time, but not always the same thread.
        db = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn sqlite3 and OS errors into a one-line StateError naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            text = _first_line(exc)
            if "locked" in text or "busy" in text:
                text += f" (busy longer than {self.timeout:g} s)"
            raise StateError(f"sqlite {self.path}: {text}") from exc
        except OSError as exc:
            raise StateError(f"sqlite {self.path}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that takes the write lock at BEGIN, not at the first write.

    Taking it up front is what makes a hit exact: with a deferred BEGIN two
    connections could both read the count before either writes.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextlib.contextmanager
def _snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: several SELECTs see the same committed state."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _use_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL unless it is already.

    The switch needs the file to itself, and SQLite reports "locked" at
    once, without its busy timeout, while another process is creating the
    schema of a new file; so this waits its turn here, up to `timeout`.
    """
    deadline = time.monotonic() + timeout
    while db.execute("PRAGMA journal_mode").fetchone() != ("wal",):
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return


def _prepare(db: sqlite3.Connection, timeout: float) -> None:
    """WAL and the schema, each only if missing: another process may hold the
    write lock right now, and a store that only reads the file needs neither."""
    # WAL is a property of the file, set once; a file system that cannot do
    # it keeps the rollback journal, which is slower but just as correct.
    _use_wal(db, timeout)
    marks = ", ".join("?" * len(SCHEMA_TABLES))
    (tables,) = db.execute(
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ({marks})",
        SCHEMA_TABLES,
    ).fetchone()
    if tables == len(SCHEMA_TABLES):
        return
    with _immediate(db):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)


def _create_private_file(path: Path) -> None:
    """Create the directory (0700) and the empty database file (0600) if missing."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
    with contextlib.suppress(FileExistsError):
        # O_EXCL: if another process creates it first, its file is the one.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def _reputation(db: sqlite3.Connection, address: str) -> Reputation | None:
    row = db.execute(
        "SELECT sender, releases, last_release, reasons FROM reputation WHERE sender = ?",
        (address,),
    ).fetchone()
    return _row_reputation(row) if row else None


def _row_reputation(row: tuple[str, int, float, str]) -> Reputation:
    sender, releases, last_release, reasons = row
    return Reputation(sender, int(releases), float(last_release), tuple(json.loads(reasons)))


def _spam_marks(db: sqlite3.Connection, address: str) -> Reputation | None:
    row = db.execute(
        "SELECT sender, marks, last_mark, reasons FROM spam_marks WHERE sender = ?", (address,)
    ).fetchone()
    return _row_spam_marks(row) if row else None


def _row_spam_marks(row: tuple[str, int, float, str]) -> Reputation:
    sender, marks, last_mark, reasons = row
    return Reputation(sender, 0, 0.0, spam_marks=int(marks), last_spam_mark=float(last_mark),
                      spam_reasons=tuple(json.loads(reasons)))


def _row_bounce(row: tuple[str]) -> HardBounce:
    """A stored record; StateError for one this version cannot read."""
    return decode_bounce(json.loads(row[0]))


def _row_sent(record: str) -> SentMessage:
    """A stored sent-message record; StateError for one this version cannot read."""
    try:
        fields = json.loads(record)
    except ValueError as exc:
        raise StateError(f"a stored sent-message record cannot be read: {exc}") from exc
    return decode_sent(fields)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
