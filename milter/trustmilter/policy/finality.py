"""Whether a verdict given before end of message is final: PURE, beside evaluate.py.

A reject or tempfail forced by a rule can be given at RCPT TO (Postfix's
smtpd_delay_reject) only if no later result can undo it. Signals only
accumulate, so a matched rule stays matched unless one of its `unless`
patterns could still appear; which signals can still appear is given as
the prefixes of the results still to come (the engine knows the checks;
this module knows none). A later result may also explain a signal away
(`CheckResult.explains`): a rule matched on a signal that the checks still
to come may explain is not final either. Scores are never final (a later
signal may score negative), only forced actions.
"""

from __future__ import annotations

from collections.abc import Iterable

from trustmilter.policy.model import Policy
from trustmilter.policy.patterns import matches
from trustmilter.verdict import Action, Verdict


def is_final(policy: Policy, verdict: Verdict, later: Iterable[str],
             explainable: Iterable[str] = ()) -> bool:
    """True if a forced reject/tempfail cannot be undone by signals with the
    prefixes `later` (those of every result not yet known), nor by a later
    result explaining a signal that matches one of the patterns `explainable`."""
    # Only a hit that itself forces the verdict's action can make it final:
    # a final tempfail beside an undecided reject must not become a 5xx.
    forcing = [
        hit for hit in verdict.hits
        if not hit.shadow and hit.action is verdict.action
        and hit.action in (Action.REJECT, Action.TEMPFAIL)
    ]
    if not forcing:
        return False  # most verdicts: nothing below needs working out
    prefixes = set(later)
    patterns = tuple(explainable)
    rules = {rule.name: rule for rule in policy.rules}
    for hit in forcing:
        rule = rules.get(hit.rule)
        if rule is None:
            continue
        if any(matches(p, signal) for p in patterns for signal in hit.signals):
            continue
        if not any(could_match_later(pattern, prefixes) for pattern in rule.unless):
            return True
    return False


def could_match_later(pattern: str, prefixes: set[str]) -> bool:
    """Whether a signal with one of `prefixes` could match `pattern`."""
    stem = pattern.rstrip("*")
    if pattern.endswith("*"):
        return any(stem.startswith(p) or p.startswith(stem) for p in prefixes)
    return any(pattern.startswith(p) for p in prefixes)
