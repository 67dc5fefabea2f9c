"""The state interface the rate and reputation checks use, and its errors.

Three things are kept: sliding-window event counts (how many messages a
key sent in the last hour — exact under concurrency, also across processes
and, with Redis, across hosts), learned reputation (how often mail from a
sender identity was released from quarantine, and how often it was deleted
as spam) and hard bounces (recipients our own
outbound mail could not reach: 5.1.x, docs/rules.md §6), kept for a policy-set
time after the last report, and the messages we sent ourselves (keyed
hashes of their Message-IDs, bounded and expiring: checks/replies.py
recognises replies to them). Backends: `memory.py` (one process;
the fallback when the real store is down), `sqlite.py` (the embedded
default), `redis.py` (a fleet of MTAs sharing one view).

Every method may raise `StateError` when the backend is unreachable or
fails; callers decide (policy `state.on_error`) and never hang: backends
bound each operation by `StateConfig.timeout`. Writes made in memory
while the backend was down are merged back into it when it returns
(`journal.py`, `open.ResilientStore`); a backend whose failures can hide
a success adds ``replay_<write>(token, ...)`` variants for that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol


class StateError(Exception):
    """The backend is unreachable or failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Reputation:
    """What the quarantine review taught about one sender, in both directions.

    A release ("not spam") builds trust, a spam mark (``quarantine delete
    --spam``) damages it. A spam mark cancels what releases had taught, so
    `releases` counts the releases since the last spam mark (all of them
    when there was none). checks/reputation.py says what the two counts
    mean together. The sender is an identity (mail/identity.py): a plain
    address is its own identity, so records stored before identities were
    used are found as before.
    """

    sender: str  # lower-case address, '' never stored
    releases: int
    last_release: float  # epoch seconds; 0.0 when there is no release
    reasons: tuple[str, ...] = ()  # verdict reasons of the released messages, deduplicated
    spam_marks: int = 0
    last_spam_mark: float = 0.0  # epoch seconds; 0.0 when there is no mark
    spam_reasons: tuple[str, ...] = ()  # verdict reasons of the marked messages, deduplicated


@dataclass(frozen=True, slots=True)
class HardBounce:
    """A recipient that bounced our own outbound mail permanently (5.1.x).

    Several reports for one recipient merge: `bounces` counts them,
    `first_seen` stays, everything else is the latest report's.
    """

    recipient: str  # lower-case address that could not be reached
    status: str  # RFC 3463 code of the latest report, e.g. "5.1.1"
    cause: str  # plain words: "user unknown", "host unknown", ...
    reporting_mta: str  # who reported it ('' unknown)
    sender: str  # our address whose mail bounced ('' unknown)
    message_id: str  # the returned message's Message-ID ('' unknown)
    diagnostic: str  # the remote server's words, clipped ('' none)
    client: str  # the IP address that delivered the bounce to us
    first_seen: float  # epoch seconds
    last_seen: float
    expires: float  # forgotten after this, unless reported again
    bounces: int = 1
    # What made the bounce verifiably ours ("token", "reporting-mta+dkim", ...:
    # bounce/ours.py); '' in records written before it was kept.
    ours: str = ""

    def as_json(self) -> dict[str, Any]:
        """The record as a JSON object (also how the stores keep it)."""
        return asdict(self)


def decode_bounce(fields: Any) -> HardBounce:
    """A HardBounce from its stored JSON object; StateError when it cannot be one
    (a record written by another version, or damaged)."""
    try:
        record = HardBounce(**fields)
        return replace(record, first_seen=float(record.first_seen),
                       last_seen=float(record.last_seen), expires=float(record.expires),
                       bounces=int(record.bounces))
    except (TypeError, ValueError) as exc:
        raise StateError(f"a stored hard-bounce record cannot be read: {exc}") from exc


def releases_current(reputation: Reputation, now: float, lapse: float) -> bool:
    """Whether its releases still count: the last one is under `lapse` seconds old."""
    return reputation.releases > 0 and reputation.last_release > now - lapse


def spam_marks_current(reputation: Reputation, now: float, lapse: float) -> bool:
    """Whether its spam marks still count: the last one is under `lapse` seconds old."""
    return reputation.spam_marks > 0 and reputation.last_spam_mark > now - lapse


def current(reputation: Reputation, now: float, lapse: float) -> Reputation | None:
    """`reputation` as it counts at `now`, or None when nothing in it does.

    Each direction lapses on its own, `lapse` seconds after its own last
    event: an old release is not trust any more, an old spam mark no longer
    damages a sender that has behaved since.
    """
    released = releases_current(reputation, now, lapse)
    marked = spam_marks_current(reputation, now, lapse)
    if not released and not marked:
        return None
    if not released:
        reputation = replace(reputation, releases=0, last_release=0.0, reasons=())
    if not marked:
        reputation = replace(reputation, spam_marks=0, last_spam_mark=0.0, spam_reasons=())
    return reputation
@dataclass(frozen=True, slots=True)
class SentMessage:
    """One message we sent, as remembered: keyed hashes only, never an address
    or a Message-ID in clear (mail/token.py), so a copy of the store tells
    nobody who wrote to whom."""

    digest: str  # keyed hash of its Message-ID
    sender: str  # keyed hash of its envelope sender; '' when the policy keeps none
    sent_at: float  # epoch seconds
    expires: float  # forgotten after this

    def as_json(self) -> dict[str, Any]:
        """The record as a JSON object (how SQLite and Redis keep it)."""
        return asdict(self)


def decode_sent(fields: Any) -> SentMessage:
    """A SentMessage from its stored JSON object; StateError when it cannot be one."""
    try:
        record = SentMessage(**fields)
        return replace(record, digest=str(record.digest), sender=str(record.sender),
                       sent_at=float(record.sent_at), expires=float(record.expires))
    except (TypeError, ValueError) as exc:
        raise StateError(f"a stored sent-message record cannot be read: {exc}") from exc


def is_current(reputation: Reputation, now: float, lapse: float) -> bool:
    """Whether anything learned about the sender still counts (see `current`)."""
    return current(reputation, now, lapse) is not None


class StateStore(Protocol):
    def hit(self, key: str, now: float, window: float) -> int:
        """Record one event for `key` at `now`; the events in (now - window, now],
        this one included. Atomic: N concurrent calls return 1..N exactly once each."""
        ...

    def count(self, key: str, now: float, window: float) -> int:
        """The events for `key` in (now - window, now], recording nothing."""
        ...

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one release of mail from `sender`; its reputation afterwards.
        A reputation whose last release is `lapse` seconds old or older has
        lapsed: this release starts it afresh (see `is_current`)."""
        ...

    def add_spam_mark(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one message of `sender` deleted as spam, held for `reasons`;
        its reputation afterwards. The mark cancels what releases taught
        (`releases` starts again from 0). Spam marks whose last one is `lapse`
        seconds old or older have lapsed: this one starts them afresh. One
        call is one write, atomic in every backend."""
        ...

    def reputation(self, sender: str) -> Reputation | None:
        """What is known about `sender` (releases and spam marks), or None."""
        ...

    def reputations(self) -> list[Reputation]:
        """Every sender with releases or spam marks, most releases first."""
        ...

    def forget(self, sender: str) -> bool:
        """Drop what was learned about `sender`, both directions; True if there was anything."""
        ...

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        """Record one report (`bounces` 1, first_seen = last_seen); the merged record."""
        ...

    def hard_bounces(self, now: float) -> list[HardBounce]:
        """The records not expired at `now`, latest report first."""
        ...

    def forget_bounce(self, recipient: str) -> bool:
        """Drop the record of `recipient`; True if there was one."""
        ...

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        """Record one message we sent (a digest sent again is recorded afresh);
        the oldest records go once there are more than `max_entries`, expired
        ones on the way. One call, one write."""
        ...

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        """The records among `digests` not expired at `now`, in the order asked."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
