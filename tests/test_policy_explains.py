"""Explanations (CheckResult.explains): a trusted party's pass takes local failures
out of the score and the rules. Pure: evaluate() and is_final() on hand-made Results."""

from __future__ import annotations

from trustmilter.policy.evaluate import evaluate, explained
from trustmilter.policy.finality import is_final
from trustmilter.policy.model import Policy
from trustmilter.policy.rules import Rule
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.verdict import Action

DEFAULT = Policy()
# What forwarding does to a signed message: the forwarder's address fails the
# author's SPF, its footer breaks the signature, so DMARC fails: 9 points.
FORWARDED = (
    CheckResult("iprev", Outcome.PASS),
    CheckResult("spf.mailfrom", Outcome.FAIL),
    CheckResult("dkim", Outcome.FAIL),
    CheckResult("dmarc", Outcome.FAIL, findings=(Finding("dmarc.policy.none"),)),
)
SEALER_PASS = CheckResult(
    "arc", Outcome.PASS, findings=(Finding("arc.trusted_pass"),),
    explains=frozenset({"spf.mailfrom.fail", "dkim.fail", "dmarc.fail", "dmarc.policy.*"}),
)


def test_without_an_explanation_forwarding_quarantines() -> None:
    verdict = evaluate(DEFAULT, Results(FORWARDED))
    assert verdict.score >= 9 and verdict.action is Action.QUARANTINE
    assert verdict.explained == ()


def test_explained_failures_neither_score_nor_trigger_rules() -> None:
    verdict = evaluate(DEFAULT, Results((*FORWARDED, SEALER_PASS)))
    assert verdict.action is Action.ACCEPT and verdict.score == 0
    assert verdict.hits == ()
    assert verdict.explained == ("dkim.fail", "dmarc.fail", "dmarc.policy.none",
                                 "spf.mailfrom.fail")


def test_an_explanation_covers_only_what_it_names() -> None:
    only_spf = CheckResult("upstream.spf", Outcome.PASS,
                           explains=frozenset({"spf.mailfrom.fail"}))
    verdict = evaluate(DEFAULT, Results((*FORWARDED, only_spf)))
    assert "spf.mailfrom.fail" in verdict.explained
    assert {"dkim.fail", "dmarc.fail"} <= set(verdict.reasons)
    assert verdict.score == 6  # dkim.fail 3 + dmarc.fail 3


def test_an_explainer_is_never_explained_away() -> None:
    """One explanation cannot cancel another (nor itself)."""
    greedy = CheckResult("forwarded", Outcome.PASS, explains=frozenset({"arc.*", "forwarded.*"}))
    both = Results((SEALER_PASS, greedy))
    assert explained(both) == frozenset()


def test_an_explained_listing_loses_its_own_weight_too() -> None:
    listed = CheckResult("dnsbl", Outcome.FAIL,
                         findings=(Finding("dnsbl.listed", "bl.example.org", 4.0),))
    explainer = CheckResult("x", Outcome.PASS, explains=frozenset({"dnsbl.*"}))
    assert evaluate(DEFAULT, Results((listed,))).score == 6
    assert evaluate(DEFAULT, Results((listed, explainer))).score == 0


def test_a_rule_on_a_signal_a_later_check_may_explain_is_not_final() -> None:
    policy = Policy(rules=(Rule(name="spf-reject", when=("spf.mailfrom.fail",),
                                action=Action.REJECT),))
    verdict = evaluate(policy, Results((CheckResult("spf.mailfrom", Outcome.FAIL),)))
    assert verdict.action is Action.REJECT
    assert is_final(policy, verdict, {"dmarc."})
    assert not is_final(policy, verdict, {"dmarc."}, ("spf.mailfrom.*",))
    assert is_final(policy, verdict, {"dmarc."}, ("dkim.fail",))
