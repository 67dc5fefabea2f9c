"""Learned reputation (SEED-RULES §7: releasing teaches the filter) and what the
default policy lets it exempt: quarantine rules yes, reject rules never."""

from __future__ import annotations

from dataclasses import replace

import pytest

from helpers import make_ctx
from trustmilter.checks import reputation
from trustmilter.checks.base import Stage
from trustmilter.checks.reputation import ReputationCheck
from trustmilter.config.load import parse_settings
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.state.base import StateError
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action

T0 = 1_764_000_000.0
SENDER = "alerts@example.com"


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"reputation asked DNS for {name} {rdtype}")


class BrokenStore:
    def reputation(self, sender):
        raise StateError("sqlite: database is locked")


def run(store, sender=SENDER, config=None):
    ctx = replace(make_ctx(NoDns(), mail_from=sender), state=store, clock=lambda: T0)
    [result] = ReputationCheck(config or reputation.Config()).run(ctx)
    assert result.check == "reputation"
    return result


def released(times, sender=SENDER, reasons=("auto.bulk",)):
    store = MemoryStore()
    for i in range(times):
        store.add_release(sender, reasons, T0 + i)
    return store


def learned(*vouched):
    """A learned sender whose released mail had been held for `vouched`."""
    finding = Finding("reputation.learned", vouches_for=frozenset(vouched))
    return CheckResult("reputation", Outcome.PASS, "", (finding,))


def failing(check, *findings):
    return CheckResult(check, Outcome.FAIL, "", tuple(Finding(f) for f in findings))


# ---- the check ---------------------------------------------------------------


def test_a_reputation_lapses_a_year_after_the_last_release() -> None:
    store = released(2)  # last release at T0 + 1
    assert run(store).outcome is Outcome.PASS
    config = reputation.Config(forget_after_days=30)
    late = replace(make_ctx(NoDns(), mail_from=SENDER), state=store,
                   clock=lambda: T0 + 1 + 30 * 86400)
    [result] = ReputationCheck(config).run(late)
    assert (result.outcome, result.findings) == (Outcome.NONE, ())
    assert result.reason == "lapsed: no release in 30 days"


def test_learned_after_two_releases():
    assert ReputationCheck.spec.stage is Stage.MAIL
    assert run(released(1)).outcome is Outcome.NONE
    assert run(released(1)).findings == ()
    result = run(released(2, reasons=("auto.bulk", "dmarc.policy.quarantine")))
    assert result.outcome is Outcome.PASS
    [finding] = result.findings
    assert finding.name == "reputation.learned"
    assert finding.detail == "2 releases; learned: auto.bulk, dmarc.policy.quarantine"
    assert result.evidence == reputation.ReputationEvidence(
        2, ("auto.bulk", "dmarc.policy.quarantine"))
    assert reputation.learned_reasons(result) == {"auto.bulk", "dmarc.policy.quarantine"}


def test_the_sender_is_matched_case_insensitively():
    assert run(released(2), sender="<Alerts@EXAMPLE.com>").findings[0].name == "reputation.learned"
    assert run(released(2), sender="other@example.com").outcome is Outcome.NONE


def test_threshold_is_configurable():
    config = reputation.Config(releases_to_trust=3)
    assert run(released(2), config=config).findings == ()
    assert run(released(3), config=config).findings[0].name == "reputation.learned"
    assert parse_settings("checks:\n  reputation:\n    releases_to_trust: 5\n").checks.reputation == (
        reputation.Config(releases_to_trust=5))


def test_skipped_offline_and_for_the_null_sender():
    assert run(None).reason == "no state store (offline)"
    assert run(released(2), sender="").outcome is Outcome.SKIPPED


def test_a_failing_store_teaches_nothing():
    result = run(BrokenStore())
    assert result.outcome is Outcome.TEMPERROR and result.findings == ()
    assert "database is locked" in result.reason
    # Nothing learned: the message is judged as any other (held, not lost, not passed).
    verdict = evaluate(Policy(), Results([result, failing("automation", "auto.bulk")]))
    assert verdict.action is Action.QUARANTINE


# ---- the default policy ------------------------------------------------------------


@pytest.mark.parametrize("held", [
    [failing("automation", "auto.bulk")],
    [failing("automation", "auto.noreply_sender")],
    [failing("automation", "auto.machine_generated")],
    [failing("dmarc", "dmarc.policy.quarantine")],
    [CheckResult("spf.mailfrom", Outcome.FAIL)],
])
def test_learned_sender_passes_the_quarantine_rules(held):
    first = evaluate(Policy(), Results(held))
    assert first.action is Action.QUARANTINE
    # Released for those reasons, learned: the same mail passes.
    verdict = evaluate(Policy(), Results([*held, learned(*first.reasons)]))
    assert verdict.action is Action.ACCEPT
    assert not [h for h in verdict.hits if h.action is Action.QUARANTINE]


def test_learned_sender_is_not_requarantined_by_score():
    weak = [failing("iprev", "iprev.ptr_missing"), failing("helo", "helo.nxdomain"),
            CheckResult("dkim", Outcome.FAIL)]
    first = evaluate(Policy(), Results(weak))
    assert first.action is Action.QUARANTINE  # 3 + 3 + 3
    verdict = evaluate(Policy(), Results([*weak, learned(*first.reasons)]))
    assert verdict.action is Action.ACCEPT and verdict.score == -1.0


def test_learning_vouches_only_for_what_was_released():
    """Releases of a sender's bulk mail do not let mail in its name through when it
    fails DMARC or SPF: the envelope sender is anyone's to write."""
    bulk = learned("auto.bulk")
    assert evaluate(Policy(), Results([failing("automation", "auto.bulk"), bulk])).action is (
        Action.ACCEPT)
    spoofed = [failing("automation", "auto.bulk"), failing("dmarc", "dmarc.policy.quarantine")]
    verdict = evaluate(Policy(), Results([*spoofed, bulk]))
    assert verdict.action is Action.QUARANTINE
    assert [h.rule for h in verdict.hits] == ["dmarc-quarantine"]  # auto-bulk stays lifted
    spf = evaluate(Policy(), Results([CheckResult("spf.mailfrom", Outcome.FAIL), bulk]))
    assert spf.action is Action.QUARANTINE


def test_learned_points_need_every_scored_signal_vouched_for():
    weak = [failing("iprev", "iprev.ptr_missing"), failing("helo", "helo.nxdomain"),
            CheckResult("dkim", Outcome.FAIL)]
    partly = learned("iprev.ptr_missing", "helo.nxdomain")  # dkim.fail is new
    verdict = evaluate(Policy(), Results([*weak, partly]))
    assert verdict.action is Action.QUARANTINE and verdict.score == 9.0


def test_accepted_learned_bulk_mail_still_suppresses_autoreplies():
    """An accepted bulk message never triggers a help-desk notification."""
    verdict = evaluate(Policy(), Results([failing("automation", "auto.bulk"),
                                          learned("auto.bulk")]))
    assert verdict.action is Action.ACCEPT
    assert ("Auto-Submitted", "auto-generated") in verdict.headers


@pytest.mark.parametrize(("results", "rule"), [
    ([failing("dmarc", "dmarc.policy.reject"), failing("iprev", "iprev.ptr_missing")],
     "dmarc-reject"),
    ([failing("loops", "loop.support_to_support")], "loop-support-to-support"),
    ([failing("loops", "loop.too_many_received")], "loop-too-many-hops"),
    ([failing("rate", "rate.tier.reject")], "rate-reject"),
])
def test_learned_sender_is_never_exempt_from_a_reject(results, rule):
    verdict = evaluate(Policy(), Results([*results, learned()]))
    assert verdict.action is Action.REJECT
    assert rule in [h.rule for h in verdict.hits]


def test_learned_sender_is_still_rate_quarantined():
    verdict = evaluate(Policy(), Results([failing("rate", "rate.tier.quarantine"), learned()]))
    assert verdict.action is Action.QUARANTINE
