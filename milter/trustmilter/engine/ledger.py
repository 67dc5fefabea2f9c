"""What is known so far about one message: the one owner of accumulated results.

`opening` holds the results of the connect, HELO and MAIL stages;
`accepted` adds those of the RCPT checks of every recipient that was
accepted (a refused recipient's results are dropped with it). End of
message builds on `accepted`. Results are immutable values, so nothing
is copied or sliced apart again.
"""

from __future__ import annotations

from trustmilter.results import Results


class Ledger:
    """Results by stage and recipient; used from one thread at a time."""

    __slots__ = ("accepted", "opening")

    def __init__(self) -> None:
        self.opening = Results()
        self.accepted = Results()

    def opened(self, results: Results) -> None:
        """The results of MAIL FROM (connect, HELO and MAIL stages)."""
        self.opening = results
        self.accepted = results

    def accept(self, results: Results) -> None:
        """A recipient was accepted: `results` are `accepted` plus its RCPT results."""
        self.accepted = results
