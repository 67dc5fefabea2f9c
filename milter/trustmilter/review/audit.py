"""The audit log: who did what to which held messages, when, and how it ended.

Every action of the page (release, release without teaching, delete,
delete as spam, an allow-list request) and every account change of the
command line is one row in the page's database and one log line. The
page shows the rows newest first, a page at a time; nothing deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from trustmilter.i18n import N_
from trustmilter.review.database import Database

log = logging.getLogger("trustmilter.review")

# What the rows' `action` says.
RELEASE = "release"
RELEASE_QUIETLY = "release-no-learn"
DELETE = "delete"
DELETE_AS_SPAM = "delete-as-spam"
ALLOWLIST = "allowlist-request"
ACCOUNT_ADDED, PASSWORD_SET, ACCOUNT_REMOVED = "account-added", "password-set", "account-removed"
OK, FAILED = "ok", "failed"
# What the audit page says for each (translated there).
ACTION_WORDS = {
    RELEASE: N_("released"),
    RELEASE_QUIETLY: N_("released without teaching"),
    DELETE: N_("deleted"),
    DELETE_AS_SPAM: N_("deleted as spam"),
    ALLOWLIST: N_("allow-list requested"),
    ACCOUNT_ADDED: N_("account added"),
    PASSWORD_SET: N_("password set"),
    ACCOUNT_REMOVED: N_("account removed"),
}
OUTCOME_WORDS = {OK: N_("done"), FAILED: N_("failed")}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float  # epoch seconds
    who: str
    action: str
    queue_ids: tuple[str, ...]
    outcome: str  # OK or FAILED
    detail: str  # what was learned, what failed, the allow-list line


def _printable(text: str) -> str:
    """Control characters as escapes: a log line is one line, whatever a sender wrote."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class AuditLog:
    """The audit table of the page's database."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def record(self, at: float, who: str, action: str, queue_ids: Sequence[str],
               outcome: str, detail: str = "") -> AuditEntry:
        entry = AuditEntry(at, who, action, tuple(queue_ids), outcome, detail)
        with self._database.connect() as db:
            db.execute("INSERT INTO audit (at, who, action, queue_ids, outcome, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (at, who, action, " ".join(queue_ids), outcome, detail))
        log.info("%s", _printable(
            f"review: {who}: {action} {' '.join(queue_ids) or '-'}: {outcome}"
            + (f": {detail}" if detail else "")))
        return entry

    def count(self) -> int:
        with self._database.connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def newest(self, limit: int, offset: int = 0) -> list[AuditEntry]:
        """`limit` entries, newest first, skipping the `offset` newest."""
        with self._database.connect() as db:
            rows = db.execute("SELECT at, who, action, queue_ids, outcome, detail FROM audit "
                              "ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return [AuditEntry(at, who, action, tuple(ids.split()), outcome, detail)
                for at, who, action, ids, outcome, detail in rows]
