"""Automated mail (docs/rules.md §5, §7; RFC 3834, RFC 3464): the check, the rules, and
the RFC 3834 headers the evaluator adds when such mail is delivered anyway."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from helpers import make_ctx
from trustmilter.checks import automation
from trustmilter.checks.automation import (
    AutomationMessageCheck,
    AutomationSenderCheck,
    is_noreply,
    report_type,
)
from trustmilter.config.checks import ChecksConfig
from trustmilter.config.errors import InvalidField
from trustmilter.config.load import ConfigError, parse_settings
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import HeadersConfig, Policy
from trustmilter.policy.rules import Rule
from trustmilter.results import CheckResult, Finding, HeaderRequest, Outcome, Results
from trustmilter.verdict import Action

BUILT_IN = automation.Config().compiled()
SUPPRESS = (("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All"))


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"automation asked DNS for {name} {rdtype}")


def message(*extra, from_="Alice <alice@example.com>"):
    lines = [f"From: {from_}", "To: support@example.org", "Subject: hello",
             "Date: Mon, 1 Dec 2025 10:00:00 +0000", "Message-ID: <1@example.com>", *extra]
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def run_message(raw, config=None):
    [result] = AutomationMessageCheck(config or automation.Config()).run(
        make_ctx(NoDns(), mail_from="alice@example.com", message=raw))
    assert result.check == "automation"
    return result


def run_sender(sender, config=None):
    [result] = AutomationSenderCheck(config or automation.Config()).run(
        make_ctx(NoDns(), mail_from=sender))
    assert result.check == "automation"
    return result


def names(result):
    return [f.name for f in result.findings]


# ---- no-reply senders ------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "noreply@example.com", "no-reply@example.com", "NoReply@example.com", "donotreply@example.com",
    "do-not-reply@example.com", "do_not_reply@example.com", "MAILER-DAEMON@mx.example.net",
    "no-reply+4711@example.com", "info.noreply@example.com", "notifications-noreply@example.com",
])
def test_noreply_local_parts(address):
    assert is_noreply(address, BUILT_IN)


@pytest.mark.parametrize("address", [
    "alice@example.com", "snoreplyx@example.com", "reply@example.com",
    "alice@noreply.example.com",  # only the local part counts
    "",  # the null sender is a bounce, not a no-reply sender
])
def test_not_noreply(address):
    assert not is_noreply(address, BUILT_IN)


def test_noreply_envelope_sender_and_from():
    assert names(run_sender("no-reply@example.com")) == ["auto.noreply_sender"]
    result = run_message(message(from_="Shop <noreply@shop.example.com>"))
    assert names(result) == ["auto.noreply_sender"]
    assert result.outcome is Outcome.FAIL


def test_configured_noreply_patterns():
    config = automation.Config(noreply_patterns=(r"^notifications?$",))
    assert names(run_sender("Notifications@example.com", config)) == ["auto.noreply_sender"]
    assert run_sender("notifications@example.com").findings == ()
    with pytest.raises(InvalidField):
        automation.Config(noreply_patterns=("(unclosed",))


# ---- bulk, machine-generated, bounces ------------------------------------------------


@pytest.mark.parametrize("header", [
    "Precedence: bulk", "Precedence: JUNK", "Precedence: list (mailing list)",
    "List-Id: Announcements <announce.example.com>",
    "List-Unsubscribe: <mailto:leave@example.com>",
])
def test_bulk(header):
    assert names(run_message(message(header))) == ["auto.bulk"]


def test_other_precedence_is_not_bulk():
    assert run_message(message("Precedence: first-class")).findings == ()


@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-generated",
    "Auto-Submitted: auto-notified; owner-email=\"x@example.com\"",
    "X-Auto-Response-Suppress: All",
])
def test_machine_generated(header):
    assert names(run_message(message(header))) == ["auto.machine_generated"]


@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-replied", "X-Autoreply: yes", "X-Autorespond: vacation",
])
def test_automatic_replies_are_not_machine_generated_besides(header):
    """RFC 3834 §5.2: "auto-replied" is a reply; machine_generated is for the rest."""
    assert names(run_message(message(header))) == ["auto.autoreply"]


def test_auto_submitted_no_is_a_human():
    """RFC 3834 §5: "no" means the message was not generated automatically."""
    assert run_message(message("Auto-Submitted: No (written by a person)")).findings == ()


def test_delivery_status_report_is_a_bounce():
    ct = 'Content-Type: multipart/report; report-type="delivery-status"; boundary="b"'
    assert names(run_message(message(ct))) == ["auto.bounce"]


def test_other_reports_are_machine_generated():
    ct = "Content-Type: multipart/report; report-type=disposition-notification; boundary=b"
    assert names(run_message(message(ct))) == ["auto.machine_generated"]


@pytest.mark.parametrize(("value", "expected"), [
    ("multipart/report; report-type=delivery-status", "delivery-status"),
    ("Multipart/Report; Report-Type=Delivery-Status; boundary=x", "delivery-status"),
    ("multipart/report", ""),
    ("multipart/mixed; report-type=delivery-status", None),
    ("text/plain", None), (None, None), ("%%%; ===", None),
])
def test_report_type(value, expected):
    assert report_type(value) == expected


def test_null_sender_is_a_bounce():
    """RFC 5321 §4.5.5: non-delivery notifications use the null reverse-path."""
    assert names(run_sender("")) == ["auto.bounce"]
    assert names(run_sender("<>")) == ["auto.bounce"]


def test_several_findings_at_once():
    raw = message("Precedence: bulk", "Auto-Submitted: auto-generated", from_="noreply@example.com")
    assert names(run_message(raw)) == ["auto.noreply_sender", "auto.bulk", "auto.machine_generated"]


def test_ordinary_mail_passes_and_no_message_is_skipped():
    assert run_message(message()).outcome is Outcome.PASS
    assert run_sender("alice@example.com").outcome is Outcome.PASS
    [result] = AutomationMessageCheck(automation.Config()).run(make_ctx(NoDns()))
    assert result.outcome is Outcome.SKIPPED


# ---- policy: each is held; accepted anyway, it gets the RFC 3834 headers ----------------


@pytest.mark.parametrize(("finding", "rule"), [
    ("auto.noreply_sender", "auto-noreply"),
    ("auto.bulk", "auto-bulk"),
    ("auto.autoreply", "auto-autoreply"),
    ("auto.helpdesk", "auto-helpdesk"),
    ("auto.machine_generated", "auto-machine-generated"),
    ("auto.bounce", "auto-bounce"),
])
def test_default_policy_quarantines_each(finding, rule):
    verdict = evaluate(Policy(), Results([CheckResult("automation", Outcome.FAIL, "", (Finding(finding),))]))
    assert verdict.action is Action.QUARANTINE
    assert [h.rule for h in verdict.hits] == [rule]
    # Held mail is marked already, so that a release delivers it with the headers.
    assert all(pair in verdict.headers for pair in SUPPRESS)


def accepting(policy=None):
    """A policy whose admin chose to accept bulk mail."""
    policy = policy or Policy()
    rules = tuple(r for r in policy.rules if r.name != "auto-bulk")
    rules += (Rule(name="accept-bulk", when=("auto.bulk",), action=Action.ACCEPT),)
    return replace(policy, rules=rules)


BULK = Results([CheckResult("automation", Outcome.FAIL, "", (Finding("auto.bulk", "List-Id present"),))])


def test_accepted_bulk_mail_gets_the_suppression_headers():
    verdict = evaluate(accepting(), BULK)
    assert verdict.action is Action.ACCEPT
    assert verdict.headers == SUPPRESS


def test_the_loop_marker_is_added_with_them_when_the_loop_check_asks():
    marker = HeaderRequest("X-Trustmilter-Loop", "mx1.example.org", "suppressed")
    marked = BULK.plus([CheckResult("loops", Outcome.PASS, "", headers=(marker,))])
    assert evaluate(accepting(), marked).headers == (
        *SUPPRESS, ("X-Trustmilter-Loop", "mx1.example.org"))
    clean = Results([CheckResult("automation", Outcome.PASS, ""),
                     CheckResult("loops", Outcome.PASS, "", headers=(marker,))])
    assert evaluate(accepting(), clean).headers == ()  # not suppressed: no marker


def test_ordinary_mail_and_refused_mail_get_no_suppression_headers():
    clean = Results([CheckResult("automation", Outcome.PASS, "")])
    assert evaluate(Policy(), clean).headers == ()
    looped = Results([CheckResult("loops", Outcome.FAIL, "", (Finding("loop.too_many_received"),)),
                      *BULK.all()])
    verdict = evaluate(Policy(), looped)
    assert verdict.action is Action.REJECT and verdict.headers == ()


def test_suppression_is_configurable():
    headers = HeadersConfig(auto_suppress_when=("auto.machine_generated",),
                            auto_suppress_headers=("Auto-Submitted: auto-notified",))
    policy = replace(accepting(), headers=headers)
    assert evaluate(policy, BULK).headers == ()
    generated = Results([CheckResult("automation", Outcome.FAIL, "", (Finding("auto.machine_generated"),))])
    policy = replace(policy, rules=(Rule(name="take-all", when=("automation.fail",), action=Action.ACCEPT),))
    assert evaluate(policy, generated).headers == (("Auto-Submitted", "auto-notified"),)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("auto_suppress_when", "[auto.bulkk]", "expected a known signal name (did you mean 'auto.bulk'?)"),
    ("auto_suppress_headers", "['Auto-Submitted']", "expected a header field like"),
    ("auto_suppress_headers", "['Bad Name: x']", "expected a header field like"),
])
def test_bad_suppression_settings(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(f"headers.{key}[0]: {message}")):
        parse_settings(f"headers:\n  {key}: {value}\n")


def test_the_default_checks_section_has_automation():
    assert ChecksConfig().automation == automation.Config()
