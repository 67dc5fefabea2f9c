"""The bounce check (docs/rules.md §6): inbound bounces read at end of message, their
summary, our own hard bounces recorded, and the policy around them."""

from __future__ import annotations

import urllib.parse
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
# Our domain, and our own MTAs: the reporters of POSTFIX_DSN and QMAIL, and
# the client that delivers them in `run` (its name as the MTA verified it).
OWN = bounce.Config(own_domains=("example.com",), own_mtas=("mail.example.com", "mx.example.net"))
OUR_MTA = "mail.example.com"
# The same domain, but no MTA of ours: a From of ours inside only claims.
CLAIMS = bounce.Config(own_domains=("example.com",))


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"the bounce check asked DNS for {name} {rdtype}")


class BrokenStore(MemoryStore):
    def add_bounce(self, record: HardBounce) -> HardBounce:
        raise StateError("redis 127.0.0.1:6379: connection refused")


def run(raw: bytes, config: bounce.Config = OWN, mail_from: str = "",
        state: MemoryStore | None = None, client: str | None = OUR_MTA) -> CheckResult:
    ctx = make_ctx(NoDns(), ip="192.0.2.25", mail_from=mail_from, message=raw, hostname=client)
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
    assert names(result) == ["bounce.ours", "bounce.own", "bounce.permanent", "bounce.delayed"]
    assert result.evidence.origin == "own"
    # The verdict line's summary, and the header asked for on delivered mail.
    assert result.summary == bounce.summary_of(result)
    assert [(h.name, h.value, h.when) for h in result.headers] == [
        ("X-Trustmilter-Bounce", result.summary, "delivered")]
    assert bounce.summary_of(result) == (
        "own; ours=yes:reporting-mta; reporting-mta=mail.example.com; "
        "message-id=<q1.20261124@example.com>; "
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
    assert bounce.summary_of(result).startswith("unknown; ours=no; reporting-mta=mx.example.net; ")


def test_a_delay_warning_is_neutral() -> None:
    delayed = POSTFIX_DSN.replace(b"Action: failed\nStatus: 5.1.1", b"Action: delayed\nStatus: 4.4.1")
    delayed = delayed.replace(b"Action: failed\nStatus: 5.7.1", b"Action: delayed\nStatus: 4.4.7")
    result = run(delayed)
    assert result.outcome is Outcome.NEUTRAL
    assert names(result) == ["bounce.ours", "bounce.own", "bounce.delayed"]


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
        ours="reporting-mta",
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


@pytest.mark.parametrize(("config", "client", "ours"), [
    # foreign: backscatter is not ours to record
    (bounce.Config(own_domains=("example.org",)), OUR_MTA, "no"),
    (bounce.Config(), OUR_MTA, "no"),  # origin unknown
    # A From of ours inside, nothing else: it only claims to be ours.
    (CLAIMS, OUR_MTA, "claims"),
    # Our MTA named as the reporter, but a stranger delivered it.
    (OWN, "mx.example.org", "claims"),
    (OWN, None, "claims"),  # a client whose name the MTA could not verify
    (replace(OWN, record_hard_bounces=False), OUR_MTA, "yes:reporting-mta"),
])
def test_nothing_is_recorded_unless_verifiably_ours_and_wanted(
        config: bounce.Config, client: str | None, ours: str) -> None:
    store = MemoryStore()
    result = run(POSTFIX_DSN, config, state=store, client=client)
    assert store.hard_bounces(NOW) == []
    assert "hard=" not in bounce.summary_of(result) and result.effects == ()
    assert bounce.summary_of(result).split("; ")[1] == f"ours={ours}"
    assert ("bounce.ours" in names(result)) is ours.startswith("yes")


def test_the_check_itself_writes_nothing() -> None:
    """It observes; the engine writes its effects once the bounce is delivered."""
    store = MemoryStore()
    ctx = replace(make_ctx(NoDns(), ip="192.0.2.25", message=POSTFIX_DSN, hostname=OUR_MTA),
                  state=store, clock=lambda: NOW)
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
    """docs/rules.md §6: bounces from outside belong in the suspended queue; "own" is
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


# ---- values from the bounce cannot write our header ------------------------------------

HOSTILE = 'x; own; recorded=5 "q"=\u00e9'


def fields(line: str) -> list[str]:
    return line.split("; ")


def unquoted(value: str) -> str:
    return urllib.parse.unquote(value)


def hostile_summary(old: bytes, new: str) -> str:
    raw = POSTFIX_DSN.replace(old, new.encode("utf-8"))
    assert raw != POSTFIX_DSN
    summary = bounce.summary_of(run(raw, CLAIMS))
    assert summary is not None
    assert all(0x20 <= ord(c) < 0x7F for c in summary)
    return summary


BENIGN = bounce.summary_of(run(POSTFIX_DSN, CLAIMS)) or ""


def test_a_reporting_mta_cannot_add_fields() -> None:
    """The attack run's own sample: "; " in Reporting-MTA wrote "own" and "recorded=5"."""
    line = hostile_summary(b"Reporting-MTA: dns; mail.example.com",
                           "Reporting-MTA: dns; mail.example.com; own; recorded=5")
    assert len(fields(line)) == len(fields(BENIGN))
    assert fields(line)[2] == "reporting-mta=mail.example.com%3B%20own%3B%20recorded%3D5"
    assert fields(line)[-1] == "5.7.1 <dave@example.org> blocklisted"
    # Nor can it pass for our own MTA, delivered by it or not.
    verified = bounce.summary_of(run(POSTFIX_DSN.replace(
        b"Reporting-MTA: dns; mail.example.com",
        b"Reporting-MTA: dns; mail.example.com; own; recorded=5"))) or ""
    assert fields(verified)[1] == "ours=claims" and "hard=" not in verified


@pytest.mark.parametrize(("old", "template", "index"), [
    # Reporting-MTA (RFC 3464 §2.2.2)
    (b"Reporting-MTA: dns; mail.example.com", "Reporting-MTA: dns; {}", 2),
    # the returned message's Message-ID
    (b"Message-ID: <q1.20261124@example.com>", "Message-ID: <{}@example.com>", 3),
    # Final-Recipient (the address when there is no Original-Recipient)
    (b"Final-Recipient: rfc822; carol@example.org", 'Final-Recipient: rfc822; "{}"@example.org', 5),
    # Original-Recipient (the address the sender used)
    (b"Original-Recipient: rfc822;Bob@example.net", 'Original-Recipient: rfc822;"{}"@example.net', 4),
])
def test_each_value_from_the_bounce_is_encoded(old: bytes, template: str, index: int) -> None:
    # In an address the value is a quoted local part (RFC 5321 §4.1.2): its quotes escaped.
    value = HOSTILE.replace('"', '\\"') if template.count('"') else HOSTILE
    line = hostile_summary(old, template.format(value))
    parts = fields(line)
    assert len(parts) == len(fields(BENIGN)), line
    assert not any(part.startswith(("own", "recorded=")) for part in parts[1:]), line
    assert "%3B" in parts[index] and "%3D" in parts[index] and "%22" in parts[index]
    assert "%C3%A9" in parts[index]  # non-ASCII: its UTF-8 bytes


def test_line_breaks_and_a_long_value_stay_in_one_field() -> None:
    line = hostile_summary(b"Reporting-MTA: dns; mail.example.com",
                           "Reporting-MTA: dns; a\r\n b=1;\r\n\tc" + "d" * 2000)
    parts = fields(line)
    assert len(parts) == len(fields(BENIGN)) and "\r" not in line and "\n" not in line
    assert len(parts[2]) <= len("reporting-mta=") + 3 * bounce.MAX_VALUE


def test_the_status_field_cannot_carry_text() -> None:
    """Only a well-formed code is shown; the rest of a Status field is not."""
    line = hostile_summary(b"Status: 5.1.1", "Status: 5.1.1; recorded=9")
    assert fields(line)[4].startswith("5.1.1 <Bob@example.net>")
    assert "recorded=9" not in line


def test_text_bounce_values_are_encoded_too() -> None:
    raw = QMAIL.replace(b"<hank@example.org>:", b'<"h;a=nk"@example.org>:')
    line = bounce.summary_of(run(raw)) or ""
    assert "h%3Ba%3Dnk" in line and len(fields(line)) == len(fields(bounce.summary_of(run(QMAIL)) or ""))


def test_quoting_is_reversible_and_leaves_plain_values_alone() -> None:
    for value in ("mail.example.com", "<q1@example.com>", "bob+tag@example.org", HOSTILE):
        assert unquoted(bounce.quoted(value)) == value
    assert bounce.quoted("mail.example.com") == "mail.example.com"


# ---- permanence, relayed reports and inferred codes ---------------------------------------


def test_a_relayed_report_is_no_failure() -> None:
    relayed = POSTFIX_DSN.replace(b"Action: failed\nStatus: 5.1.1", b"Action: relayed\nStatus: 2.0.0")
    relayed = relayed.replace(b"Action: failed\nStatus: 5.7.1", b"Action: delivered\nStatus: 2.0.0")
    result = run(relayed)
    assert result.outcome is Outcome.NEUTRAL  # only carol's delay is a failure
    assert names(result) == ["bounce.ours", "bounce.own", "bounce.delayed"]
    assert "2.0.0 <Bob@example.net> delivered" in (bounce.summary_of(result) or "")


def test_a_failure_with_a_temporary_code_fails() -> None:
    """Action failed with 4.4.7: the reporter gave up, whatever the code's class."""
    expired = POSTFIX_DSN.replace(b"Status: 5.7.1", b"Status: 4.4.7")
    result = run(expired)
    assert result.outcome is Outcome.FAIL
    assert [f.detail for f in result.findings if f.name == "bounce.permanent"] == [
        "Bob@example.net, dave@example.org"]


def test_codes_inferred_from_words_record_nothing() -> None:
    """Only a code the bounce states makes a hard bounce: "user unknown" alone does not."""
    store = MemoryStore()
    text = QMAIL.replace(b"Remote host said: 550 5.1.1 <gina@example.org>... User unknown",
                         b"Remote host said: 550 <gina@example.org>... User unknown")
    result = run(text, state=store)
    gina = next(r for r in bounce.explain(text, ("example.com",)).recipients
                if r.address == "gina@example.org")
    assert (gina.status, gina.status_source) == ("5.1.1", "inferred")
    assert [b.recipient for b in store.hard_bounces(NOW)] == ["hank@example.org"]
    assert (bounce.summary_of(result) or "").endswith("hard=1")
