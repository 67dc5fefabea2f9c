"""The outbound path: our own clients' mail runs the checks made for outbound mail.

Mail from trusted networks, local submission and SASL users is not judged
(no trust checks, no Authentication-Results verdict), but a check whose
spec says ``direction="outbound"`` (or ``"both"``) runs on it at its
stage; the policy evaluates what it reports with the same rules (a rule
refuses at RCPT TO or at end of message), its header requests go through
the one header assembler and its state effects are applied after the
verdict. The checks here are made for the test: an outbound check at RCPT
and one at end of message, each reporting what the test asks of it,
added to the App's real pipeline. The real DNS test server stands behind
the resolver, and asserts that no inbound check asked anything.
"""

from __future__ import annotations

import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest

from keys import message
from trustmilter.authresults import parse_header_value
from trustmilter.checks import all_check_names
from trustmilter.checks.base import BaseCheck, CheckContext, CheckDirection, CheckSpec, Stage
from trustmilter.checks.registry import attached_check_names
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.daemon.verdictlog import format_verdict_line, parse_verdict_line
from trustmilter.engine import Client, ClientKind, Disposition, Transaction, VerdictRecord
from trustmilter.model import Message
from trustmilter.pipeline import Pipeline
from trustmilter.results import CheckResult, Finding, HeaderRequest, Outcome
from trustmilter.state.base import HardBounce
from trustmilter.state.effects import RecordHardBounces
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

LOCAL = Client(ipaddress.ip_address("127.0.0.1"), None, "localhost")
NO_ADDRESS = Client(None, None, None)
SASL = Client(ipaddress.ip_address("203.0.113.5"), None, "laptop.example.net")
STRANGER = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")
# A policy rule on a signal of the catalogue: the fake check reports it.
HOLD_BULK = ("rules:\n  - {name: hold-outbound-bulk, when: [auto.bulk], action: quarantine}\n"
             "  - {name: refuse-pair, when: [loop.support_to_support], action: reject,"
             " reply: {code: 550, dsn: 5.7.1, text: Not to that address}}\n")


@dataclass(frozen=True)
class Asked:
    """What the fake checks report, and what they saw (appended by the checks)."""

    refuse_rcpt: str = "refuse@example.org"  # this recipient gets a refusing finding
    bulk: bool = False  # end of message: report auto.bulk
    header: tuple[str, str] | None = None  # end of message: ask for this header
    bounce: str = ""  # end of message: ask to remember this recipient as a hard bounce
    skipped: bool = False  # report only "skipped"


class OutboundRcptCheck(BaseCheck[Asked]):
    spec: ClassVar[CheckSpec] = CheckSpec(
        "test.outbound_rcpt", result="test", stage=Stage.RCPT, waits_on="cpu",
        findings={"loop.support_to_support": "the test's refusing finding"},
        direction="outbound",
    )
    seen: ClassVar[list[CheckContext]] = []

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        type(self).seen.append(ctx)
        if self.config.skipped:
            return [CheckResult("test", Outcome.SKIPPED, "nothing to do")]
        if ctx.envelope.rcpt_to == (self.config.refuse_rcpt,):
            finding = Finding("loop.support_to_support", "asked to refuse")
            return [CheckResult("test", Outcome.FAIL, "refuse", (finding,))]
        return [CheckResult("test", Outcome.PASS, "fine")]


class OutboundMessageCheck(BaseCheck[Asked]):
    spec: ClassVar[CheckSpec] = CheckSpec(
        "test.outbound_message", result="test", stage=Stage.DATA, waits_on="cpu",
        findings={"auto.bulk": "the test's holding finding"}, direction="outbound",
    )
    seen: ClassVar[list[CheckContext]] = []

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        type(self).seen.append(ctx)
        config = self.config
        if config.skipped:
            return [CheckResult("test", Outcome.SKIPPED, "nothing to do")]
        findings = (Finding("auto.bulk", "asked to hold"),) if config.bulk else ()
        headers = (HeaderRequest(*config.header),) if config.header else ()
        now = time.time()
        effects = (RecordHardBounces((HardBounce(
            config.bounce, "5.1.1", "user unknown", "", "", "", "", "", now, now, now + 3600),)),
        ) if config.bounce else ()
        return [CheckResult("test", Outcome.FAIL if findings else Outcome.PASS, "asked",
                            findings, headers=headers, effects=effects)]


def direction_check(direction: CheckDirection) -> BaseCheck[Asked]:
    """A check at end of message for mail going `direction`, reporting its own name."""

    class Marked(BaseCheck[Asked]):
        spec: ClassVar[CheckSpec] = CheckSpec(
            f"test.{direction}", result="test", stage=Stage.DATA, waits_on="cpu",
            direction=direction,
        )

        def run(self, ctx: CheckContext) -> list[CheckResult]:
            return [CheckResult("test", Outcome.PASS, direction)]

    return Marked(Asked())


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as executor:
        yield executor


@pytest.fixture(autouse=True)
def _forget_what_was_seen():
    OutboundRcptCheck.seen.clear()
    OutboundMessageCheck.seen.clear()


def make_app(dns_server, pool, asked: Asked = Asked(), extra: str = HOLD_BULK, checks=None):
    settings = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        + extra,
        "test-policy.yaml",
    )
    store = MemoryStore()
    app = build_app(settings, pool, state=store)
    added = checks if checks is not None else (OutboundRcptCheck(asked),
                                               OutboundMessageCheck(asked))
    pipeline = Pipeline.build((*app.pipeline.checks, *added),
                              all_check_names() | attached_check_names())
    return replace(app, pipeline=pipeline), store


def transact(app, client, rcpts, raw=None, sender="agent@example.org", auth=None):
    records: list[VerdictRecord] = []
    tx = Transaction(app, client, sender, auth, observer=records.append)
    answers = [tx.opening(), *(tx.recipient(r) for r in rcpts)]
    outcome = None
    if any(a is None for a in answers[1:]):
        outcome = tx.finish(Message(raw if raw is not None else message()), "QID1")
    return tx, answers, outcome, records


def line(record: VerdictRecord) -> dict[str, str]:
    return parse_verdict_line(format_verdict_line(record.queue_id, record.pairs()))[1]


def test_an_outbound_finding_is_evaluated_its_header_added_and_its_effect_applied(
        dns_server, pool):
    dns_server.load("")  # any query finds nothing: none must be needed
    asked = Asked(bulk=True, header=("X-Outbound-Test", "stamped"), bounce="gone@example.net")
    app, store = make_app(dns_server, pool, asked)
    tx, answers, outcome, records = transact(app, LOCAL, ["customer@example.net"])
    assert tx.kind is ClientKind.TRUSTED and answers == [None, None]
    # Evaluated with the same rules: the policy's rule holds it.
    assert outcome.disposition is Disposition.QUARANTINE
    assert "hold-outbound-bulk" in outcome.quarantine_reason
    # Requested through the one header assembler; no Authentication-Results verdict.
    assert ("X-Outbound-Test", "stamped") in outcome.add_headers
    assert not any(name == "Authentication-Results" for name, _ in outcome.add_headers)
    # Applied after the verdict, as for inbound mail.
    assert [b.recipient for b in store.hard_bounces(time.time())] == ["gone@example.net"]
    [record] = records
    fields = line(record)
    assert fields["direction"] == "outbound" and fields["client_kind"] == "trusted"
    assert fields["action"] == "quarantine" and fields["rules"] == "hold-outbound-bulk"
    assert fields["test"] == "pass,fail" and fields["findings"] == "auto.bulk"
    # No inbound check ran: no DNS, no trust results (the shipped loop checks for
    # outbound mail skip: this policy names no support address).
    assert dns_server.queries == []
    assert set(record.results) == {"test", "loops"}
    assert {r.outcome for r in record.results["loops"]} == {Outcome.SKIPPED}


def test_a_rule_refuses_outbound_mail_at_rcpt_for_that_recipient_alone(dns_server, pool):
    dns_server.load("")
    app, _ = make_app(dns_server, pool)
    tx, answers, outcome, records = transact(
        app, SASL, ["refuse@example.org", "customer@example.net"], auth="agent")
    assert tx.kind is ClientKind.AUTHENTICATED
    refused = answers[1]
    assert refused is not None and refused.disposition is Disposition.REJECT
    assert (refused.reply.code, refused.reply.dsn) == (550, "5.7.1")
    assert answers[2] is None and outcome.disposition is Disposition.ACCEPT
    at_rcpt, at_eom = records
    assert (at_rcpt.stage, at_rcpt.rcpts) == ("rcpt", ("refuse@example.org",))
    assert line(at_rcpt)["direction"] == "outbound"
    assert at_eom.rcpts == ("customer@example.net",)
    # The SASL identity is recorded (RFC 8601 §2.7.4), and nothing else.
    [value] = [v for name, v in outcome.add_headers if name == "Authentication-Results"]
    assert [(r.method, r.result) for r in parse_header_value(value).results] == [("auth", "pass")]
    # The outbound checks saw our own client and its login.
    seen = OutboundRcptCheck.seen[0].connection
    assert (str(seen.ip), seen.authenticated_as) == ("203.0.113.5", "agent")
    assert dns_server.queries == []


def test_a_refusal_at_end_of_message_applies_no_effect(dns_server, pool):
    dns_server.load("")
    asked = Asked(bulk=True, bounce="gone@example.net")
    refuse_all = ("rules:\n  - {name: refuse-bulk, when: [auto.bulk], action: reject,"
                  " reply: {code: 550, dsn: 5.7.1, text: Not sent}}\n")
    app, store = make_app(dns_server, pool, asked, refuse_all,
                          checks=(OutboundMessageCheck(asked),))
    _, answers, outcome, records = transact(app, LOCAL, ["customer@example.net"])
    assert answers == [None, None]
    assert outcome.disposition is Disposition.REJECT and outcome.reply.dsn == "5.7.1"
    assert store.hard_bounces(time.time()) == []
    assert line(records[-1])["stage"] == "eom"


def test_local_submission_without_an_address_is_seen_as_postfix_shows_it(dns_server, pool):
    dns_server.load("")
    app, _ = make_app(dns_server, pool, Asked(header=("X-Outbound-Test", "1")))
    tx, _, outcome, records = transact(app, NO_ADDRESS, ["customer@example.net"])
    assert tx.kind is ClientKind.TRUSTED
    assert ("X-Outbound-Test", "1") in outcome.add_headers
    seen = OutboundMessageCheck.seen[0].connection
    assert (str(seen.ip), seen.hostname) == ("127.0.0.1", "localhost")
    assert line(records[0])["client"] == "local"


def test_the_outbound_checks_read_the_header_of_our_own_mail(dns_server, pool):
    """The adapter hands our own clients' header only; the checks get what it hands."""
    dns_server.load("")
    app, _ = make_app(dns_server, pool)
    raw = message(subject="Ticket [#4711] updated")
    header_only = Message(raw).header_block + b"\r\n\r\n"
    records: list[VerdictRecord] = []
    tx = Transaction(app, LOCAL, "support@example.org", observer=records.append)
    assert tx.opening() is None and tx.recipient("customer@example.net") is None
    tx.finish(Message(header_only))
    [ctx] = OutboundMessageCheck.seen
    assert ctx.message.header("Subject") == "Ticket [#4711] updated"
    assert ctx.envelope.rcpt_to == ("customer@example.net",)


def test_with_outbound_checks_off_our_own_mail_is_passed_as_before(dns_server, pool):
    dns_server.load("")
    asked = Asked(bulk=True, bounce="gone@example.net")
    app, store = make_app(dns_server, pool, asked, HOLD_BULK + "milter: {outbound_checks: false}\n")
    _, answers, outcome, records = transact(app, LOCAL, ["refuse@example.org"])
    assert answers == [None, None] and outcome.disposition is Disposition.ACCEPT
    assert OutboundRcptCheck.seen == [] and OutboundMessageCheck.seen == []
    assert store.hard_bounces(time.time()) == []
    [record] = records
    assert "direction" not in line(record) and record.verdict.reasons == ("client.trusted",)


def test_outbound_checks_that_only_skip_leave_the_line_as_it_was(dns_server, pool):
    """Nothing reported: passed and logged exactly as with outbound checks off."""
    dns_server.load("")
    app, _ = make_app(dns_server, pool, Asked(skipped=True))
    off, _ = make_app(dns_server, pool, Asked(skipped=True),
                      HOLD_BULK + "milter: {outbound_checks: false}\n")
    lines = []
    for each in (app, off):
        _, _, outcome, records = transact(each, LOCAL, ["customer@example.net"])
        assert outcome.disposition is Disposition.ACCEPT and outcome.add_headers == ()
        fields = line(records[0])
        fields.pop("ms")
        lines.append(fields)
    assert OutboundMessageCheck.seen, "the outbound check ran"
    assert lines[0] == lines[1] and "direction" not in lines[0]


@pytest.mark.parametrize(("client", "runs"), [
    (LOCAL, {"outbound", "both"}),
    (STRANGER, {"inbound", "both"}),
])
def test_each_check_runs_on_the_mail_its_spec_names(dns_server, pool, client, runs):
    dns_server.load(GOOD_SENDER)
    checks = tuple(direction_check(d) for d in ("inbound", "outbound", "both"))
    app, _ = make_app(dns_server, pool, extra="", checks=checks)
    _, _, _, records = transact(app, client, ["customer@example.net"],
                                sender="alice@example.com")
    assert records[-1].stage == "eom"
    ran = {r.reason for r in records[-1].results.get("test", ())}
    assert ran == runs
    if client is LOCAL:
        assert line(records[-1])["direction"] == "outbound"
    else:
        assert "direction" not in line(records[-1])


def test_the_pipeline_picks_the_checks_by_direction():
    from trustmilter.checks.base import Direction

    checks = tuple(direction_check(d) for d in ("inbound", "outbound", "both"))
    pipeline = Pipeline.build(checks)
    names = {d: [c.name for c in pipeline.for_stages((Stage.DATA,), d)] for d in Direction}
    assert names == {Direction.INBOUND: ["test.inbound", "test.both"],
                     Direction.OUTBOUND: ["test.outbound", "test.both"]}
    assert [c.name for c in pipeline.for_stages((Stage.DATA,))] == ["test.inbound", "test.both"]
