"""Runs the checks of some SMTP stages for a transaction, with the App's services.

A thin owner of what every run needs (resolver, domain tools, executor,
state store, clocks): the pipeline (pipeline.py) schedules the checks; the
transaction says which way the message goes (inbound checks for strangers'
mail, outbound ones for our own clients'), which stages, on which facts,
after which results, within how much time.
"""

from __future__ import annotations

from collections.abc import Iterable

from trustmilter.app import App
from trustmilter.checks.base import Direction, Stage
from trustmilter.model import Facts
from trustmilter.pipeline import result_name
from trustmilter.results import Results
from trustmilter.signals import UPSTREAM_PREFIX, signal_prefixes


class CheckRunner:
    """The checks of one App for mail going one way; cheap to make, one per transaction."""

    __slots__ = ("_app", "direction")

    def __init__(self, app: App, direction: Direction = Direction.INBOUND) -> None:
        self._app = app
        self.direction = direction

    def run(
        self, facts: Facts, stages: tuple[Stage, ...], prior: Results, timeout: float | None
    ) -> Results:
        """`prior` plus the results of the checks of `stages`, within `timeout` seconds."""
        app = self._app
        return app.pipeline.run(
            facts, app.dns, app.domains, app.executor, stages=stages, prior=prior,
            timeout=timeout, state=app.state, clock=app.clock, state_wait=self.state_wait(),
            identities=app.identities, direction=self.direction,
        )

    def state_wait(self) -> float:
        """The longest one state-store operation can take.

        Each backend bounds a wait by `state.timeout`, and an operation waits
        at most twice: for its turn (SQLite's writer lock in this process,
        Redis's connection) and for the backend itself.
        """
        app = self._app
        return 2 * app.settings.state.timeout if app.state is not None else 0.0

    def later_prefixes(self, done: Iterable[Stage]) -> frozenset[str]:
        """The prefixes of every signal the checks of the stages not `done` may emit.

        Trusted gateways' results (``upstream.``) count as still to come before
        end of message whether or not any gateway is configured: a verdict
        does not become final earlier because the list is empty today."""
        finished = set(done)
        later = {
            prefix
            for check in self._app.pipeline.checks
            if check.stage not in finished and check.spec.runs_on(self.direction)
            for prefix in signal_prefixes(result_name(check))
        }
        # Gateways' results are read from inbound mail only.
        if Stage.DATA not in finished and self.direction is Direction.INBOUND:
            later.add(UPSTREAM_PREFIX)
        return frozenset(later)

    def later_explainable(self, done: Iterable[Stage]) -> tuple[str, ...]:
        """The signal patterns the checks of the stages not `done` may explain away."""
        finished = set(done)
        return tuple(
            pattern
            for check in self._app.pipeline.checks
            if check.stage not in finished and check.spec.runs_on(self.direction)
            for pattern in check.explainable()
        )
