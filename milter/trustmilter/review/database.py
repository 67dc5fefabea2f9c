"""The page's own SQLite file: accounts, the audit log, failed logins.

One file, ``review.sqlite3`` in review.data_dir, beside the session key.
The directory is made 0700 and every file in it 0600: password hashes,
the session key and who did what are for the page's user alone. A
connection is opened per operation (the page serves from several
threads; SQLite's own locking orders the writers), with a busy timeout
instead of failing at once when another writer holds the lock.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

DATABASE_NAME = "review.sqlite3"
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another's lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    -- changes with the password: sessions made before it end
    generation TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    queue_ids TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (key, at);
"""


class ReviewDataError(Exception):
    """The data directory or its database cannot be used; one line."""


def ensure_data_dir(data_dir: Path) -> Path:
    """`data_dir`, made 0700 if it was missing (its parents as the system has them)."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ReviewDataError(f"{data_dir}: cannot create the data directory: "
                              f"{error.strerror}") from error
    if not data_dir.is_dir():
        raise ReviewDataError(f"{data_dir}: not a directory")
    return data_dir


class Database:
    """The SQLite file of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = ensure_data_dir(data_dir) / DATABASE_NAME
        # Made here with its mode, not by SQLite (umask-dependent); SQLite's
        # journal takes the mode of the database file.
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        except OSError as error:
            raise ReviewDataError(f"{self.path}: cannot open: {error.strerror}") from error
        with self.connect() as connection:  # creates the file and its tables once
            connection.executescript(_SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose changes are committed at the end of the block."""
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        except sqlite3.Error as error:
            raise ReviewDataError(f"{self.path}: cannot open: {error}") from error
        try:
            with closing(connection), connection:  # commit, or roll back on an exception
                yield connection
        except sqlite3.Error as error:
            raise ReviewDataError(f"{self.path}: {error}") from error

    def hand_over(self, user: str) -> None:
        """Give the directory and the file to `user` (the page's account) when root
        made them: an administrator runs `review adduser` as root, the page runs as
        review.user and must still write both. Nothing happens for a missing user."""
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return
        for path in (self.path.parent, self.path):
            os.chown(path, entry.pw_uid, entry.pw_gid)
