"""Which held messages the list shows: filters by reason, sender, recipient and age; pages.

The filters come from the query string of a GET form (bookmarkable,
works without JavaScript) and are read defensively: an unknown age or a
page number that is not a number means "no such filter" and the first
page, never an error. Sender and recipient match a part of the address,
case-insensitively; the reason matches one reason name exactly, or
``-`` for mail that trustmilter did not hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from trustmilter.quarantine.review import HeldMessage

NOT_OURS = "-"  # the reason filter's value for mail trustmilter did not hold
# The age filter's values and their bounds in seconds: (younger than, older than).
AGES: dict[str, tuple[float, float]] = {
    "hour": (3600, 0),
    "day": (86400, 0),
    "week": (7 * 86400, 0),
    "older": (math.inf, 7 * 86400),
}
_MAX_TEXT = 256  # characters of a filter kept

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ListFilter:
    reason: str = ""
    sender: str = ""
    recipient: str = ""
    age: str = ""

    @classmethod
    def from_query(cls, args: Mapping[str, str]) -> ListFilter:
        def text(name: str) -> str:
            return str(args.get(name, "")).strip()[:_MAX_TEXT]
        age = text("age")
        return cls(text("reason"), text("sender"), text("recipient"), age if age in AGES else "")

    def query(self) -> dict[str, str]:
        """The filters set, for links that keep them (paging)."""
        return {k: v for k, v in (("reason", self.reason), ("sender", self.sender),
                                  ("recipient", self.recipient), ("age", self.age)) if v}

    def matches(self, message: HeldMessage) -> bool:
        if self.reason == NOT_OURS and message.held_by_trustmilter:
            return False
        if self.reason and self.reason != NOT_OURS and self.reason not in message.reasons:
            return False
        if self.sender and self.sender.lower() not in message.sender.lower():
            return False
        if self.recipient and not any(self.recipient.lower() in r.lower()
                                      for r in message.entry.recipients):
            return False
        if self.age:
            younger, older = AGES[self.age]
            if not older <= message.age < younger:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    number: int  # 1-based
    pages: int  # at least 1
    total: int

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None


def page_number(text: str | None) -> int:
    """A page number from the query string; 1 for anything else."""
    return int(text) if text and text.isdigit() and 0 < len(text) < 10 else 1


def paged(items: Sequence[T], number: int, size: int) -> Page[T]:
    """Page `number` of `items` (the last page when there are fewer)."""
    pages = max(1, math.ceil(len(items) / size))
    number = min(max(1, number), pages)
    start = (number - 1) * size
    return Page(tuple(items[start:start + size]), number, pages, len(items))


def newest_first(messages: Sequence[HeldMessage], chosen: ListFilter) -> list[HeldMessage]:
    return sorted((m for m in messages if chosen.matches(m)),
                  key=lambda m: (-m.entry.arrival_time, m.queue_id))


def reasons_seen(messages: Sequence[HeldMessage]) -> list[str]:
    """Every reason of the held messages, for the filter's choices."""
    return sorted({reason for message in messages for reason in message.reasons})
