"""The bounce check (SEED-RULES §6): inbound bounces read at end of message, their
summary, our own hard bounces recorded, and the policy around them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from helpers import make_ctx
from test_bounce_explain import EXCHANGE, NOT_A_BOUNCE, POSTFIX_DSN, QMAIL, SENDMAIL
from trustmilter.checks import bounce
from trustmilter.checks.bounce import BounceCheck, may_be_bounce
from trustmilter.config.errors import InvalidField
from trustmilter.model import Message
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, HeaderRequest, Outcome, Results
from trustmilter.state.base import HardBounce, StateError
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action

NOW = 1_790_000_000.0
OWN = bounce.Config(own_domains=("example.com",))


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"the bounce check asked DNS for {name} {rdtype}")


class BrokenStore(MemoryStore):
    def add_bounce(self, record: HardBounce) -> HardBounce:
        raise StateError("redis 127.0.0.1:6379: connection refused")


def run(raw: bytes, config: bounce.Config = OWN, mail_from: str = "",
        state: MemoryStore | None = None) -> CheckResult:
    ctx = make_ctx(NoDns(), ip="192.0.2.25", mail_from=mail_from, message=raw)
    ctx = replace(ctx, state=state, clock=lambda: NOW)
    [result] = BounceCheck(config).run(ctx)
    assert result.check == "bounce"
    if state is not None:  # as the engine does for a delivered bounce
        for effect in result.effects:
            effect.apply(state)
    return result


def names(result: CheckResult) -> list[str]:
    return [f.name for f in result.findings]


# ---- reading -------------------------------------------------------------------------


def test_our_own_bounce_is_read_and_summarised() -> None:
    result = run(POSTFIX_DSN)
    assert result.outcome is Outcome.FAIL  # bob and dave failed permanently
    assert names(result) == ["bounce.own", "bounce.permanent", "bounce.delayed"]
    assert result.evidence.origin == "own"
    # The verdict line's summary, and the header asked for on delivered mail.
    assert result.summary == bounce.summary_of(result)
    assert [(h.name, h.value, h.when) for h in result.headers] == [
        ("X-Trustmilter-Bounce", result.summary, "delivered")]
    assert bounce.summary_of(result) == (
        "own; reporting-mta=mail.example.com; message-id=<q1.20261124@example.com>; "
        "5.1.1 <Bob@example.net> user unknown; 4.2.2 <carol@example.org> mailbox full; "
        "5.7.1 <dave@example.org> blocklisted; hard=1"
    )


def test_a_bounce_of_someone_elses_mail_is_foreign() -> None:
    """Backscatter: the returned message did not come from our domains."""
    result = run(POSTFIX_DSN, bounce.Config(own_domains=("example.org",)))
    assert names(result)[0] == "bounce.foreign"
    assert bounce.summary_of(result).startswith("foreign; ")


def test_without_own_domains_the_origin_is_unknown() -> None:
    result = run(QMAIL, bounce.Config())
    assert "bounce.own" not in names(result) and "bounce.foreign" not in names(result)
    assert bounce.summary_of(result).startswith("unknown; reporting-mta=mx.example.net; ")


def test_a_delay_warning_is_neutral() -> None:
    delayed = POSTFIX_DSN.replace(b"Action: failed\nStatus: 5.1.1", b"Action: delayed\nStatus: 4.4.1")
    delayed = delayed.replace(b"Action: failed\nStatus: 5.7.1", b"Action: delayed\nStatus: 4.4.7")
    result = run(delayed)
    assert result.outcome is Outcome.NEUTRAL
    assert names(result) == ["bounce.own", "bounce.delayed"]


@pytest.mark.parametrize(("raw", "mail_from"), [
    (QMAIL, ""),  # the null sender (RFC 5321 §4.5.5)
    (EXCHANGE, "postmaster@example.org"),  # a From of postmaster, not the null sender
    (SENDMAIL, "MAILER-DAEMON@relay.example.net"),
])
def test_text_bounces_of_other_mtas_are_read(raw: bytes, mail_from: str) -> None:
    result = run(raw, mail_from=mail_from)
    assert result.outcome is Outcome.FAIL
    assert "bounce.permanent" in names(result)


def test_ordinary_mail_is_not_parsed() -> None:
    assert not may_be_bounce("carol@example.org", Message(NOT_A_BOUNCE))
    result = run(NOT_A_BOUNCE, mail_from="carol@example.org")
    assert (result.outcome, result.findings, result.evidence) == (Outcome.NONE, (), None)


def test_a_null_sender_message_that_is_no_bounce_is_none() -> None:
    assert run(NOT_A_BOUNCE, mail_from="").outcome is Outcome.NONE


def test_hostile_text_stays_one_printable_line() -> None:
    raw = POSTFIX_DSN.replace(b"Reporting-MTA: dns; mail.example.com",
                              b"Reporting-MTA: dns; mail.example.com\xe2\x80\x8b\x1b[31m")
    raw = raw.replace(b"Final-Recipient: rfc822; carol@example.org",
                      b"Final-Recipient: rfc822; " + b"c" * 2000 + b"@example.org")
    summary = bounce.summary_of(run(raw))
    assert len(summary) <= bounce.MAX_SUMMARY
    assert all(0x20 <= ord(c) < 0x7F for c in summary)


def test_many_recipients_are_counted_not_listed() -> None:
    part = b"Final-Recipient: rfc822; r%d@example.net\nAction: failed\nStatus: 5.1.1\n\n"
    many = b"".join(part % i for i in range(12))
    raw = POSTFIX_DSN.replace(b"Final-Recipient: rfc822; bob@example.net", many
                              + b"Final-Recipient: rfc822; bob@example.net")
    summary = bounce.summary_of(run(raw))
    assert summary.count("<r") == bounce.MAX_LISTED and summary.endswith("and 10 more; hard=13")


# ---- recording ----------------------------------------------------------------------


def test_our_hard_bounces_are_recorded() -> None:
    store = MemoryStore()
    result = run(POSTFIX_DSN, state=store)
    assert bounce.summary_of(result).endswith("; hard=1")
    # Only 5.1.x is a hard bounce: 5.7.1 (policy) and 4.2.2 (full) may change.
    assert store.hard_bounces(NOW) == [HardBounce(
        recipient="bob@example.net", status="5.1.1", cause="user unknown",
        reporting_mta="mail.example.com", sender="alice@example.com",
        message_id="<q1.20261124@example.com>",
        diagnostic="550 5.1.1 <bob@example.net>: Recipient address rejected: "
                   "User unknown in local recipient table",
        client="192.0.2.25", first_seen=NOW, last_seen=NOW, expires=NOW + 90 * 86400,
    )]


def test_only_codes_that_say_the_recipient_is_gone_are_hard() -> None:
    """5.1.8 (our sender refused, perhaps a passing DNS failure on our side) is not."""
    store = MemoryStore()
    run(POSTFIX_DSN.replace(b"Status: 5.1.1", b"Status: 5.1.8"), state=store)
    assert store.hard_bounces(NOW) == []
    run(POSTFIX_DSN.replace(b"Action: failed\nStatus: 5.1.1", b"Action: delayed\nStatus: 5.1.1"),
        state=store)
    assert store.hard_bounces(NOW) == []


def test_one_bounce_records_a_bounded_number_of_recipients() -> None:
    part = b"Final-Recipient: rfc822; r%d@example.net\nAction: failed\nStatus: 5.1.1\n\n"
    many = b"".join(part % i for i in range(500))
    raw = POSTFIX_DSN.replace(b"Final-Recipient: rfc822; bob@example.net", many
                              + b"Final-Recipient: rfc822; bob@example.net")
    store = MemoryStore()
    assert bounce.summary_of(run(raw, state=store)).endswith(f"hard={bounce.MAX_RECORDED}")
    assert len(store.hard_bounces(NOW)) == bounce.MAX_RECORDED


def test_text_bounces_record_every_hard_recipient() -> None:
    store = MemoryStore()
    run(QMAIL, state=store)
    assert [b.recipient for b in store.hard_bounces(NOW)] == [
        "gina@example.org", "hank@example.org"]


@pytest.mark.parametrize("config", [
    bounce.Config(own_domains=("example.org",)),  # foreign: backscatter is not ours to record
    bounce.Config(),  # origin unknown
    replace(OWN, record_hard_bounces=False),
])
def test_nothing_is_recorded_unless_ours_and_wanted(config: bounce.Config) -> None:
    store = MemoryStore()
    result = run(POSTFIX_DSN, config, state=store)
    assert store.hard_bounces(NOW) == []
    assert "hard=" not in bounce.summary_of(result) and result.effects == ()


def test_the_check_itself_writes_nothing() -> None:
    """It observes; the engine writes its effects once the bounce is delivered."""
    store = MemoryStore()
    ctx = replace(make_ctx(NoDns(), ip="192.0.2.25", message=POSTFIX_DSN), state=store,
                  clock=lambda: NOW)
    [result] = BounceCheck(OWN).run(ctx)
    assert store.hard_bounces(NOW) == [] and len(result.effects) == 1
    with pytest.raises(StateError):
        result.effects[0].apply(BrokenStore())


def test_keep_days_sets_the_expiry() -> None:
    store = MemoryStore()
    run(POSTFIX_DSN, replace(OWN, keep_days=7), state=store)
    [record] = store.hard_bounces(NOW)
    assert record.expires == NOW + 7 * 86400


# ---- configuration and policy ----------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("own_domains", ("not a domain",)), ("header", "X Bad: header"),
])
def test_bad_configuration_is_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidField) as raised:
        bounce.Config(**{field: value})
    assert raised.value.path[0] == field


def bounce_result(origin: str) -> CheckResult:
    finding = Finding(f"bounce.{origin}") if origin in ("own", "foreign") else None
    line = f"{origin}; 5.1.1 <bob@example.net> user unknown"
    return CheckResult("bounce", Outcome.FAIL, "", (finding,) if finding else (), summary=line,
                       headers=(HeaderRequest(bounce.Config().header, line),))


def bounce_results(origin: str) -> Results:
    """A bounce as the automation check sees one: null sender, MAILER-DAEMON, a report."""
    automation = CheckResult("automation", Outcome.FAIL, "", (
        Finding("auto.bounce"), Finding("auto.noreply_sender"), Finding("auto.machine_generated")))
    return Results([automation, bounce_result(origin)])


@pytest.mark.parametrize("origin", ["own", "foreign"])
def test_bounces_are_held_with_their_summary(origin: str) -> None:
    """SEED-RULES §6: bounces from outside belong in the suspended queue; "own" is
    the bounce's own claim, so it lifts nothing by default either."""
    verdict = evaluate(Policy(), bounce_results(origin))
    assert verdict.action is Action.QUARANTINE
    assert [rule.rule for rule in verdict.hits] == [
        "auto-noreply", "auto-machine-generated", "auto-bounce"]
    assert ("X-Trustmilter-Bounce", f"{origin}; 5.1.1 <bob@example.net> user unknown") in (
        verdict.headers)


def test_a_policy_can_deliver_own_bounces() -> None:
    """Where outbound mail carries unforgeable return paths, bounce.own may lift the rules."""
    policy = Policy()
    rules = tuple(replace(rule, unless=(*rule.unless, "bounce.own"))
                  if rule.name in ("auto-noreply", "auto-machine-generated", "auto-bounce")
                  else rule for rule in policy.rules)
    opened = replace(policy, rules=rules)
    assert evaluate(opened, bounce_results("own")).action is Action.ACCEPT
    assert evaluate(opened, bounce_results("foreign")).action is Action.QUARANTINE


def test_the_summary_header_can_be_turned_off_and_is_not_added_to_refused_mail() -> None:
    quiet = run(POSTFIX_DSN, replace(OWN, header=""))
    assert quiet.summary and quiet.headers == ()  # logged, but no header asked for
    rejecting = Policy(thresholds=replace(Policy().thresholds, reject=10.0),
                       scores={**Policy().scores, "bounce.foreign": 20.0})
    verdict = evaluate(rejecting, bounce_results("foreign"))
    assert verdict.action is Action.REJECT
    assert not [h for h in verdict.headers if h[0] == "X-Trustmilter-Bounce"]
