"""Automatic replies and other help desks' output (checks/autoreply_signs.py and
the automation check): every sign, the Subjects in each language, what must
not count, linear time on hostile input, and the policy around them."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from helpers import make_ctx
from trustmilter.checks import automation
from trustmilter.checks.automation import AutomationMessageCheck, is_autoreply
from trustmilter.checks.autoreply_signs import (
    HELPDESK_FIELDS,
    SUBJECT_HEAD,
    autoreply_subject,
    is_foreign_loop_field,
)
from trustmilter.config.load import ConfigError, parse_settings
from trustmilter.model import Message
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.verdict import Action

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"

SUPPRESS = (("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All"))


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"automation asked DNS for {name} {rdtype}")


def raw(*fields: str, subject: str | None = "Your order 4711") -> bytes:
    lines = ["From: Alice <alice@example.com>", "To: support@example.org",
             "Date: Mon, 1 Dec 2025 10:00:00 +0000", "Message-ID: <1@example.com>"]
    if subject is not None:
        lines.append(f"Subject: {subject}")
    return ("\r\n".join([*lines, *fields]) + "\r\n\r\nbody\r\n").encode()


def check(data: bytes):
    [result] = AutomationMessageCheck(automation.Config()).run(
        make_ctx(NoDns(), mail_from="alice@example.com", message=data))
    return result


def names(data: bytes) -> list[str]:
    return [f.name for f in check(data).findings]


def b_word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


# ---- Subjects ------------------------------------------------------------------


@pytest.mark.parametrize("subject", [
    # English
    "Automatic reply: Your order 4711", "Auto-Reply: Your order", "Autoreply: x",
    "Auto Response: x", "Out of Office: Re: Your order", "Out of Office AutoReply: x",
    "Out of the office", "OUT OF OFFICE", "Out-of-office reply",
    "AUTO: Smith, John is out of the office. (returning 05/01/2010)",
    # German
    "Automatische Antwort: Ihre Bestellung", "Abwesenheitsnotiz", "Abwesenheitsnotiz: Ihre Anfrage",
    "Abwesend", "Abwesend: Ihre Anfrage",
    # French (with the French space before the colon)
    "Réponse automatique : votre commande", "Reponse automatique: x", "Absence",
    "Absent(e) du bureau : votre commande", "Absente du bureau", "Absence du bureau",
    # Japanese, as written and as full-width punctuation
    "自動応答: ご注文", "自動返信\uff1aお問い合わせ", "【自動返信】お問い合わせありがとうございます",
    "[自動応答] ご連絡", "不在", "不在のお知らせ", "【不在】", "不在通知",
    # Dutch, Scandinavian, Italian, Spanish (Discourse's list)
    "Automatisch antwoord: x", "Autosvar: x", "Automatisk svar: x", "Frånvaro",
    "Risposta Non al computer: x", "Fuori sede", "Respuesta automática: x",
])
def test_auto_reply_subjects(subject):
    assert autoreply_subject(subject) is not None


@pytest.mark.parametrize(("subject", "charset"), [
    ("Automatic reply: Your order", "utf-8"),
    ("Automatische Antwort: Ihre Bestellung für März", "iso-8859-1"),
    ("Réponse automatique : votre commande", "iso-8859-1"),
    ("自動応答: ご注文", "iso-2022-jp"),
    ("【自動返信】お問い合わせ", "iso-2022-jp"),
    ("不在のお知らせ", "shift_jis"),
    ("自動返信: ご注文", "utf-8"),
])
def test_encoded_auto_reply_subjects(subject, charset):
    assert autoreply_subject(b_word(subject, charset)) is not None
    q = "".join(f"={b:02X}" for b in subject.encode(charset if charset != "iso-2022-jp"
                                                      else "utf-8"))
    assert autoreply_subject(f"=?{charset if charset != 'iso-2022-jp' else 'utf-8'}?Q?{q}?=")


@pytest.mark.parametrize("subject", [
    # People writing about absence, replies, offices: anchored matching only.
    "Re: our absence policy", "Re: absence", "Absence policy for 2026", "Absences",
    "AW: Automatische Antwort: Ihre Bestellung", "Fwd: Out of Office: x",
    "Re: Abwesenheitsnotiz", "Your automatic reply setup", "Office hours", "Outlook tips",
    "Abwesenheit von Herrn Müller", "Auto: Reifenwechsel am Montag", "Autoreplyish",
    "Out of band", "不在票のご連絡", "Re: 自動応答について", "自動車の件",
    "[Ticket#4711] Your order", "", "   ",
])
def test_not_auto_reply_subjects(subject):
    assert autoreply_subject(subject) is None


def test_a_cut_subject_never_matches_as_a_whole():
    assert autoreply_subject("Absence") is not None
    assert autoreply_subject("Absence" + " " * SUBJECT_HEAD + "x") is None


def test_a_megabyte_subject_takes_linear_time():
    """Sender-controlled input stays linear: a 1 MB Subject, of encoded-words and
    of plain text, through the whole check. A guard, not a measurement."""
    shapes = ["=?utf-8?q?Automatic_reply?= ", "Automatic reply: ", "Absence ", "=?", "自動応答"]
    started = time.monotonic()
    for shape in shapes:
        subject = shape * (1_000_000 // len(shape))
        check(raw(subject=subject))
        check(raw(f"X-Auto-Response-Suppress: {subject}", subject=subject))
    assert time.monotonic() - started < 30


# ---- header fields -----------------------------------------------------------------


@pytest.mark.parametrize("field", [
    "Auto-Submitted: auto-replied", "Auto-Submitted: AUTO-REPLIED (zimbra; vacation)",
    "Auto-Submitted: auto-replied; owner-email=\"alice@example.com\"",
    "Precedence: auto_reply", "X-Autoreply: yes", "X-Autorespond: vacation",
    "X-Autoresponder: 1", "X-Apple-Action: vacation",
    "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent",
])
def test_auto_reply_fields(field):
    assert names(raw(field)) == ["auto.autoreply"]


def test_exchange_out_of_office_is_the_two_fields_together():
    """Zammad's rule and real Exchange replies: All plus Inbox-Rules-Loop."""
    both = raw("X-Auto-Response-Suppress: All", "X-MS-Exchange-Inbox-Rules-Loop: a@example.com")
    assert names(both) == ["auto.autoreply"]
    # A message an inbox rule forwarded carries Inbox-Rules-Loop alone: no sign.
    assert names(raw("X-MS-Exchange-Inbox-Rules-Loop: a@example.com")) == []
    # "All" alone: a notification (GitHub, GitLab, Zendesk), machine-made.
    assert names(raw("X-Auto-Response-Suppress: All")) == ["auto.machine_generated"]


@pytest.mark.parametrize("value", [
    "DR, RN, NRN, OOF, AutoReply",  # Outlook and Office 365 on mail people write
    "OOF, AutoReply", "RN, NRN", "OOF", "None", "",
])
def test_suppression_requests_short_of_all_are_no_sign(value):
    """[MS-OXCMAIL] §2.1.3.2.20: a request to responders, not a mark of automation."""
    assert names(raw(f"X-Auto-Response-Suppress: {value}")) == []


@pytest.mark.parametrize("field", [
    "X-Autoreply: no", "X-Autorespond: false", "X-Autoreply: 0",
    "X-MS-Exchange-Generated-Message-Source: Journal Agent",
    "Precedence: first-class", "X-Apple-Action: reply",
])
def test_fields_that_say_no(field):
    assert "auto.autoreply" not in names(raw(field))


@pytest.mark.parametrize("field", [
    "X-Loop: yes", "X-Loop: owner@bugs.example.org", "X-OTRS-Loop: yes",
    "X-OTOBO-Loop: true", "X-RT-Loop-Prevention: rt.example.org",
    "X-Zendesk-From-Account-Id: 68b8aed", "X-ServiceNow-Generated: true",
    "X-JIRA-FingerPrint: ba86a44d1de16baf461a884e98837e6f",
])
def test_other_help_desks_loop_markers(field):
    assert names(raw(field)) == ["auto.helpdesk"]


@pytest.mark.parametrize("field", ["X-OTRS-Loop: false", "X-OTRS-Loop: no",
                                   "X-Trustmilter-Loop: mx.example.org"])
def test_markers_that_are_no_foreign_loop(field):
    assert names(raw(field)) == []


def test_every_marker_read_is_a_foreign_loop_field():
    assert all(is_foreign_loop_field(name) for name in HELPDESK_FIELDS)
    assert not is_foreign_loop_field("X-Trustmilter-Loop")


def test_a_subject_alone_is_enough():
    result = check(raw(subject="=?ISO-2022-JP?B?GyRCPCtGMDF+RXobKEI=?=: ご注文"))
    assert [f.name for f in result.findings] == ["auto.autoreply"]
    assert "自動応答" in result.findings[0].detail


def test_a_report_is_never_an_automatic_reply():
    """Postfix puts Auto-Submitted: auto-replied on its DSNs: a bounce, machine-made."""
    dsn = raw("Auto-Submitted: auto-replied", "MIME-Version: 1.0",
              'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
              subject="Undelivered Mail Returned to Sender")
    assert names(dsn) == ["auto.bounce", "auto.machine_generated"]
    assert is_autoreply(Message(dsn)) == ()


def test_is_autoreply_says_why():
    message = Message(raw("Auto-Submitted: auto-replied", subject="Out of Office: x"))
    assert is_autoreply(message) == ("Auto-Submitted: auto-replied", "Subject 'Out of Office'")
    assert is_autoreply(Message(raw(subject="Re: absence"))) == ()


def test_a_person_writing_about_absence_passes():
    assert check(raw(subject="Re: Absence")).findings == ()
    assert check(raw(subject="=?utf-8?q?Re:_Abwesenheitsnotiz_f=C3=BCr_den_Urlaub?=")).findings == ()


# ---- configuration and policy ----------------------------------------------------------


@pytest.mark.parametrize("field", ["X-Loop", "x-rt-loop-prevention", "X-OTRS-Loop"])
def test_our_loop_marker_may_not_be_another_systems(field):
    with pytest.raises(ConfigError, match=re.escape("checks.loops.loop_header: expected a field name of our own")):
        parse_settings(f"checks:\n  loops:\n    loop_header: {field}\n")


def shipped_policy_without(rule: str):
    """The shipped policy.yaml, with `rule` switched off as an admin would."""
    text = SHIPPED.read_text(encoding="utf-8")
    start = text.index(f"  - name: {rule}\n")
    end = text.index("\n\n", start)
    return parse_settings(text[:start] + text[end + 2:], "policy.yaml").policy


@pytest.mark.parametrize(("rule", "field"), [
    ("auto-autoreply", "X-Autoreply: yes"),
    ("auto-autoreply", "Auto-Submitted: auto-replied"),
    ("auto-helpdesk", "X-OTRS-Loop: yes"),
])
def test_held_as_shipped_and_when_let_through_it_gets_the_suppression_fields(rule, field):
    """RFC 3834 §5: delivered anyway, it must not be answered automatically."""
    results = Results([check(raw(field))])
    shipped = evaluate(parse_settings(SHIPPED.read_text(encoding="utf-8")).policy, results)
    assert shipped.action is Action.QUARANTINE
    assert rule in [hit.rule for hit in shipped.hits]
    accepting = evaluate(shipped_policy_without(rule), results)
    assert accepting.action is Action.ACCEPT
    assert all(pair in accepting.headers for pair in SUPPRESS), accepting.headers


def test_learned_senders_pass_with_the_suppression_fields():
    policy = parse_settings(SHIPPED.read_text(encoding="utf-8")).policy
    learned = CheckResult("reputation", Outcome.PASS, "", (Finding("reputation.learned"),))
    verdict = evaluate(policy, Results([check(raw("X-Autoreply: yes")), learned]))
    assert verdict.action is not Action.QUARANTINE
    assert all(pair in verdict.headers for pair in SUPPRESS)


def test_the_rules_are_shipped_with_the_policy_defaults():
    rules = {rule.name: rule for rule in Policy().rules}
    for name, finding in (("auto-autoreply", "auto.autoreply"), ("auto-helpdesk", "auto.helpdesk")):
        assert rules[name].when == (finding,) and rules[name].action is Action.QUARANTINE
        assert rules[name].unless == ("reputation.learned", "allowlist.sender")
