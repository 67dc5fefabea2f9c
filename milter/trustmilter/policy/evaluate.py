"""Apply a Policy to the checks' Results: the verdict for one message.

PURE: no DNS, no clock, no state, no logging; the same policy and results
always give the same verdict, so it is tested with hand-made Results.

How the verdict is reached:
  1. Score. Each distinct signal present adds its points from
     `policy.scores` once. A finding that carries its own weight (a DNSBL
     or URIBL listing) adds that weight every time it appears.
  2. Rules, in order. Every matching rule is reported as a RuleHit. An
     enforce rule adds its score and, if it has an action, forces at least
     that action. A shadow rule changes nothing; it is reported, and named
     in the shadow header as what it "would have" done.
  3. The score earns an action by the thresholds; the final action is the
     most severe of that and the forced ones (`Action.severity`).
  4. The reply (reject and tempfail only) is the first forcing rule's own
     reply for the final action, else the policy default for that action.
A finding that vouches for the sender only so far (`Finding.vouches_for`:
``reputation.learned``, what its released mail was held for) is trusted
only that far: a rule it exempts still applies, and its points do not
count, when the message shows a signal it did not vouch for.
A result that explains local failures (`CheckResult.explains`: a trusted
ARC sealer's or gateway's recorded pass, the hop before a trusted
forwarder) removes those signals before step 1: they neither score nor
match rules, and the verdict names them as `explained`.
Header fields checks ask for (`CheckResult.headers`: the bounce summary,
the loop marker) are added as asked when the message is delivered; the
evaluator knows no particular check.
It raises nothing for any Results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from trustmilter.policy.model import Policy
from trustmilter.policy.patterns import WILDCARD, any_present, matching, present
from trustmilter.policy.rules import Rule
from trustmilter.results import Results
from trustmilter.verdict import Action, Reply, RuleHit, Verdict

# How a shadow hit reads in the shadow header: "would have <this>".
_WOULD_HAVE = {
    Action.ACCEPT: "accepted",
    Action.LOW_TRUST: "marked low trust",
    Action.QUARANTINE: "quarantined",
    Action.DISCARD: "discarded",
    Action.TEMPFAIL: "tempfailed",
    Action.REJECT: "rejected",
}
# Actions whose message is delivered, so headers added to it are seen.
_DELIVERED = (Action.ACCEPT, Action.LOW_TRUST, Action.QUARANTINE)


def match(rule: Rule, signals: frozenset[str]) -> tuple[str, ...] | None:
    """The signals that make `rule` match, or None if it does not.

    Every rule is tried at MAIL, at each RCPT and at end of message, and most
    fail: whether it holds is decided first, without building sets, and the
    signals are collected only for a rule that does."""
    # A plain name is one set lookup; only a pattern ending in "*" scans the signals.
    for pattern in rule.when:
        if pattern not in signals and not (
            pattern.endswith(WILDCARD) and present(pattern, signals)
        ):
            return None
    if rule.any and not any_present(rule.any, signals):
        return None
    for pattern in rule.unless:
        if pattern in signals or (pattern.endswith(WILDCARD) and present(pattern, signals)):
            return None
    found: set[str] = set()
    for pattern in (*rule.when, *rule.any):
        found |= matching(pattern, signals)
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class Voucher:
    """A finding that vouches for the sender only as far as `signals` go."""

    name: str
    signals: frozenset[str]


def voucher(results: Results) -> Voucher | None:
    """The first finding that vouches only so far (a learned sender: the reasons its
    released mail had been held for — "the same sender passes later", with the
    same kind of mail), or None."""
    for finding in results.vouchers():
        if finding.vouches_for is not None:
            return Voucher(finding.name, finding.vouches_for)
    return None


def _unvouched(rule: Rule, signals: frozenset[str], vouched: Voucher
               ) -> tuple[str, ...] | None:
    """The signals of a rule that only the voucher exempted, when they are not what
    it vouched for (then the rule applies after all), else None.

    Learning is keyed by the envelope sender, which anyone can write: mail in
    that sender's name that fails in a new way (DMARC, SPF) is not let
    through by what releases of its bulk mail taught."""
    without = match(rule, signals - {vouched.name})
    if without is None or set(without) <= vouched.signals:
        return None
    return without


def explained(results: Results) -> frozenset[str]:
    """The signals present that some result explains (`CheckResult.explains`).

    The explaining results' own signals are never explained away, so one
    explanation cannot cancel another."""
    patterns = results.explanations()
    if not patterns:
        return frozenset()
    signals = results.signals()
    found = frozenset().union(*(matching(pattern, signals) for pattern in patterns))
    return found - results.explainers()


def _points(policy: Policy, results: Results, signals: frozenset[str],
            gone: frozenset[str]) -> tuple[list[float], set[str]]:
    """Score contributions of the judged `signals`, and the signals that contributed.

    The points of a voucher (`reputation.learned`) count only when every other
    signal that adds points is one it vouched for. `gone` are the explained
    signals: a listing's own weight does not count for them either."""
    points: list[float] = []
    reasons: set[str] = set()
    vouched = voucher(results)
    if vouched is not None and any(
        policy.scores.get(s, 0.0) > 0 and s not in vouched.signals
        for s in signals - {vouched.name}
    ):
        signals = signals - {vouched.name}
    for signal in sorted(signals):
        value = policy.scores.get(signal, 0.0)
        if value:
            points.append(value)
            reasons.add(signal)
    # The list's own weight counts per listing (Finding.score). Kept by `results`
    # as they grow: a loop over every result here made each RCPT cost as much
    # as all the recipients before it.
    for finding in results.scored_findings():
        if finding.name in gone:
            continue
        points.append(finding.score)
        reasons.add(finding.name)
    return points, reasons


def _would_have(hits: Iterable[tuple[RuleHit, Rule]]) -> str:
    parts = []
    for hit, rule in hits:
        effect = _WOULD_HAVE[rule.action] if rule.action else f"added {rule.score:g} points"
        parts.append(f"would have {effect} (rule {hit.rule})")
    return "; ".join(parts)


def evaluate(policy: Policy, results: Results) -> Verdict:
    """The verdict `policy` gives a message with these `results`."""
    gone = explained(results)
    signals = results.signals() - gone
    points, reasons = _points(policy, results, signals, gone)
    vouched = voucher(results)
    hits: list[RuleHit] = []
    shadow: list[tuple[RuleHit, Rule]] = []
    forcing: list[Rule] = []
    for rule in policy.rules:
        matched = match(rule, signals)
        if matched is None and vouched is not None:
            matched = _unvouched(rule, signals, vouched)
        if matched is None:
            continue
        hit = RuleHit(rule.name, rule.action, rule.score, rule.shadow, matched, rule.reason)
        hits.append(hit)
        if rule.shadow:
            shadow.append((hit, rule))
            continue
        if rule.score:
            points.append(rule.score)
        if rule.action is not None:
            forcing.append(rule)
        reasons.update(matched)
    # Rounded so that 0.1 + 0.2 reaches a threshold of 0.3.
    score = round(math.fsum(points), 6)
    action = max(
        [policy.thresholds.action_for(score), *(r.action for r in forcing if r.action)],
        key=lambda a: a.severity,
    )
    deciding = [r for r in forcing if r.action is action]
    return Verdict(
        action=action,
        reply=_reply(policy, action, deciding),
        score=score,
        reasons=tuple(sorted(reasons)),
        hits=tuple(hits),
        headers=(
            *_headers(policy, action, score, reasons, deciding, shadow),
            *_auto_suppress(policy, action, signals, results),
            *_requested(action, results, "delivered"),
        ),
        quarantine_reason=_quarantine_reason(policy, action, score, deciding),
        explained=tuple(sorted(gone)),
    )


def _reply(policy: Policy, action: Action, deciding: list[Rule]) -> Reply | None:
    for rule in deciding:
        if rule.reply is not None:
            return rule.reply.reply()
    default = policy.actions.reply_for(action)
    return default.reply() if default is not None else None


def _quarantine_reason(policy: Policy, action: Action, score: float, deciding: list[Rule]) -> str:
    if action is not Action.QUARANTINE:
        return ""
    base = policy.actions.quarantine_reason
    if deciding:
        return f"{base} (rule {', '.join(r.name for r in deciding)})"
    return f"{base} (score {score:g} >= {policy.thresholds.quarantine:g})"


def _auto_suppress(
    policy: Policy, action: Action, signals: frozenset[str], results: Results
) -> tuple[tuple[str, str], ...]:
    """RFC 3834 fields (and what checks ask for then: our loop marker) for
    delivered automated or looping mail.

    Held mail gets them too: notifications stay suppressed when such a
    message is released from the suspended queue.
    """
    config = policy.headers
    if action not in _DELIVERED or not any_present(config.auto_suppress_when, signals):
        return ()
    return (*config.auto_suppress_fields(), *_requested(action, results, "suppressed"))


def _requested(
    action: Action, results: Results, when: str
) -> tuple[tuple[str, str], ...]:
    """The header fields checks asked for on delivered mail, for `when`, in order."""
    if action not in _DELIVERED:
        return ()
    return tuple(
        (request.name, request.value)
        for request in results.header_requests()
        if request.when == when
    )


def _headers(
    policy: Policy,
    action: Action,
    score: float,
    reasons: set[str],
    deciding: list[Rule],
    shadow: list[tuple[RuleHit, Rule]],
) -> tuple[tuple[str, str], ...]:
    config = policy.headers
    added: list[tuple[str, str]] = []
    marked = action is Action.LOW_TRUST or (
        action is Action.QUARANTINE and config.add_on_quarantine
    )
    if config.add_low_trust_header and marked:
        parts = ["low", f"score={score:.1f}"]
        if reasons:
            parts.append("reasons=" + ",".join(sorted(reasons)))
        if action is Action.QUARANTINE:
            parts.append("action=quarantine")
        if deciding:
            parts.append("rules=" + ",".join(r.name for r in deciding))
        added.append((config.trust_header, "; ".join(parts)))
    if config.add_shadow_header and shadow and action in _DELIVERED:
        added.append((config.shadow_header, _would_have(shadow)))
    return tuple(added)
