"""The in-process state store: tests, trials, and the fallback while the real one is down.

`MemoryStore` keeps sliding-window events, reputations (releases and spam
marks, apart), hard bounces and the messages we sent in dicts behind one
lock, so the threads pymilter runs (one per SMTP connection) share exact
counts. It is the reference semantics the SQLite and Redis stores follow,
and the helpers they share live here too:

- a key's events older than its window are dropped on every hit, and a
  key whose last window has passed is swept away, so the dicts stay
  bounded by the keys active within one window; the messages we sent are
  kept oldest first and trimmed to the caller's `max_entries` on every
  record;
- `hit` and `count` count every event after ``now - window``. An event
  stamped a little after `now` (the clock of another process or MTA a
  little ahead) counts as inside the window: counting only up to `now`
  could give two concurrent hits the same number, and exactness matters
  more here than a millisecond of clock skew;
- a sender's releases and its spam marks are kept as two halves
  (`combined` makes one record of them), and a spam mark drops the
  release half in the same step.

What it does not do: share anything with another process, or survive a
restart. It never raises `StateError`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from trustmilter.state.base import (
    HardBounce,
    Reputation,
    SentMessage,
    releases_current,
    spam_marks_current,
)
from trustmilter.surrogates import escape_surrogates

# Sweep keys whose window has passed after this many hits: often enough to
# bound memory, rarely enough that a hit stays O(its own key).
SWEEP_EVERY = 1024


def normalize_sender(sender: str) -> str:
    """The form a sender address is stored under: lower-case, no surrounding space.

    The local part is case-sensitive in theory (RFC 5321 §2.4) but not in
    practice; a release must teach about "Alice@Example.COM" and
    "alice@example.com" alike. Bytes that were not UTF-8 (an 8-bit MAIL FROM
    without SMTPUTF8 arrives with surrogate escapes) are stored as ``\\xNN``:
    SQLite and Redis take only text that encodes as UTF-8. An address with a
    literal backslash could only meet that form unquoted, which RFC 5321
    §4.1.2 does not allow (a backslash is only valid in a quoted local part).
    """
    return escape_surrogates(sender.strip().lower())


def merge_reasons(old: Iterable[str], new: Iterable[str]) -> tuple[str, ...]:
    """`old` then `new`, each reason once, in the order first seen."""
    return tuple(dict.fromkeys(reason for reason in (*old, *new) if reason))


def next_reputation(
    old: Reputation | None, address: str, reasons: tuple[str, ...], now: float, lapse: float
) -> Reputation:
    """`old` after one more release at `now`; a lapsed one starts afresh.

    Both are the release half of a sender's record: the stores keep releases
    and spam marks apart (see `combined`). The later of the two release times
    stays: a release merged back after an outage may be older than one another
    process recorded meanwhile.
    """
    if old is not None and not releases_current(old, now, lapse):
        old = None
    return Reputation(
        sender=address,
        releases=(old.releases if old else 0) + 1,
        last_release=max(old.last_release, now) if old else now,
        reasons=merge_reasons(old.reasons if old else (), reasons),
    )


def next_spam_marks(
    old: Reputation | None, address: str, reasons: tuple[str, ...], now: float, lapse: float
) -> Reputation:
    """The spam-mark half `old` after one more mark at `now`; lapsed marks start afresh.

    The later of the two mark times stays, as for releases: a mark merged back
    after an outage may be older than one another process recorded meanwhile.
    """
    if old is not None and not spam_marks_current(old, now, lapse):
        old = None
    return Reputation(
        sender=address,
        releases=0,
        last_release=0.0,
        spam_marks=(old.spam_marks if old else 0) + 1,
        last_spam_mark=max(old.last_spam_mark, now) if old else now,
        spam_reasons=merge_reasons(old.spam_reasons if old else (), reasons),
    )


def combined(released: Reputation | None, marked: Reputation | None) -> Reputation | None:
    """One sender's record from its release half and its spam-mark half (either may be
    missing). Kept apart so that a spam mark can drop the release half in the same
    write, and so that a store written by an older version reads as before."""
    if released is None or marked is None:
        return released or marked
    return replace(released, spam_marks=marked.spam_marks,
                   last_spam_mark=marked.last_spam_mark, spam_reasons=marked.spam_reasons)


def unlearned(now: float) -> Reputation:
    """What `add_release` returns for the null sender: nothing is stored for ''."""
    return Reputation(sender="", releases=0, last_release=now, reasons=())


def merge_bounce(old: HardBounce | None, new: HardBounce) -> HardBounce:
    """`new` (one report) added to what was recorded: counted, first sighting kept.

    An expired record counts as none, so a recipient that bounces again
    after months starts afresh. The later report's details win whichever
    arrives last: a report merged back after an outage may be older than
    one another process recorded meanwhile.
    """
    if old is None or old.expires <= new.last_seen:
        return replace(new, recipient=normalize_sender(new.recipient), bounces=1)
    latest = old if old.last_seen > new.last_seen else new
    return replace(
        latest,
        recipient=old.recipient,
        first_seen=min(old.first_seen, new.first_seen),
        bounces=old.bounces + 1,
    )


def latest_first(bounces: Iterable[HardBounce], now: float) -> list[HardBounce]:
    """The records not expired at `now`, latest report first; ties by address."""
    live = (b for b in bounces if b.expires > now)
    return sorted(live, key=lambda b: (-b.last_seen, b.recipient))


def trim_sent(records: OrderedDict[str, SentMessage], now: float, max_entries: int) -> None:
    """Drop records from the oldest end: expired ones, and any beyond `max_entries`.

    Oldest recorded first is nearly oldest expiring first (one `keep_days`
    for all); a record that expires out of turn (the setting was lowered)
    is dropped when it reaches the front, and no lookup returns it before.
    """
    while records:
        oldest = next(iter(records.values()))
        if len(records) <= max_entries and oldest.expires > now:
            return
        records.popitem(last=False)


def live_sent(records: Iterable[SentMessage | None], now: float) -> list[SentMessage]:
    """The records that exist and have not expired at `now`."""
    return [record for record in records if record is not None and record.expires > now]


def rank(reputations: Iterable[Reputation]) -> list[Reputation]:
    """Most releases first, then most spam marks; ties by address, so listings are stable."""
    return sorted(reputations, key=lambda rep: (-rep.releases, -rep.spam_marks, rep.sender))


@dataclass(slots=True)
class _Window:
    """One key's event times, sorted, and when the key may be dropped."""

    times: list[float]
    expires: float


class MemoryStore:
    """A StateStore in this process's memory; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._reputations: dict[str, Reputation] = {}  # the release halves
        self._spam_marks: dict[str, Reputation] = {}  # the spam-mark halves
        self._bounces: dict[str, HardBounce] = {}
        self._bounces_since_sweep = 0
        self._hits_since_sweep = 0
        self._sent: OrderedDict[str, SentMessage] = OrderedDict()

    def hit(self, key: str, now: float, window: float) -> int:
        """Record one event for `key` at `now`; the events in its window, this one included."""
        cutoff = now - window
        with self._lock:
            entry = self._windows.get(key)
            if entry is None:
                entry = self._windows[key] = _Window([], now + window)
            bisect.insort(entry.times, now)
            del entry.times[: bisect.bisect_right(entry.times, cutoff)]
            entry.expires = max(entry.expires, now + window)
            count = len(entry.times)
            self._hits_since_sweep += 1
            if self._hits_since_sweep >= SWEEP_EVERY:
                self._sweep(now)
            return count

    def count(self, key: str, now: float, window: float) -> int:
        """The events for `key` after ``now - window``, recording nothing."""
        with self._lock:
            entry = self._windows.get(key)
            if entry is None:
                return 0
            return len(entry.times) - bisect.bisect_right(entry.times, now - window)

    def _sweep(self, now: float) -> None:
        """Drop keys whose last window has passed (the caller holds the lock)."""
        self._hits_since_sweep = 0
        for key in [key for key, entry in self._windows.items() if entry.expires <= now]:
            del self._windows[key]

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one release of mail from `sender`; its reputation afterwards."""
        address = normalize_sender(sender)
        if not address:
            return unlearned(now)
        with self._lock:
            new = next_reputation(self._reputations.get(address), address, reasons, now, lapse)
            self._reputations[address] = new
            return combined(new, self._spam_marks.get(address)) or new

    def add_spam_mark(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one message of `sender` deleted as spam; what releases taught is cancelled."""
        address = normalize_sender(sender)
        if not address:
            return unlearned(now)
        with self._lock:
            new = next_spam_marks(self._spam_marks.get(address), address, reasons, now, lapse)
            self._spam_marks[address] = new
            self._reputations.pop(address, None)
            return new

    def reputation(self, sender: str) -> Reputation | None:
        """What is known about `sender` (both directions), or None."""
        address = normalize_sender(sender)
        with self._lock:
            return combined(self._reputations.get(address), self._spam_marks.get(address))

    def reputations(self) -> list[Reputation]:
        """Every sender with releases or spam marks, most releases first."""
        with self._lock:
            senders = self._reputations.keys() | self._spam_marks.keys()
            found = (combined(self._reputations.get(s), self._spam_marks.get(s)) for s in senders)
            return rank(rep for rep in found if rep is not None)

    def forget(self, sender: str) -> bool:
        """Drop what was learned about `sender`, both directions; True if there was anything."""
        address = normalize_sender(sender)
        with self._lock:
            released = self._reputations.pop(address, None)
            marked = self._spam_marks.pop(address, None)
            return released is not None or marked is not None

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        """Record one report; the merged record."""
        address = normalize_sender(bounce.recipient)
        with self._lock:
            merged = merge_bounce(self._bounces.get(address), bounce)
            self._bounces[address] = merged
            self._bounces_since_sweep += 1
            if self._bounces_since_sweep >= SWEEP_EVERY:
                self._bounces_since_sweep = 0
                now = bounce.last_seen
                self._bounces = {a: b for a, b in self._bounces.items() if b.expires > now}
            return merged

    def hard_bounces(self, now: float) -> list[HardBounce]:
        """The records not expired at `now`, latest report first."""
        with self._lock:
            return latest_first(self._bounces.values(), now)

    def forget_bounce(self, recipient: str) -> bool:
        """Drop the record of `recipient`; True if there was one."""
        with self._lock:
            return self._bounces.pop(normalize_sender(recipient), None) is not None

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        """Record one message we sent, newest last; the oldest go beyond `max_entries`."""
        with self._lock:
            self._sent.pop(sent.digest, None)
            self._sent[sent.digest] = sent
            trim_sent(self._sent, sent.sent_at, max_entries)

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        """The records among `digests` not expired at `now`, in the order asked."""
        with self._lock:
            return live_sent((self._sent.get(d) for d in dict.fromkeys(digests)), now)

    def close(self) -> None:
        """Nothing to release; the data goes with the object."""
