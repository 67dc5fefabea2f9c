"""Mail loops (RFC 5321 §6.3): support addresses both ways, hop count, our marker."""

from __future__ import annotations

import pytest

from helpers import make_ctx
from trustmilter.checks import loops
from trustmilter.checks.loops import (
    LoopMessageCheck,
    LoopNotificationCheck,
    LoopOutboundMessageCheck,
    LoopRecipientCheck,
    LoopSenderCheck,
)
from trustmilter.config.errors import InvalidField
from trustmilter.config.load import ConfigError, parse_settings
from trustmilter.mail.identity import Identities
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.verdict import Action, Reply

SUPPORT = loops.Config(support_addresses=("support@example.org", "Help@Example.org"),
                       marker_id="mx1.example.org")


class NoDns:
    """A resolver that fails the test if the check asks anything."""

    def query(self, name, rdtype):
        raise AssertionError(f"loops asked DNS for {name} {rdtype}")


def message(from_="Alice <alice@example.com>", received=2, extra=()):
    lines = [f"Received: from hop{i}.example.net by mx.example.org; Mon, 1 Dec 2025 10:00:0{i % 10} +0000"
             for i in range(received)]
    lines += [f"From: {from_}", "To: support@example.org", "Subject: help",
              "Date: Mon, 1 Dec 2025 10:00:00 +0000", "Message-ID: <1@example.com>", *extra]
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def run(check_class, config=SUPPORT, **facts):
    [result] = check_class(config).run(make_ctx(NoDns(), **facts))
    assert result.check == "loops" and result.method is None
    return result


def names(result):
    return [f.name for f in result.findings]


def verdict_for(*results, policy=None):
    return evaluate(policy or Policy(), Results(results))


# ---- MAIL FROM ---------------------------------------------------------------


@pytest.mark.parametrize("sender", ["support@example.org", "<SUPPORT@example.ORG>", "help@example.org",
                                    "support+id4711@example.org", "Help-Desk@example.org"])
def test_support_address_as_envelope_sender(sender):
    """A support address is never a user address (case and sub-address ignored)."""
    result = run(LoopSenderCheck, mail_from=sender)
    assert result.outcome is Outcome.FAIL
    assert names(result) == ["loop.support_sender"]


def test_ordinary_sender_passes():
    result = run(LoopSenderCheck, mail_from="alice@example.com")
    assert result.outcome is Outcome.PASS and result.findings == ()


def test_a_lookalike_is_not_a_support_address():
    assert run(LoopSenderCheck, mail_from="support@example.org.evil.test").findings == ()
    assert run(LoopSenderCheck, mail_from="xsupport@example.org").findings == ()


def test_skipped_without_support_addresses_or_for_the_null_sender():
    assert run(LoopSenderCheck, loops.Config(), mail_from="support@example.org").outcome is Outcome.SKIPPED
    assert run(LoopSenderCheck, mail_from="").outcome is Outcome.SKIPPED


AUTOMATED = CheckResult("automation", Outcome.FAIL, "",
                        (Finding("auto.machine_generated", "Auto-Submitted: auto-generated"),))
LEARNED = CheckResult("reputation", Outcome.PASS, "",
                      (Finding("reputation.learned", "", vouches_for=frozenset({
                          "auto.machine_generated", "loop.support_sender"})),))


def test_our_support_address_from_outside_is_no_loop_by_itself():
    """A plain message claiming our support address is judged as any other."""
    verdict = verdict_for(run(LoopSenderCheck, mail_from="support@example.org"))
    assert verdict.action is Action.ACCEPT and verdict.hits == ()


def test_our_support_address_from_outside_automated_is_held_as_a_suspected_loop():
    sender = run(LoopSenderCheck, mail_from="support@example.org")
    verdict = verdict_for(sender, AUTOMATED)
    assert verdict.action is Action.QUARANTINE
    assert "loop-support-sender" in [h.rule for h in verdict.hits]
    assert "loop-support-sender" in verdict.quarantine_reason
    # A release confirms it: learned, as any automated mail.
    assert verdict_for(sender, AUTOMATED, LEARNED).action is not Action.QUARANTINE


# ---- RCPT TO -------------------------------------------------------------------


def test_support_to_support():
    """One help desk writing to another: the pair is named in the finding."""
    result = run(LoopRecipientCheck, mail_from="help@example.org", rcpt_to=["support@example.org"])
    assert names(result) == ["loop.support_to_support"]
    assert "help@example.org -> support@example.org" in result.findings[0].detail
    verdict = verdict_for(result)
    assert verdict.action is Action.REJECT and verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.dsn) == (550, "5.7.1")


@pytest.mark.parametrize(("sender", "rcpt"), [
    ("support@example.org", "support@example.org"),  # to itself: the help desk answers itself
    ("support@example.org", "support+id4711@example.org"),  # a ticket's sub-address
    ("SUPPORT+x@example.org", "Help@example.org"),
])
def test_support_to_support_itself_and_sub_addresses(sender, rcpt):
    assert names(run(LoopRecipientCheck, mail_from=sender, rcpt_to=[rcpt])) == [
        "loop.support_to_support"]


def test_sub_addressed_entries_compare_by_their_base():
    config = loops.Config(support_addresses=("Support+Desk@example.org",))
    assert config.is_support("support@EXAMPLE.org")
    assert config.is_support("support+id4711@example.org")
    assert not config.is_support("supporter@example.org")
    # The policy's separators decide what a sub-address is.
    assert not config.is_support("support-x@example.org", Identities("+"))
    assert config.is_support("support-x@example.org", Identities("+-"))
    assert not config.is_support("")
    assert not config.is_support("support")


@pytest.mark.parametrize(("sender", "rcpt"), [
    ("alice@example.com", "support@example.org"),  # a user writing to support: the point
    ("help@example.org", "bob@example.org"),  # support to a user: no pair
])
def test_not_support_to_support(sender, rcpt):
    assert run(LoopRecipientCheck, mail_from=sender, rcpt_to=[rcpt]).findings == ()


def test_recipient_check_needs_a_recipient():
    assert run(LoopRecipientCheck, mail_from="help@example.org").outcome is Outcome.SKIPPED


# ---- the message -----------------------------------------------------------------


def test_clean_message_passes():
    result = run(LoopMessageCheck, message=message(), rcpt_to=["support@example.org"])
    assert result.outcome is Outcome.PASS and result.findings == ()


def test_support_address_in_from():
    result = run(LoopMessageCheck, message=message('"Our Help" <HELP@example.org>'),
                 rcpt_to=["support@example.org"])
    assert names(result) == ["loop.support_sender", "loop.support_to_support"]


def test_too_many_received():
    """RFC 5321 §6.3: 31 hops is a loop at max_received 30; 30 is not."""
    assert run(LoopMessageCheck, message=message(received=30)).findings == ()
    result = run(LoopMessageCheck, message=message(received=31))
    assert names(result) == ["loop.too_many_received"]
    assert "31 Received fields" in result.findings[0].detail
    verdict = verdict_for(result)
    assert verdict.action is Action.REJECT
    assert verdict.reply == Reply(554, "5.4.6", "Routing loop detected: too many hops")


def test_max_received_is_configurable():
    config = loops.Config(max_received=3)
    assert names(run(LoopMessageCheck, config, message=message(received=4))) == ["loop.too_many_received"]


def test_marker_with_our_id_is_a_loop():
    raw = message(extra=["X-Trustmilter-Loop:  MX1.example.org "])
    result = run(LoopMessageCheck, message=raw)
    assert names(result) == ["loop.marker_seen"]
    verdict = verdict_for(result)
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None and (verdict.reply.code, verdict.reply.dsn) == (554, "5.4.6")


def test_marker_of_another_site_or_without_our_id_is_not():
    raw = message(extra=["X-Trustmilter-Loop: mx.example.net"])
    assert run(LoopMessageCheck, message=raw).findings == ()
    ours = message(extra=["X-Trustmilter-Loop: mx1.example.org"])
    # Offline the id may be unknown: the marker is then not judged at all.
    assert run(LoopMessageCheck, loops.Config(), message=ours).findings == ()


def test_marker_id_is_filled_from_the_authserv_id_unless_set():
    assert loops.Config().with_marker_id("mx.example.org").marker_id == "mx.example.org"
    assert SUPPORT.with_marker_id("mx.example.org") is SUPPORT


def test_the_message_check_asks_for_our_marker_only_when_it_is_known_and_wanted():
    """The marker is written by the policy on suppressed mail; the check only asks."""
    config = loops.Config(loop_header="X-Loop", marker_id="desk.example.org")
    [request] = run(LoopMessageCheck, config, message=message()).headers
    assert (request.name, request.value, request.when) == (
        "X-Loop", "desk.example.org", "suppressed")
    assert run(LoopMessageCheck, loops.Config(), message=message()).headers == ()
    quiet = loops.Config(marker_id="desk.example.org", add_marker=False)
    assert run(LoopMessageCheck, quiet, message=message()).headers == ()


def test_marker_header_name_is_configurable():
    config = loops.Config(loop_header="X-Loop", marker_id="desk.example.org")
    raw = message(extra=["X-Loop: desk.example.org"])
    assert names(run(LoopMessageCheck, config, message=raw)) == ["loop.marker_seen"]


def test_no_message_yet_is_skipped():
    assert run(LoopMessageCheck).outcome is Outcome.SKIPPED


# ---- configuration -----------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"support_addresses": ("support",)},
    {"support_addresses": ("sup port@example.org",)},
    {"external_helpdesks": ("helpdesk",)},
    {"external_helpdesks": ("@",)},
    {"external_helpdesks": ("@exa mple.net",)},
    {"notification_headers": ("X Loop",)},
    {"loop_header": "X Loop"},
    {"marker_id": "has space"},
])
def test_bad_configuration_is_refused(kwargs):
    with pytest.raises(InvalidField):
        loops.Config(**kwargs)


def test_policy_yaml_section():
    policy = parse_settings(
        "checks:\n  loops:\n    support_addresses: [support@example.org]\n    max_received: 25\n")
    assert policy.checks.loops.support_addresses == ("support@example.org",)
    assert policy.checks.loops.max_received == 25
    with pytest.raises(ConfigError, match=r"<policy>:3: checks.loops.support_addresses\[0\]: expected an address"):
        parse_settings("checks:\n  loops:\n    support_addresses: [nobody]\n")


# ---- outbound: notifications to support addresses and help desks -----------------

DESKS = loops.Config(support_addresses=("support@example.org",),
                     external_helpdesks=("help@example.net", "@desk.example.net"),
                     marker_id="mx1.example.org")


@pytest.mark.parametrize(("sender", "why"), [
    ("", "the null sender"),
    ("support+id4711@example.org", "is a support address"),
    ("no-reply@example.org", "is no-reply style"),
    ("MAILER-DAEMON@example.org", "is no-reply style"),
])
def test_a_notification_by_its_envelope_is_refused_at_rcpt(sender, why):
    result = run(LoopNotificationCheck, DESKS, mail_from=sender,
                 rcpt_to=["Support+id99@example.org"])
    assert names(result) == ["loop.notification_to_support"]
    assert why in result.findings[0].detail
    verdict = verdict_for(result)
    assert verdict.action is Action.REJECT
    assert verdict.reply == Reply(
        550, "5.7.1", "Mail loop refused: notifications are not sent to a support address")


@pytest.mark.parametrize("rcpt", ["help@example.net", "HELP+ticket@example.net",
                                  "anyone@desk.example.net"])
def test_a_notification_to_an_external_help_desk(rcpt):
    result = run(LoopNotificationCheck, DESKS, mail_from="support@example.org", rcpt_to=[rcpt])
    assert names(result) == ["loop.notification_to_helpdesk"]
    verdict = verdict_for(result)
    assert verdict.reply is not None and verdict.reply.text.endswith("another help desk")


@pytest.mark.parametrize(("sender", "rcpt"), [
    ("colleague@example.org", "support@example.org"),  # a person: not by its envelope
    ("support@example.org", "customer@example.com"),  # our help desk at work
    ("", "customer@example.com"),
    ("support@example.org", "other@sub.desk.example.net"),  # "@domain" is that domain
])
def test_what_the_envelope_check_lets_through(sender, rcpt):
    result = run(LoopNotificationCheck, DESKS, mail_from=sender, rcpt_to=[rcpt])
    assert result.outcome is Outcome.PASS and result.findings == ()


def test_the_envelope_check_skips_with_nothing_to_guard():
    assert run(LoopNotificationCheck, loops.Config(), mail_from="",
               rcpt_to=["support@example.org"]).outcome is Outcome.SKIPPED
    assert run(LoopNotificationCheck, DESKS, mail_from="").outcome is Outcome.SKIPPED
    helpdesks_only = loops.Config(external_helpdesks=("@desk.example.net",))
    assert names(run(LoopNotificationCheck, helpdesks_only, mail_from="",
                     rcpt_to=["x@desk.example.net"])) == ["loop.notification_to_helpdesk"]


@pytest.mark.parametrize(("extra", "from_", "why"), [
    (["Auto-Submitted: auto-generated"], "Agent <agent@example.org>", "Auto-Submitted"),
    (["Auto-Submitted: auto-replied (vacation)"], "Agent <agent@example.org>", "auto-replied"),
    (["Precedence: auto_reply"], "Agent <agent@example.org>", "Precedence"),
    (["X-Autoreply: yes"], "Agent <agent@example.org>", "X-Autoreply"),
    (["X-Loop: helpdesk"], "Agent <agent@example.org>", "X-Loop present"),
    (["RT-Loop-Prevention: desk"], "Agent <agent@example.org>", "RT-Loop-Prevention"),
    (["X-Trustmilter-Loop: mx1.example.org"], "Agent <agent@example.org>", "loop marker"),
    ([], "No Reply <noreply@example.org>", "no-reply style"),
])
def test_a_notification_by_its_header_is_refused_at_end_of_message(extra, from_, why):
    result = run(LoopOutboundMessageCheck, DESKS, mail_from="agent@example.org",
                 rcpt_to=["support@example.org", "customer@example.com"],
                 message=message(from_, received=0, extra=extra))
    assert names(result) == ["loop.notification_to_support"]
    assert why in result.findings[0].detail
    assert verdict_for(result).action is Action.REJECT


def test_a_colleague_writing_by_hand_is_no_notification():
    for extra in ([], ["Auto-Submitted: no"], ["Precedence: first-class"]):
        result = run(LoopOutboundMessageCheck, DESKS, mail_from="colleague@example.org",
                     rcpt_to=["support@example.org", "help@example.net"],
                     message=message("Colleague <colleague@example.org>", received=0,
                                     extra=extra))
        assert result.outcome is Outcome.PASS and result.findings == (), extra
        assert verdict_for(result).action is Action.ACCEPT


def test_our_support_address_in_from_writing_to_a_support_address_outbound():
    result = run(LoopOutboundMessageCheck, DESKS, mail_from="bounces@example.org",
                 rcpt_to=["support+id4711@example.org"],
                 message=message("Support <support@example.org>", received=0))
    assert names(result) == ["loop.support_to_support", "loop.notification_to_support"]
    verdict = verdict_for(result)
    assert verdict.reply is not None and verdict.reply.text.endswith(
        "support address to support address")


def test_the_outbound_message_check_skips_without_a_message_or_anything_to_guard():
    assert run(LoopOutboundMessageCheck, DESKS, mail_from="").outcome is Outcome.SKIPPED
    assert run(LoopOutboundMessageCheck, loops.Config(), mail_from="",
               message=message()).outcome is Outcome.SKIPPED


def test_the_checks_declare_their_directions():
    assert {c.spec.name: c.spec.direction for c in (
        LoopSenderCheck, LoopMessageCheck, LoopRecipientCheck, LoopNotificationCheck,
        LoopOutboundMessageCheck)} == {
        "loops.envelope": "inbound", "loops.message": "inbound", "loops.rcpt": "both",
        "loops.notification": "outbound", "loops.outbound": "outbound"}


def test_odd_headers_do_not_raise():
    raw = (b"From: =?x?q?\xff?= <\xff@>, support@example.org\r\nAuto-Submitted:\r\n"
           b"Precedence: (c) ((bulk)\r\nX-Loop\r\n\r\nbody")
    result = run(LoopOutboundMessageCheck, DESKS, mail_from="\udcff",
                 rcpt_to=["support@example.org", "@", ""], message=raw)
    assert result.outcome is Outcome.FAIL


def test_policy_yaml_external_helpdesks():
    policy = parse_settings("checks:\n  loops:\n    external_helpdesks: [a@example.net, '@example.com']\n")
    assert policy.checks.loops.external_helpdesks == ("a@example.net", "@example.com")
    with pytest.raises(ConfigError, match=r"external_helpdesks\[0\]"):
        parse_settings("checks:\n  loops:\n    external_helpdesks: [nobody]\n")


def test_many_sub_addressed_authors_and_recipients_stay_cheap():
    """Sender-controlled: 5,000 From addresses (each a distinct sub-address of a
    support address) and 1,000 support recipients give one pair per configured
    address, not one per combination."""
    import time

    authors = ", ".join(f"support+{n}@example.org" for n in range(5000))
    raw = message(authors, received=0, extra=["Auto-Submitted: auto-generated"] * 1000)
    rcpts = [f"support+r{n}@example.org" for n in range(1000)]
    started = time.process_time()
    inbound = run(LoopMessageCheck, DESKS, message=raw, rcpt_to=rcpts)
    outbound = run(LoopOutboundMessageCheck, DESKS, mail_from="x@example.org",
                   rcpt_to=rcpts, message=raw)
    assert time.process_time() - started < 2.0
    assert names(inbound) == ["loop.support_sender", "loop.support_to_support"]
    assert names(outbound).count("loop.support_to_support") == 1
    assert names(outbound).count("loop.notification_to_support") == 1000
