"""Mail loops (SEED-RULES §5; RFC 5321 §6.3): support addresses, hop count, our marker."""

from __future__ import annotations

import pytest

from helpers import make_ctx
from trustmilter.checks import loops
from trustmilter.checks.loops import LoopMessageCheck, LoopRecipientCheck, LoopSenderCheck
from trustmilter.config.errors import InvalidField
from trustmilter.config.load import ConfigError, parse_settings
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import Outcome, Results
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


@pytest.mark.parametrize("sender", ["support@example.org", "<SUPPORT@example.ORG>", "help@example.org"])
def test_support_address_as_envelope_sender(sender):
    """SEED-RULES §5: a support address is never a user address (case-insensitive)."""
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


def test_support_sender_is_rejected_with_a_clear_reply():
    verdict = verdict_for(run(LoopSenderCheck, mail_from="support@example.org"))
    assert verdict.action is Action.REJECT
    assert verdict.reply == Reply(550, "5.7.1", "Mail loop refused: a support address never sends to us")
    assert [h.rule for h in verdict.hits] == ["loop-support-sender"]


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
    ("alice@example.com", "support@example.org"),  # a user writing to support: the point
    ("help@example.org", "bob@example.org"),  # support to a user: support_sender's business
    ("support@example.org", "support@example.org"),  # the same address: support_sender
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
