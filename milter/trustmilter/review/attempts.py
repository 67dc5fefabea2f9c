"""Failed logins, counted per account name and per client address.

A login is refused WITHOUT checking its password once either its account
name or its client address had `attempts` failures within `window`
seconds: a guesser learns nothing more, whichever names or addresses it
spreads its guesses over, and cannot make the page spend Argon2's memory
on them. The counts live in the page's SQLite file rather than in
Flask-Limiter's storage: they must count failures only (not every
request), be keyed by the name in the form as well as by the address,
be shared by the server's threads and outlive a restart — an SQLite table
does all four with no other service, and Flask-Limiter would need a
storage server for the last two and a custom key and cost for the rest.
A success forgets the account's failures (not the address's).
"""

from __future__ import annotations

from trustmilter.review.database import Database


def account_key(name: str) -> str:
    return "account:" + name.strip().lower()[:128]


def address_key(address: str) -> str:
    return "address:" + address


class LoginAttempts:
    """The login_failures table of the page's database."""

    def __init__(self, database: Database, attempts: int, window: float) -> None:
        self._database = database
        self._attempts = attempts
        self._window = window

    def limited(self, keys: tuple[str, ...], now: float) -> bool:
        """Whether any of `keys` had `attempts` failures in the window before `now`."""
        with self._database.connect() as db:
            for key in keys:
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM login_failures WHERE key = ? AND at > ?",
                    (key, now - self._window)).fetchone()
                if count >= self._attempts:
                    return True
        return False

    def failed(self, keys: tuple[str, ...], now: float) -> None:
        """Count one failure for each key (and forget those older than the window)."""
        with self._database.connect() as db:
            db.execute("DELETE FROM login_failures WHERE at <= ?", (now - self._window,))
            db.executemany("INSERT INTO login_failures (key, at) VALUES (?, ?)",
                           [(key, now) for key in keys])

    def succeeded(self, key: str) -> None:
        with self._database.connect() as db:
            db.execute("DELETE FROM login_failures WHERE key = ?", (key,))
