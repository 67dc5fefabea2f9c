"""The quarantine review: held messages with trustmilter's reasons; release, delete.

NAME
    review - list, show, release and delete what trustmilter quarantined

DESCRIPTION
    A message trustmilter quarantines goes to Postfix's hold queue with its
    verdict header (policy `headers.trust_header`, default
    ``X-Trustmilter-Trust``; written by policy/evaluate.py `_headers` as
    ``low; score=8.0; reasons=a,b; action=quarantine; rules=r1``) inserted
    at the very top. `QuarantineReview` reads each held message's header
    section, takes the FIRST such field (ours; a copy the sender wrote
    sits below it) and reports queue ID, age, sender, recipients, subject
    and those reasons.

    A release teaches (docs/rules.md §7: releasing held mail tells the
    filter it was no spam): for every released message
    that trustmilter itself held (its header says ``action=quarantine``)
    and that has a sender, ``store.add_release(identity, reasons, now)``
    counts one release in the state store; after the policy's number of
    releases the reputation check lets that sender pass the checks that
    suspended it. A deletion as spam (``delete_as_spam``) teaches the
    other way: ``store.add_spam_mark(identity, reasons, now)`` cancels
    what releases taught, and enough marks make the reputation check
    distrust the sender. Both are keyed by the sender identity
    (mail/identity.py, the policy's `address_separators`): releasing mail
    from ``bounce+4711@example.com`` teaches about ``bounce@example.com``.
    Mail held by anything else, or bounces (the null sender, RFC 5321
    §4.5.5), teaches nothing either way: there is nobody, or no
    trustmilter reason, to learn about.

    Every queue ID is checked before anything is done: one unknown ID
    stops the whole command, so a typo never half-releases a batch.

DIAGNOSTICS
    `ReviewError` (one line): an ID that is not a queue ID or not in the
    hold queue, a Postfix command that failed (naming what was done before
    it), or a state store that failed after a release (the message is
    released, nothing learned).
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Any

from trustmilter.mail.encoded_words import decode_words
from trustmilter.mail.identity import PLAIN_IDENTITIES, Identities
from trustmilter.quarantine.body import BodyView, view_body
from trustmilter.quarantine.postfix import (
    InvalidQueueId,
    PostfixCommandError,
    QueueEntry,
    checked_queue_id,
)
from trustmilter.state.base import StateError

if TYPE_CHECKING:
    from trustmilter.quarantine.queue import HoldQueue
    from trustmilter.state.base import Reputation, StateStore

_FOLD = re.compile(r"\r?\n[ \t]+")
# Bytes of a held message read for its body view at most (its text shown is
# bounded anew, quarantine/body.py); a message may be as large as Postfix allows.
MAX_MESSAGE_READ = 4 * 1024 * 1024


class ReviewError(Exception):
    """The command cannot be done as asked; one line for the terminal."""


@dataclass(frozen=True, slots=True)
class TrustMark:
    """trustmilter's verdict header, parsed (see evaluate.py `_headers`)."""

    level: str  # "low"
    score: float | None
    reasons: tuple[str, ...]
    rules: tuple[str, ...]
    action: str  # "quarantine", or "" for a low-trust accept


def parse_trust_header(value: str) -> TrustMark | None:
    """The parts of ``low; score=8.0; reasons=a,b; action=quarantine; rules=r1``;
    None for a value that does not start with a trust level."""
    parts = [part.strip() for part in _FOLD.sub(" ", value).split(";")]
    if not parts or not parts[0] or "=" in parts[0]:
        return None
    fields: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, item = part.partition("=")
        if sep:
            fields[key.strip().lower()] = item.strip()
    try:
        score: float | None = float(fields["score"]) if "score" in fields else None
    except ValueError:
        score = None
    return TrustMark(
        level=parts[0].lower(),
        score=score,
        reasons=_names(fields.get("reasons", "")),
        rules=_names(fields.get("rules", "")),
        action=fields.get("action", "").lower(),
    )


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """One message in the hold queue, with what trustmilter said about it."""

    entry: QueueEntry
    sender: str  # the envelope sender from the queue file; '' for the null sender
    age: float  # seconds since Postfix received it
    subject: str  # decoded (RFC 2047); '' when there is none
    headers: tuple[tuple[str, str], ...]  # as stored, unfolded, top first
    mark: TrustMark | None  # None: trustmilter did not mark it

    @property
    def queue_id(self) -> str:
        return self.entry.queue_id

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.mark.reasons if self.mark else ()

    @property
    def held_by_trustmilter(self) -> bool:
        return self.mark is not None and self.mark.action == "quarantine"

    def as_json(self, with_headers: bool = False) -> dict[str, Any]:
        """The JSON object `quarantine list --json` and `show --json` print."""
        data: dict[str, Any] = {
            "queue_id": self.queue_id,
            "arrival_time": self.entry.arrival_time,
            "age_seconds": round(self.age),
            "size": self.entry.size,
            "sender": self.sender,
            "recipients": list(self.entry.recipients),
            "subject": self.subject,
            "held_by_trustmilter": self.held_by_trustmilter,
            "score": self.mark.score if self.mark else None,
            "reasons": list(self.reasons),
            "rules": list(self.mark.rules) if self.mark else [],
        }
        if with_headers:
            data["headers"] = [[name, value] for name, value in self.headers]
        return data


@dataclass(frozen=True, slots=True)
class Release:
    """One released message, and what the state store learned from it."""

    message: HeldMessage
    reputation: Reputation | None  # None: nothing was taught (see module docstring)

    def as_json(self) -> dict[str, Any]:
        learned = self.reputation
        return {
            "queue_id": self.message.queue_id,
            "sender": self.message.sender,
            "reasons": list(self.message.reasons),
            "learned": reputation_json(learned) if learned else None,
        }


@dataclass(frozen=True, slots=True)
class SpamDeletion:
    """One message deleted as spam, and the sender's reputation afterwards."""

    message: HeldMessage
    reputation: Reputation | None  # None: nothing was taught (see module docstring)

    def as_json(self) -> dict[str, Any]:
        marked = self.reputation
        return {
            "queue_id": self.message.queue_id,
            "sender": self.message.sender,
            "reasons": list(self.message.reasons),
            "marked": reputation_json(marked) if marked else None,
        }


def reputation_json(reputation: Reputation) -> dict[str, Any]:
    """A Reputation as JSON: both directions."""
    return {
        "sender": reputation.sender,
        "releases": reputation.releases,
        "last_release": reputation.last_release,
        "reasons": list(reputation.reasons),
        "spam_marks": reputation.spam_marks,
        "last_spam_mark": reputation.last_spam_mark,
        "spam_reasons": list(reputation.spam_reasons),
    }


class QuarantineReview:
    """The hold queue of one Postfix, read with the policy's trust header name.

    `queue` is Postfix's tools run directly (postfix.py, as root) or the
    privileged helper's client (review/helper/client.py, for the page).
    """

    def __init__(
        self,
        queue: HoldQueue,
        trust_header: str = "X-Trustmilter-Trust",
        clock: Callable[[], float] = time.time,
        lapse: float = math.inf,
        identities: Identities = PLAIN_IDENTITIES,
        remember: bool = False,
    ) -> None:
        self._queue = queue
        self._trust_header = trust_header.lower()
        self._clock = clock
        self._lapse = lapse  # seconds after which a reputation lapses (the policy's)
        self._identities = identities  # the policy's address_separators
        # remember: keep what was read of each held message while it stays in
        # the hold queue (the review page lists it again and again; a held
        # message's queue file does not change). Keyed by the whole queue
        # entry, so a queue ID Postfix reuses for another message is read anew.
        self._remember = remember
        self._read_before: dict[QueueEntry, HeldMessage] = {}
        self._read_lock = threading.Lock()  # the page serves from several threads

    def held(self, arrived_since: float | None = None) -> list[HeldMessage]:
        """Every held message, oldest first; only those that arrived at or after
        `arrived_since` (epoch seconds) when given, the others not even read."""
        listed = self._held_entries()
        if self._remember:
            with self._read_lock:  # forget what left the hold queue
                self._read_before = {entry: message for entry, message
                                     in self._read_before.items()
                                     if listed.get(entry.queue_id) == entry}
        entries = {queue_id: entry for queue_id, entry in listed.items()
                   if arrived_since is None or entry.arrival_time >= arrived_since}
        messages: list[HeldMessage] = []
        vanished: list[str] = []
        for entry in entries.values():
            try:
                messages.append(self._read(entry))
            except ReviewError:
                vanished.append(entry.queue_id)
        if vanished:
            # Released or deleted while we read (a race, not an error) — unless
            # it is still there, and postcat simply cannot read it.
            still = [qid for qid in vanished if qid in self._held_entries()]
            if still:
                self._read(entries[still[0]])  # raises with postcat's own words
        return messages

    def show(self, queue_id: str) -> HeldMessage:
        """One held message, headers included."""
        (entry,) = self._lookup([queue_id])
        return self._read(entry)

    def body(self, queue_id: str, limit: int = MAX_MESSAGE_READ) -> BodyView:
        """The held message's body as safe text (quarantine/body.py), from at most
        `limit` bytes of the message."""
        (entry,) = self._lookup([queue_id])
        try:
            raw, more = self._queue.read_message(entry.queue_id, limit)
        except PostfixCommandError as error:
            raise ReviewError(str(error)) from error
        return view_body(raw, message_truncated=more)

    def release(self, queue_ids: Iterable[str], store: StateStore | None) -> list[Release]:
        """Release each message from hold; teach `store` (None: teach nothing)."""
        messages = [self._read(entry) for entry in self._lookup(queue_ids)]
        released: list[Release] = []
        for message in messages:
            try:
                self._postfix(self._queue.release, message.queue_id)
            except ReviewError as error:
                raise ReviewError(_partly(error, [r.message.queue_id for r in released])) from error
            learned = None
            if store is not None and self._teaches(message):
                try:
                    learned = store.add_release(
                        self.identity(message), message.reasons, self._clock(), self._lapse
                    )
                except StateError as error:
                    raise ReviewError(
                        f"{message.queue_id}: released, but nothing learned: {error}"
                    ) from error
            released.append(Release(message, learned))
        return released

    def delete(self, queue_ids: Iterable[str]) -> list[str]:
        """Delete each held message; the IDs deleted. Deleting teaches nothing."""
        entries = self._lookup(queue_ids)
        for done, entry in enumerate(entries):
            try:
                self._postfix(self._queue.delete, entry.queue_id)
            except ReviewError as error:
                raise ReviewError(_partly(error, [e.queue_id for e in entries[:done]])) from error
        return [entry.queue_id for entry in entries]

    def delete_as_spam(self, queue_ids: Iterable[str], store: StateStore) -> list[SpamDeletion]:
        """Delete each held message and mark its sender's identity in `store` with the
        reasons it was held for (a "mark as spam": the sender loses learned trust)."""
        messages = [self._read(entry) for entry in self._lookup(queue_ids)]
        deleted: list[SpamDeletion] = []
        for message in messages:
            try:
                self._postfix(self._queue.delete, message.queue_id)
            except ReviewError as error:
                raise ReviewError(_partly(error, [d.message.queue_id for d in deleted])) from error
            marked = None
            if self._teaches(message):
                try:
                    marked = store.add_spam_mark(
                        self.identity(message), message.reasons, self._clock(), self._lapse
                    )
                except StateError as error:
                    raise ReviewError(
                        f"{message.queue_id}: deleted, but not marked as spam: {error}"
                    ) from error
            deleted.append(SpamDeletion(message, marked))
        return deleted

    def identity(self, message: HeldMessage) -> str:
        """The sender identity a release or spam mark of `message` is recorded under."""
        return self._identities.of(message.sender).address

    @staticmethod
    def _teaches(message: HeldMessage) -> bool:
        """Whether reviewing `message` teaches: held by trustmilter, and not a bounce."""
        return message.held_by_trustmilter and bool(message.sender)

    # ---- internals -------------------------------------------------------

    def _held_entries(self) -> dict[str, QueueEntry]:
        try:
            return {entry.queue_id: entry for entry in self._queue.held()}
        except PostfixCommandError as error:
            raise ReviewError(str(error)) from error

    def _lookup(self, queue_ids: Iterable[str]) -> list[QueueEntry]:
        """The held entries for `queue_ids` (each once, in the order given);
        ReviewError for the first that is not a queue ID or not held."""
        wanted = list(dict.fromkeys(queue_ids))
        for queue_id in wanted:
            try:
                checked_queue_id(queue_id)
            except InvalidQueueId as error:
                raise ReviewError(str(error)) from error
        held = self._held_entries()
        for queue_id in wanted:
            if queue_id not in held:
                raise ReviewError(f"{queue_id}: not in the hold queue")
        return [held[queue_id] for queue_id in wanted]

    def _read(self, entry: QueueEntry) -> HeldMessage:
        """The entry with its header section read from the queue file (or as
        read before, with its age brought up to date, when remembering)."""
        if self._remember:
            with self._read_lock:
                known = self._read_before.get(entry)
            if known is not None:
                return dataclasses.replace(
                    known, age=max(0.0, self._clock() - entry.arrival_time))
        message = self._read_file(entry)
        if self._remember:
            with self._read_lock:
                self._read_before[entry] = message
        return message

    def _read_file(self, entry: QueueEntry) -> HeldMessage:
        stored = self._postfix(self._queue.read, entry.queue_id)
        headers = _header_fields(stored.headers)
        values = [value for name, value in headers if name.lower() == self._trust_header]
        subjects = [value for name, value in headers if name.lower() == "subject"]
        return HeldMessage(
            entry=entry,
            sender=stored.sender,
            age=max(0.0, self._clock() - entry.arrival_time),
            subject=decode_words(subjects[0]) if subjects else "",
            headers=headers,
            mark=parse_trust_header(values[0]) if values else None,
        )

    @staticmethod
    def _postfix(action: Callable[[str], Any], queue_id: str) -> Any:
        try:
            return action(queue_id)
        except PostfixCommandError as error:
            raise ReviewError(str(error)) from error


def _partly(error: ReviewError, done: list[str]) -> str:
    """The error, and what was done before it (the queue changed under us)."""
    return f"{error} (done before it: {', '.join(done)})" if done else str(error)


def _header_fields(raw: bytes) -> tuple[tuple[str, str], ...]:
    """(name, unfolded value) pairs; bytes that are not ASCII stay as they were sent."""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return tuple((name, _FOLD.sub(" ", str(value)).strip()) for name, value in parsed.items())


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
