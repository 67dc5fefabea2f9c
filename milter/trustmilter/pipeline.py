"""Runs the checks of one or more SMTP stages, concurrently, in dependency order.

The order is computed once when the pipeline is built: a check that
requires an unknown check, or a cycle, stops start-up (as
authentication_milter's sort_callbacks does), never a message. At run
time every check whose requirements are done is started at once, so a
message waits on DNS for its slowest chain (PTR then forward, SPF
includes, DMARC after SPF and DKIM), not for the sum.

Where a check starts: a check that waits on nothing but DNS (its spec says
``waits_on="dns"``) is first run in the calling thread with a
resolver that answers only from the cache (lookup/cacheonly.py). With a
warm cache that is every such check, and a message costs no thread
hand-offs; at the first lookup that would wait, the run is dropped and the
check goes to the thread pool, as every other check does. A check that
waits on nothing but the state store (``waits_on="state"``) runs in the
calling thread while the longest a store operation can take (`state_wait`)
still fits before the deadline. A check running here is not interrupted:
no DNS wait can hold it, but its own work can run past the deadline — a
large message's DKIM hash, or a state check making several operations
(one per recipient; the bounce check at most `MAX_RECORDED`; after the
first timeout the store counts as down and answers at once, see
state/open.py). Checks that need a thread are started first, so they run
meanwhile.

A check that raises, or is still running at the deadline, becomes a
`temperror` result for that check alone; the others are unaffected.

Which checks run also depends on the message's direction: inbound mail
(from strangers) runs the checks whose spec says "inbound" or "both",
outbound mail (from our own clients) those that say "outbound" or "both"
(`CheckSpec.direction`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trustmilter.checks.base import Check, CheckContext, Direction, Stage
from trustmilter.domains import DomainTools
from trustmilter.lookup import Resolver
from trustmilter.lookup.cacheonly import CacheOnlyResolver, WouldWait
from trustmilter.mail.identity import PLAIN_IDENTITIES, Identities
from trustmilter.model import Facts
from trustmilter.results import CheckResult, Outcome, Results

if TYPE_CHECKING:
    from trustmilter.state.base import StateStore

log = logging.getLogger(__name__)


class PipelineError(Exception):
    """The checks cannot be ordered: a missing requirement or a cycle."""


def result_name(check: Check) -> str:
    """The result name a check reports under (``names.envelope`` reports as ``names``)."""
    return check.spec.result


def _ordered(checks: Sequence[Check], known: frozenset[str]) -> tuple[Check, ...]:
    """Checks in an order where each comes after everything it requires.

    A requirement that is a `known` check but not in `checks` (disabled by
    the policy) is simply absent: DMARC without DKIM still runs.
    """
    by_name = {c.name: c for c in checks}
    if len(by_name) != len(checks):
        raise PipelineError("two checks share a name")
    done: list[Check] = []
    state: dict[str, str] = {}

    def visit(check: Check, path: tuple[str, ...]) -> None:
        if state.get(check.name) == "done":
            return
        if state.get(check.name) == "visiting":
            raise PipelineError("dependency cycle: " + " -> ".join((*path, check.name)))
        state[check.name] = "visiting"
        for needed in check.requires:
            if needed in by_name:
                visit(by_name[needed], (*path, check.name))
            elif needed not in known:
                raise PipelineError(f"check {check.name} requires unknown check {needed}")
        state[check.name] = "done"
        done.append(check)

    for check in checks:
        visit(check, ())
    return tuple(done)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """An ordered, immutable set of checks; safe to share between threads."""

    checks: tuple[Check, ...]

    @classmethod
    def build(cls, checks: Iterable[Check], known: Iterable[str] = ()) -> Pipeline:
        """Order `checks`; `known` names checks that exist but may be disabled.

        Raises PipelineError when no order is possible.
        """
        return cls(_ordered(list(checks), frozenset(known)))

    def for_stages(
        self, stages: Iterable[Stage], direction: Direction = Direction.INBOUND
    ) -> tuple[Check, ...]:
        """The checks of `stages` that run on mail going `direction`, in order."""
        wanted = set(stages)
        return tuple(
            c for c in self.checks if c.stage in wanted and c.spec.runs_on(direction)
        )

    def run(
        self,
        facts: Facts,
        dns: Resolver,
        domains: DomainTools,
        executor: Executor,
        *,
        stages: Iterable[Stage] = tuple(Stage),
        prior: Results | None = None,
        timeout: float | None = None,
        state: StateStore | None = None,
        clock: Callable[[], float] = time.time,
        state_wait: float | None = None,
        identities: Identities = PLAIN_IDENTITIES,
        direction: Direction = Direction.INBOUND,
    ) -> Results:
        """Run the checks of `stages` for mail going `direction` on `facts`; returns
        `prior` plus their results.

        `timeout` bounds the whole run: checks not finished by then are
        reported as temperror and left to finish in the background.
        `state_wait` is the longest one operation of `state` can take
        (None: unknown, state checks always get a thread).
        """
        prior = prior if prior is not None else Results()
        collected: list[CheckResult] = []  # in completion order
        order = self.for_stages(stages, direction)
        pending = list(order)
        by_check: dict[str, list[CheckResult]] = {}
        pending_names = {c.name for c in pending}
        finished: set[str] = set()
        running: dict[Future[list[CheckResult]], Check] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        # What each batch's checks see, however they run: `prior` plus what has
        # finished so far, extended as checks finish rather than built anew.
        known, seen = prior, 0

        def finish(check: Check, outcome: list[CheckResult]) -> None:
            by_check[check.name] = outcome
            collected.extend(outcome)
            finished.add(check.name)
            pending_names.discard(check.name)

        while pending or running:
            ready = [c for c in pending if self._ready(c, pending_names, finished)]
            # Checks that cannot wait here first: one that needs the network is
            # then on the pool while the others run.
            ready.sort(key=lambda c: _start_order(c, state_wait))
            if ready and seen < len(collected):
                known, seen = known.plus(collected[seen:]), len(collected)
            for check in ready:
                pending.remove(check)
                waits = _wait_here(check, state_wait)
                here = waits is not None and (
                    deadline is None or time.monotonic() + waits < deadline
                )
                outcome = (
                    _run_from_cache(check, facts, dns, domains, known, state, clock, identities)
                    if here else None
                )
                if outcome is None:
                    ctx = CheckContext(facts, dns, domains, known, state, clock, identities)
                    running[executor.submit(_run_one, check, ctx)] = check
                else:
                    finish(check, outcome)
            if ready and any(c.name in finished for c in ready):
                continue  # checks that needed these may be ready now
            if not running:  # unreachable with a valid order; never spin
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = wait(running, timeout=left, return_when=FIRST_COMPLETED)
            if not done:
                late = [*running.values(), *pending]
                log.warning("checks timed out: %s", ", ".join(c.name for c in late))
                for check in late:
                    by_check[check.name] = [_error_result(check, "did not finish in time")]
                break
            for future in done:
                finish(running.pop(future), future.result())
        # Report in pipeline order, not completion order: the same message
        # always gets the same header and log line.
        return prior.plus(r for c in order for r in by_check.get(c.name, ()))

    @staticmethod
    def _ready(check: Check, pending: set[str], finished: set[str]) -> bool:
        # A requirement outside this run (another stage, or disabled) counts as done.
        return all(r in finished or r not in pending for r in check.requires)


def _error_result(check: Check, reason: str) -> CheckResult:
    # With its RFC 8601 method, a check that failed still shows up as
    # "<method>=temperror" in Authentication-Results.
    return CheckResult(
        check=check.spec.result,
        outcome=Outcome.TEMPERROR,
        reason=reason,
        method=check.spec.method,
    )


def _start_order(check: Check, state_wait: float | None) -> tuple[bool, float]:
    """Sort key: checks that need a thread first (they go to the pool and run
    while the others run here), then the inline ones, shortest wait first."""
    wait_here = _wait_here(check, state_wait)
    return (wait_here is not None, wait_here or 0.0)


def _wait_here(check: Check, state_wait: float | None) -> float | None:
    """The longest `check` can wait in the calling thread, or None: it needs a thread.

    Checks say what they wait on (`CheckSpec.waits_on`); one that waits on
    anything but DNS or the state store always gets a thread.
    """
    waits_on = check.spec.waits_on
    if waits_on == "dns":
        return 0.0  # cache hits only: a lookup that would wait sends it to the pool
    if waits_on == "state" and state_wait is not None:
        return state_wait
    return None


def _run_from_cache(
    check: Check,
    facts: Facts,
    dns: Resolver,
    domains: DomainTools,
    results: Results,
    state: StateStore | None,
    clock: Callable[[], float],
    identities: Identities,
) -> list[CheckResult] | None:
    """Run `check` here with cached DNS answers only; None if it needed the network
    (a state check makes no lookups, so it always finishes here)."""
    cached = CacheOnlyResolver(dns)
    here = CheckContext(facts, cached, domains, results, state, clock, identities)
    try:
        outcome = list(check.run(here))
    except WouldWait:
        return None
    except Exception as error:
        # An error caused by a refused lookup is not the check's to report.
        return None if cached.missed else _failed(check, error)
    # A library may have swallowed WouldWait (pyspf's bare except around
    # exp=): a run that missed the cache is not the check's real answer.
    return None if cached.missed else outcome


def _run_one(check: Check, ctx: CheckContext) -> list[CheckResult]:
    """Run one check; an exception is that check's temperror, logged with its traceback."""
    try:
        return list(check.run(ctx))
    except Exception as error:  # the pipeline is the boundary: nothing escapes a check
        return _failed(check, error)


def _failed(check: Check, error: Exception) -> list[CheckResult]:
    """A check raised: log it with its traceback; its result is a temperror."""
    log.exception("check %s failed", check.name)
    return [_error_result(check, f"internal error: {type(error).__name__}")]
