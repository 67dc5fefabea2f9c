"""Learned reputation (docs/rules.md §7: releasing teaches the filter) and what the
default policy lets it exempt: quarantine rules yes, reject rules never."""

from __future__ import annotations

from dataclasses import replace

import pytest

from helpers import make_ctx
from trustmilter.checks import reputation
from trustmilter.checks.base import Stage
from trustmilter.checks.reputation import ReputationCheck
from trustmilter.config.load import parse_settings
from trustmilter.mail.identity import Identities
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


# ---- negative feedback: spam marks ("quarantine delete --spam") ---------------------


def history(*events, sender=SENDER):
    """A store after `events` in order: "r" a release, "s" a spam mark."""
    store = MemoryStore()
    for i, event in enumerate(events):
        if event == "r":
            store.add_release(sender, ("auto.bulk",), T0 + i)
        else:
            store.add_spam_mark(sender, ("auto.bulk", "dnsbl.listed"), T0 + i)
    return store


@pytest.mark.parametrize(("events", "trusted", "rejected"), [
    ("", False, False),
    ("rr", True, False),
    ("rrs", False, False),         # one mark: trust gone at once, not yet distrusted
    ("rrrrrrs", False, False),     # however many releases came before it
    ("rrsr", False, False),        # 1 release since the mark: not trusted
    ("rrsrr", True, False),        # 2 since, outnumbering 1 mark
    ("ss", False, True),           # spam_to_distrust (2) marks: distrusted
    ("ssrr", False, True),         # 2 releases do not outnumber 2 marks
    ("ssrrr", True, False),        # 3 do: trusted, no longer distrusted
    ("ssrrrs", False, True),       # and the next mark takes it back
    ("srss", False, True),
])
def test_the_standing_arithmetic(events, trusted, rejected):
    known = history(*events).reputation(SENDER) if events else None
    if known is None:
        assert run(MemoryStore()).outcome is Outcome.NONE
        return
    judged = reputation.standing(known, reputation.Config())
    assert (judged.trusted, judged.rejected) == (trusted, rejected)
    result = run(history(*events))
    expected = (Outcome.PASS if trusted else Outcome.FAIL if rejected else Outcome.NONE)
    assert result.outcome is expected, result
    assert [f.name for f in result.findings] == (
        ["reputation.learned"] if trusted else ["reputation.rejected"] if rejected else [])


def test_a_rejected_sender_is_reported_with_the_marked_reasons():
    result = run(history("s", "s"))
    [finding] = result.findings
    assert finding.name == "reputation.rejected"
    assert finding.detail == "2 spam marks, 0 releases since; marked: auto.bulk, dnsbl.listed"
    assert finding.vouches_for is None  # distrust vouches for nothing
    assert result.evidence == reputation.ReputationEvidence(
        0, (), 2, ("auto.bulk", "dnsbl.listed"))
    assert reputation.learned_reasons(result) == frozenset()


def test_one_mark_reports_what_is_missing():
    result = run(history("r", "r", "s"))
    assert (result.outcome, result.findings) == (Outcome.NONE, ())
    assert result.reason == "0 of 2 releases since 1 spam mark(s) (2 to distrust)"
    assert run(history("s", "r")).reason == "1 of 2 releases since 1 spam mark(s) (2 to distrust)"
    # Trust needs more releases since the last mark than there are marks.
    lenient = reputation.Config(spam_to_distrust=5)
    assert run(history("s", "s", "s", "r"), config=lenient).reason == (
        "1 of 4 releases since 3 spam mark(s) (5 to distrust)")


def test_spam_to_distrust_is_configurable():
    config = reputation.Config(spam_to_distrust=1)
    assert run(history("s"), config=config).findings[0].name == "reputation.rejected"
    assert run(history("s", "s"), config=reputation.Config(spam_to_distrust=3)).findings == ()
    assert parse_settings("checks:\n  reputation:\n    spam_to_distrust: 5\n").checks.reputation == (
        reputation.Config(spam_to_distrust=5))


def test_marks_lapse_on_their_own():
    """A year after the last mark it no longer counts; releases since it still do."""
    store = history("s", "s", "r", "r")  # marks at T0, T0+1; releases at T0+2, T0+3
    config = reputation.Config(forget_after_days=1)
    late = replace(make_ctx(NoDns(), mail_from=SENDER), state=store,
                   clock=lambda: T0 + 1 + 86400)
    [result] = ReputationCheck(config).run(late)
    assert result.findings[0].name == "reputation.learned"
    assert result.evidence.spam_marks == 0
    never = replace(late, clock=lambda: T0 + 3 + 86400)
    [gone] = ReputationCheck(config).run(never)
    assert gone.reason == "lapsed: no release or spam mark in 1 days"


def test_the_sender_identity_is_looked_up():
    """Learning is kept per identity: the VERP, BATV and sub-addressed forms of one
    sender are that sender; the policy's separators say what a sub-address is."""
    store = history("s", "s", sender="bounce@example.com")
    for dressed in ("bounce+4711-bob=example.org@example.com", "prvs=1234abcdef=bounce@example.com",
                    "SRS0=HHH=TT=example.com=bounce@forwarder.example.net", "bounce@example.com"):
        assert run(store, sender=dressed).findings[0].name == "reputation.rejected", dressed
    plain = replace(make_ctx(NoDns(), mail_from="bounce+4711@example.com"), state=store,
                    clock=lambda: T0, identities=Identities(""))
    [result] = ReputationCheck(reputation.Config()).run(plain)
    assert result.outcome is Outcome.NONE


def rejected():
    finding = Finding("reputation.rejected")
    return CheckResult("reputation", Outcome.FAIL, "", (finding,))


def test_the_default_policy_holds_a_rejected_sender_whatever_its_score():
    verdict = evaluate(Policy(), Results([rejected()]))
    assert verdict.action is Action.QUARANTINE and verdict.score == 0
    assert [h.rule for h in verdict.hits] == ["reputation-rejected"]
    # A clean, authenticated message too.
    clean = [CheckResult("dmarc", Outcome.PASS), CheckResult("spf.mailfrom", Outcome.PASS)]
    assert evaluate(Policy(), Results([*clean, rejected()])).action is Action.QUARANTINE


def test_a_rejected_sender_is_still_refused_by_a_reject_rule():
    verdict = evaluate(Policy(), Results([failing("loops", "loop.support_to_support"),
                                          rejected()]))
    assert verdict.action is Action.REJECT
