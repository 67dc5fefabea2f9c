"""evaluate(): the default rules, scoring, thresholds, shadow mode, replies, headers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import HeadersConfig, Policy, Thresholds
from trustmilter.policy.rules import ReplyConfig, Rule
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.verdict import Action, Reply, RuleHit

DEFAULT = Policy()


def result(check: str, outcome: str, *findings: str | Finding) -> CheckResult:
    return CheckResult(
        check=check,
        outcome=Outcome(outcome),
        findings=tuple(f if isinstance(f, Finding) else Finding(f) for f in findings),
    )


def results(*items: CheckResult) -> Results:
    return Results(items)


# Mail that authenticates cleanly: nothing scores.
CLEAN = (
    result("iprev", "pass"),
    result("helo", "pass"),
    result("spf.mailfrom", "pass"),
    result("dkim", "pass"),
    result("dmarc", "pass", "dmarc.spf_aligned", "dmarc.dkim_aligned", "dmarc.policy.reject"),
)


def test_clean_mail_is_accepted_without_headers() -> None:
    verdict = evaluate(DEFAULT, results(*CLEAN))
    assert (verdict.action, verdict.score, verdict.reasons) == (Action.ACCEPT, 0.0, ())
    assert verdict.reply is None and verdict.headers == () and verdict.hits == ()
    assert verdict.quarantine_reason == ""


def test_no_results_at_all_is_accepted() -> None:
    assert evaluate(DEFAULT, Results()).action is Action.ACCEPT


def test_one_weak_signal_marks_low_trust() -> None:
    verdict = evaluate(DEFAULT, results(result("iprev", "fail", "iprev.ptr_missing"), *CLEAN[1:]))
    assert verdict.action is Action.LOW_TRUST
    assert verdict.score == 3.0
    assert verdict.reasons == ("iprev.ptr_missing",)
    assert verdict.reply is None
    assert verdict.headers == (
        ("X-Trustmilter-Trust", "low; score=3.0; reasons=iprev.ptr_missing"),
    )


def test_no_authentication_at_all_is_low_trust() -> None:
    verdict = evaluate(
        DEFAULT,
        results(result("spf.mailfrom", "none"), result("dkim", "none"), result("dmarc", "none")),
    )
    assert verdict.action is Action.LOW_TRUST
    assert verdict.reasons == ("dkim.none", "dmarc.none", "spf.mailfrom.none")


def test_several_weak_signals_quarantine_by_score() -> None:
    verdict = evaluate(
        DEFAULT,
        results(
            result("iprev", "fail", "iprev.ptr_generic"),
            result("helo", "fail", "helo.nxdomain"),
            result("headers", "fail", "headers.date_missing"),
        ),
    )
    assert verdict.action is Action.QUARANTINE
    assert verdict.score == 9.0
    assert verdict.quarantine_reason == "held by trustmilter policy (score 9 >= 8)"
    assert verdict.headers == ((
        "X-Trustmilter-Trust",
        "low; score=9.0; reasons=headers.date_missing,helo.nxdomain,iprev.ptr_generic; "
        "action=quarantine",
    ),)


def test_a_distinct_signal_counts_once() -> None:
    verdict = evaluate(DEFAULT, results(result("dkim", "fail"), result("dkim", "fail")))
    assert verdict.score == 3.0


def test_list_weights_add_per_finding() -> None:
    verdict = evaluate(
        DEFAULT,
        results(
            result("dnsbl", "fail",
                   Finding("dnsbl.listed", "bl1.example.org", 1.5),
                   Finding("dnsbl.listed", "bl2.example.org", 2.0)),
        ),
    )
    # dnsbl.listed's 2 points once, plus each list's weight.
    assert verdict.score == 5.5
    assert verdict.action is Action.LOW_TRUST
    assert verdict.reasons == ("dnsbl.listed",)


# ---- the default rules ----------------------------------------------------


def test_dmarc_reject() -> None:
    """RFC 9989 §7.4: p=reject is refused with other evidence of forgery (here: no PTR)."""
    verdict = evaluate(
        DEFAULT,
        results(result("iprev", "fail", "iprev.ptr_missing"),
                result("spf.mailfrom", "softfail"), result("dkim", "none"),
                result("dmarc", "fail", "dmarc.policy.reject")),
    )
    assert verdict.action is Action.REJECT
    assert verdict.reply == Reply(550, "5.7.1", "Rejected by the DMARC policy of the From domain")
    assert [h.rule for h in verdict.hits][:1] == ["dmarc-reject"]
    assert verdict.hits[0].signals == ("dmarc.fail", "dmarc.policy.reject", "iprev.ptr_missing")
    assert not verdict.hits[0].shadow
    assert verdict.headers == ()  # not delivered: nothing to mark
    assert "dmarc.policy.reject" in verdict.reasons


def test_dmarc_reject_alone_is_held_not_refused() -> None:
    """RFC 9989 §7.4: not rejected on p=reject alone (forwarders and lists break DMARC)."""
    verdict = evaluate(
        DEFAULT,
        results(result("spf.mailfrom", "softfail"), result("dkim", "none"),
                result("dmarc", "fail", "dmarc.policy.reject")),
    )
    assert verdict.action is Action.QUARANTINE and verdict.reply is None
    assert [h.rule for h in verdict.hits] == ["dmarc-reject-held"]


def test_dmarc_reject_is_waived_by_a_trusted_arc_sealer() -> None:
    verdict = evaluate(
        DEFAULT,
        results(result("dmarc", "fail", "dmarc.policy.reject"),
                result("arc", "pass", "arc.trusted_pass")),
    )
    assert verdict.action is Action.LOW_TRUST  # dmarc.fail still scores 3
    assert verdict.hits == ()


def test_dmarc_reject_is_waived_by_a_trusted_gateway() -> None:
    verdict = evaluate(
        DEFAULT,
        results(result("dmarc", "fail", "dmarc.policy.reject"),
                result("upstream.dmarc", "pass")),
    )
    assert verdict.action is not Action.REJECT


def test_dmarc_quarantine() -> None:
    verdict = evaluate(DEFAULT, results(result("dmarc", "fail", "dmarc.policy.quarantine")))
    assert verdict.action is Action.QUARANTINE
    assert verdict.reply is None
    assert verdict.quarantine_reason == "held by trustmilter policy (rule dmarc-quarantine)"
    assert verdict.headers[0][1].endswith("action=quarantine; rules=dmarc-quarantine")


def test_dmarc_policy_none_only_scores() -> None:
    verdict = evaluate(DEFAULT, results(result("dmarc", "fail", "dmarc.policy.none")))
    assert (verdict.action, verdict.hits) == (Action.LOW_TRUST, ())


def test_spf_fail_without_aligned_dkim_is_quarantined() -> None:
    verdict = evaluate(DEFAULT, results(result("spf.mailfrom", "fail"), result("dkim", "none")))
    assert verdict.action is Action.QUARANTINE
    assert [h.rule for h in verdict.hits] == ["spf-fail-unaligned"]


def test_spf_fail_with_aligned_dkim_only_scores() -> None:
    verdict = evaluate(
        DEFAULT,
        results(result("spf.mailfrom", "fail"), result("dkim", "pass"),
                result("dmarc", "pass", "dmarc.dkim_aligned")),
    )
    assert (verdict.action, verdict.score, verdict.hits) == (Action.LOW_TRUST, 3.0, ())


def test_nonexistent_sender_domain_is_rejected_with_5_1_8() -> None:
    verdict = evaluate(DEFAULT, results(result("names", "fail", "names.sender_nonexistent")))
    assert verdict.action is Action.REJECT
    assert verdict.reply == Reply(550, "5.1.8", "Sender address rejected: domain does not exist")


def test_nonexistent_from_domain_is_quarantined() -> None:
    verdict = evaluate(DEFAULT, results(result("names", "fail", "names.from_nonexistent")))
    assert verdict.action is Action.QUARANTINE
    assert [h.rule for h in verdict.hits] == ["from-domain-nonexistent"]


def test_dmarc_temperror_tempfails_with_4_4_3() -> None:
    verdict = evaluate(DEFAULT, results(result("dmarc", "temperror")))
    assert verdict.action is Action.TEMPFAIL
    assert verdict.reply is not None and (verdict.reply.code, verdict.reply.dsn) == (451, "4.4.3")


def test_spf_temperror_tempfails_unless_dmarc_passed() -> None:
    assert evaluate(DEFAULT, results(result("spf.mailfrom", "temperror"))).action is (
        Action.TEMPFAIL
    )
    verdict = evaluate(
        DEFAULT,
        results(result("spf.mailfrom", "temperror"),
                result("dmarc", "pass", "dmarc.dkim_aligned")),
    )
    assert verdict.action is Action.ACCEPT


# ---- severity, thresholds, replies -----------------------------------------


def test_most_severe_action_wins() -> None:
    # tempfail (DMARC undecided) + reject (sender domain gone): reject.
    verdict = evaluate(
        DEFAULT,
        results(result("dmarc", "temperror"),
                result("names", "fail", "names.sender_nonexistent")),
    )
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None and verdict.reply.dsn == "5.1.8"
    # tempfail beats quarantine, both forced by rules.
    verdict = evaluate(
        DEFAULT,
        results(result("spf.mailfrom", "fail"), result("dmarc", "temperror")),
    )
    assert verdict.action is Action.TEMPFAIL
    assert {h.rule for h in verdict.hits} == {"spf-fail-unaligned", "dmarc-temperror"}
    assert verdict.quarantine_reason == ""


def test_severity_order() -> None:
    order = [Action.ACCEPT, Action.LOW_TRUST, Action.QUARANTINE, Action.DISCARD,
             Action.TEMPFAIL, Action.REJECT]
    assert sorted(Action, key=lambda a: a.severity) == order


@pytest.mark.parametrize(
    ("score", "action"),
    [(0, Action.ACCEPT), (1.9, Action.ACCEPT), (2, Action.LOW_TRUST), (5.9, Action.LOW_TRUST),
     (6, Action.QUARANTINE), (9.9, Action.QUARANTINE), (10, Action.REJECT)],
)
def test_thresholds(score: float, action: Action) -> None:
    policy = Policy(
        scores={},
        rules=(Rule(name="points", when=("dkim.fail",), score=score),) if score else (),
        thresholds=Thresholds(low_trust=2, quarantine=6, reject=10),
    )
    verdict = evaluate(policy, results(result("dkim", "fail")))
    assert verdict.action is action
    if action is Action.REJECT:
        assert verdict.reply == Reply(550, "5.7.1", "Message rejected by local policy")


def test_scores_sum_without_float_drift() -> None:
    policy = Policy(
        scores={"iprev.ptr_missing": 0.1, "helo.nxdomain": 0.2},
        rules=(),
        thresholds=Thresholds(low_trust=0.3, quarantine=8),
    )
    verdict = evaluate(policy, results(result("iprev", "fail", "iprev.ptr_missing"),
                                       result("helo", "fail", "helo.nxdomain")))
    assert verdict.score == 0.3 and verdict.action is Action.LOW_TRUST


def test_rule_without_reply_uses_the_default_reply() -> None:
    policy = Policy(
        rules=(Rule(name="no-dkim", when=("dkim.fail",), action=Action.REJECT),
               Rule(name="later", when=("dkim.fail",), action=Action.TEMPFAIL)),
    )
    verdict = evaluate(policy, results(result("dkim", "fail")))
    assert verdict.reply == DEFAULT.actions.reject.reply()
    tempfail = Policy(rules=(Rule(name="t", when=("dkim.fail",), action=Action.TEMPFAIL),))
    assert evaluate(tempfail, results(result("dkim", "fail"))).reply == Reply(
        451, "4.7.1", "Message deferred by local policy, please try again later"
    )


def test_first_deciding_rule_reply_wins() -> None:
    policy = Policy(
        rules=(
            Rule(name="weaker", when=("dkim.fail",), action=Action.QUARANTINE),
            Rule(name="plain", when=("dkim.fail",), action=Action.REJECT),
            Rule(name="custom", when=("dkim.fail",), action=Action.REJECT,
                 reply=ReplyConfig(554, "5.7.0", "custom text")),
        ),
    )
    assert evaluate(policy, results(result("dkim", "fail"))).reply == Reply(
        554, "5.7.0", "custom text"
    )


# ---- matching: when / any / unless / wildcards --------------------------------


def test_any_and_unless() -> None:
    rule = Rule(name="r", when=("dnsbl.listed",), any=("spf.mailfrom.none", "dkim.none"),
                unless=("dmarc.pass",), action=Action.QUARANTINE)
    policy = Policy(rules=(rule,))
    listed = result("dnsbl", "fail", "dnsbl.listed")
    assert evaluate(policy, results(listed)).hits == ()
    verdict = evaluate(policy, results(listed, result("dkim", "none")))
    assert verdict.hits == (RuleHit("r", Action.QUARANTINE, 0.0, False,
                                    ("dkim.none", "dnsbl.listed")),)
    assert evaluate(policy, results(listed, result("dkim", "none"),
                                    result("dmarc", "pass"))).hits == ()


def test_wildcard_patterns() -> None:
    policy = Policy(scores={}, rules=(Rule(name="any-helo", when=("helo.*",), score=4),))
    verdict = evaluate(policy, results(result("helo", "fail", "helo.localhost")))
    assert verdict.hits[0].signals == ("helo.fail", "helo.localhost")
    assert (verdict.score, verdict.action) == (4.0, Action.LOW_TRUST)
    assert verdict.reasons == ("helo.fail", "helo.localhost")
    assert evaluate(policy, results(result("iprev", "fail"))).hits == ()


def test_negative_scores_reward() -> None:
    policy = Policy(scores={**DEFAULT.scores, "dmarc.pass": -3.0})
    verdict = evaluate(policy, results(result("iprev", "fail", "iprev.ptr_missing"),
                                       result("dmarc", "pass")))
    assert (verdict.score, verdict.action) == (0.0, Action.ACCEPT)


# ---- shadow mode ------------------------------------------------------------


def test_shadow_rule_is_reported_and_changes_nothing() -> None:
    shadow = [replace(r, mode="shadow") if r.name == "spf-fail-unaligned" else r
              for r in DEFAULT.rules]
    shadow.append(Rule(name="extra", when=("spf.mailfrom.fail",), score=50, mode="shadow"))
    policy = Policy(rules=tuple(shadow))
    verdict = evaluate(policy, results(result("spf.mailfrom", "fail")))
    assert verdict.action is Action.LOW_TRUST
    assert verdict.score == 3.0
    assert [(h.rule, h.shadow) for h in verdict.hits] == [
        ("spf-fail-unaligned", True), ("extra", True),
    ]
    assert verdict.headers == (
        ("X-Trustmilter-Trust", "low; score=3.0; reasons=spf.mailfrom.fail"),
        ("X-Trustmilter-Shadow",
         "would have quarantined (rule spf-fail-unaligned); "
         "would have added 50 points (rule extra)"),
    )


def test_shadow_header_is_not_added_to_rejected_mail() -> None:
    policy = Policy(rules=(
        *DEFAULT.rules, Rule(name="s", when=("names.sender_nonexistent",), score=1,
                             mode="shadow"),
    ))
    verdict = evaluate(policy, results(result("names", "fail", "names.sender_nonexistent")))
    assert verdict.action is Action.REJECT and verdict.headers == ()
    assert verdict.hits[-1].shadow


# ---- header configuration -------------------------------------------------


def test_header_switches_and_names() -> None:
    quarantined = results(result("dmarc", "fail", "dmarc.policy.quarantine"))
    quiet = Policy(headers=HeadersConfig(add_on_quarantine=False))
    assert evaluate(quiet, quarantined).headers == ()
    renamed = Policy(headers=HeadersConfig(trust_header="X-Trust", add_low_trust_header=True))
    weak = results(result("helo", "fail", "helo.nxdomain"))
    assert evaluate(renamed, weak).headers[0][0] == "X-Trust"
    off = Policy(headers=HeadersConfig(add_low_trust_header=False))
    assert evaluate(off, weak).headers == ()


def test_any_present_and_present_agree_with_matching():
    """The evaluator's quick tests (no sets built, a wildcard as a binary search)
    say exactly whether `matching` would find something."""
    import itertools

    from trustmilter.policy.patterns import any_present, matching, present

    names = ("auto", "auto.bulk", "autox", "loop.x", "rate.tier", "rate.tier.1", "r")
    patterns = ("auto.*", "auto*", "loop.*", "rate.tier.*", "rate.tier", "*", "x", "r*")
    for size in range(4):
        for chosen in itertools.combinations(names, size):
            signals = frozenset(chosen)
            for pattern in patterns:
                assert present(pattern, signals) == bool(matching(pattern, signals))
            for count in range(3):
                for group in itertools.combinations(patterns, count):
                    expected = any(matching(p, signals) for p in group)
                    assert any_present(group, signals) == expected, (signals, group)
