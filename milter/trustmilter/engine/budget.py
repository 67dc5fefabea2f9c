"""A message's time budget (`milter.message_timeout`).

It counts the time spent waiting on trustmilter's own work (checks, a
large-message slot), not the time the client takes to send: a large
message on a slow link is not penalised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Budget:
    """Seconds left for one message; used from one thread at a time."""

    def __init__(self, limit: float, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._clock = clock
        self.spent = 0.0

    @contextmanager
    def waiting(self) -> Iterator[float]:
        """What is left of the budget; the time spent inside counts against it."""
        started = self._clock()
        try:
            yield max(0.0, self._limit - self.spent)
        finally:
            self.spent += self._clock() - started
