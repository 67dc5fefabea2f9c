"""A message's time budget (`milter.message_timeout`).

It counts the time spent waiting on trustmilter's own work (checks, a
large-message slot), not the time the client takes to send: a large
message on a slow link is not penalised.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType


class Budget:
    """Seconds left for one message; used from one thread at a time.

    ``with budget.waiting() as left:`` gives what is left of the budget and
    counts the time spent inside against it. The budget is its own context
    manager (a message has one wait at a time), not a generator-based one:
    it is entered at every stage of every message.
    """

    __slots__ = ("_clock", "_limit", "_started", "spent")

    def __init__(self, limit: float, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._clock = clock
        self._started = 0.0
        self.spent = 0.0

    def waiting(self) -> Budget:
        """Enter to wait: what is left of the budget; the time inside counts against it."""
        return self

    def __enter__(self) -> float:
        self._started = self._clock()
        return max(0.0, self._limit - self.spent)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.spent += self._clock() - self._started
