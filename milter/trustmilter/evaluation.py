"""One message from facts to decision: checks, policy, Authentication-Results."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trustmilter.app import App
from trustmilter.authresults import (
    HEADER_NAME,
    ForgedHeader,
    build_header_value,
    find_forged,
    find_named,
    upstream_results,
)
from trustmilter.checks.base import Stage
from trustmilter.model import Facts, Message
from trustmilter.policy.evaluate import evaluate
from trustmilter.results import Results
from trustmilter.verdict import Verdict


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything decided about one message, ready for the MTA or a report."""

    results: Results
    verdict: Verdict
    authentication_results: str
    headers_added: tuple[tuple[str, str], ...]
    headers_removed: tuple[ForgedHeader, ...]


def run_checks(
    app: App,
    facts: Facts,
    stages: Iterable[Stage] = tuple(Stage),
    prior: Results | None = None,
    timeout: float | None = None,
) -> Results:
    """The results of the checks for `stages`, plus trusted upstream A-R at DATA."""
    stages = tuple(stages)
    results = app.pipeline.run(
        facts, app.dns, app.domains, app.executor, stages=stages, prior=prior,
        timeout=timeout, state=app.state, clock=app.clock, state_wait=state_wait(app),
    )
    if Stage.DATA in stages and facts.message is not None:
        results = results.plus(
            upstream_results(facts.message.headers, app.policy.trusted_authserv_ids)
        )
    return results


def state_wait(app: App) -> float:
    """The longest one state-store operation can take.

    Each backend bounds a wait by `state.timeout`, and an operation waits
    at most twice: for its turn (SQLite's writer lock in this process,
    Redis's connection) and for the backend itself.
    """
    return 2 * app.policy.state.timeout if app.state is not None else 0.0


def forged_headers(app: App, message: Message) -> tuple[ForgedHeader, ...]:
    """Incoming headers only we write: A-R with our authserv-id (RFC 8601 §5) and
    any copy of our verdict and bounce headers (a forged one could teach a
    release, or mislead the help desk)."""
    forged = find_forged(message.headers, app.authserv_id)
    policy = app.policy
    for name in (
        policy.headers.trust_header, policy.headers.shadow_header, policy.checks.bounce.header,
    ):
        if name:
            forged.extend(find_named(message.headers, name))
    return tuple(forged)


def decide(app: App, facts: Facts, results: Results) -> Evaluation:
    """Apply the policy to `results` and prepare the header edits."""
    verdict = evaluate(app.policy, results)
    ar_value = build_header_value(app.authserv_id, results)
    forged = forged_headers(app, facts.message) if facts.message else ()
    return Evaluation(
        results=results,
        verdict=verdict,
        authentication_results=ar_value,
        headers_added=((HEADER_NAME, ar_value), *verdict.headers),
        headers_removed=forged,
    )


def evaluate_message(app: App, facts: Facts, timeout: float | None = None) -> Evaluation:
    """Every stage at once, as ``trustmilter check`` runs it."""
    return decide(app, facts, run_checks(app, facts, timeout=timeout))
