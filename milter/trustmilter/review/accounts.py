"""Local accounts of the review page: names, roles and Argon2id password hashes.

Hashes come from argon2-cffi's PasswordHasher (Argon2id, a random salt
per hash, the parameters of RFC 9106's second recommended option). When
its parameters change in a later version, the next login that proves the
password stores a new hash with the new ones (`check_password_needs_rehash`).
A name that is not an account is verified against a dummy hash all the
same, so the answer takes as long for a missing account as for a wrong
password. Each account carries a generation that changes with its
password: a session made before the change names the old one and ends.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from trustmilter.review.database import Database

Role = Literal["reviewer", "admin"]
ROLES: tuple[Role, ...] = ("reviewer", "admin")
# Letters, digits and . _ @ -: what a login form, a proxy header and a log
# line carry without quoting. Compared in lower case.
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}\Z")
MIN_PASSWORD = 10  # characters
MAX_PASSWORD = 1024  # characters; Argon2 takes any length, a request should not


class AccountError(Exception):
    """An account cannot be added, changed or removed as asked; one line."""


@dataclass(frozen=True, slots=True)
class Account:
    """One person who may use the page."""

    name: str
    role: Role
    created: float  # epoch seconds
    generation: str  # changes with the password (see module docstring)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def normal_name(name: str) -> str:
    """`name` in lower case; AccountError if it cannot be an account name."""
    lowered = name.strip().lower()
    if not _NAME.match(lowered):
        raise AccountError(f"not an account name (letters, digits, . _ @ -; at most 64): "
                           f"{name!r}")
    return lowered


def checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is too long: at most {MAX_PASSWORD} characters")
    return password


class Accounts:
    """The accounts table of the page's database."""

    def __init__(self, database: Database, hasher: PasswordHasher | None = None) -> None:
        self._database = database
        self._hasher = hasher or PasswordHasher()
        # Verified when the name is no account (see module docstring).
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    def add(self, name: str, role: Role, password: str, now: float) -> Account:
        name = normal_name(name)
        if role not in ROLES:
            raise AccountError(f"no such role: {role!r} (reviewer or admin)")
        hashed = self._hasher.hash(checked_password(password))
        account = Account(name, role, now, secrets.token_hex(16))
        with self._database.connect() as db:
            if db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"{name}: the account exists already")
            db.execute("INSERT INTO accounts (name, role, hash, created, generation) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (name, role, hashed, now, account.generation))
        return account

    def set_password(self, name: str, password: str) -> None:
        """A new password, and a new generation: the account's sessions end."""
        name = normal_name(name)
        hashed = self._hasher.hash(checked_password(password))
        with self._database.connect() as db:
            changed = db.execute("UPDATE accounts SET hash = ?, generation = ? WHERE name = ?",
                                 (hashed, secrets.token_hex(16), name)).rowcount
        if not changed:
            raise AccountError(f"{name}: no such account")

    def remove(self, name: str) -> None:
        name = normal_name(name)
        with self._database.connect() as db:
            if not db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount:
                raise AccountError(f"{name}: no such account")

    def get(self, name: str) -> Account | None:
        """The account named `name` (any case); None if there is none or it cannot be one."""
        try:
            name = normal_name(name)
        except AccountError:
            return None
        with self._database.connect() as db:
            row = db.execute("SELECT name, role, created, generation FROM accounts "
                             "WHERE name = ?", (name,)).fetchone()
        return _account(row) if row else None

    def all(self) -> list[Account]:
        with self._database.connect() as db:
            rows = db.execute("SELECT name, role, created, generation FROM accounts "
                              "ORDER BY name").fetchall()
        return [_account(row) for row in rows]

    def verify(self, name: str, password: str) -> Account | None:
        """The account if `password` is its password, else None (as slow either way)."""
        account = self.get(name)
        with self._database.connect() as db:
            row = (db.execute("SELECT hash FROM accounts WHERE name = ?",
                              (account.name,)).fetchone() if account else None)
        stored = row[0] if row else self._dummy_hash
        try:
            self._hasher.verify(stored, password[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            return None
        if account is None:
            return None
        if self._hasher.check_needs_rehash(stored):
            with self._database.connect() as db:
                db.execute("UPDATE accounts SET hash = ? WHERE name = ? AND hash = ?",
                           (self._hasher.hash(password), account.name, stored))
        return account


def _account(row: tuple[str, str, float, str]) -> Account:
    name, role, created, generation = row
    return Account(name, "admin" if role == "admin" else "reviewer", created, generation)
