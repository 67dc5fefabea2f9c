"""Writes to the state store that checks ask for, applied by the engine.

A check observes; it does not change the world while it runs, so it can be
run again and a check that outlives its deadline writes nothing after the
verdict. What it wants remembered it returns as an effect on its result
(`CheckResult.effects`), and the engine applies the effects of a message
once, after the verdict, and only for mail that is delivered (accepted or
held): a message we refuse teaches the store nothing — a forged bounce
rejected for failing DMARC does not become a "hard bounce" of ours.

The one exception is the rate count (checks/rate.py): the count is the
check's answer and must be atomic across processes, so it is taken while
the check runs; its spec says so (`CheckSpec.writes_state`).
"""

from __future__ import annotations

from dataclasses import dataclass

from trustmilter.state.base import HardBounce, SentMessage, StateStore


@dataclass(frozen=True, slots=True)
class RecordHardBounces:
    """Remember recipients that bounced our own mail for good (`trustmilter bounces`)."""

    bounces: tuple[HardBounce, ...]

    def apply(self, store: StateStore) -> None:
        """Write them; raises StateError when the store cannot take them."""
        for bounce in self.bounces:
            store.add_bounce(bounce)

    def describe(self) -> str:
        return f"{len(self.bounces)} hard bounce(s)"


@dataclass(frozen=True, slots=True)
class RememberSent:
    """Remember a message we sent (keyed digests only), so replies to it are known."""

    sent: SentMessage
    max_entries: int

    def apply(self, store: StateStore) -> None:
        """Write it; raises StateError when the store cannot take it."""
        store.remember_sent(self.sent, self.max_entries)

    def describe(self) -> str:
        return "the sent message"
