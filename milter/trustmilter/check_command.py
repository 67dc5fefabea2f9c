"""``trustmilter check``: one message through the same transaction the milter runs.

It plays the MTA's side: MAIL FROM (with the client's address, verified
name, HELO and SASL login), one RCPT TO per recipient, then the message,
on the engine's `Transaction` (engine/transaction.py), so trusted
networks, the SASL bypass, the outbound checks on our own clients' mail,
per-recipient checks and early refusals behave exactly as inline. What
it had to assume (a sender or recipients not given) it says. The output
names the stage at which the verdict was given (mail, rcpt or eom) and
the reply the MTA would have sent.

State: by default a fresh in-memory store, as a milter that has never
seen the sender would judge the message (rate counts start at one, no
learned senders); ``--state none`` runs offline (rate and reputation
skipped). The daemon's own store is never written.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmilter import policy_search
from trustmilter.app import App
from trustmilter.authresults import build_header_value
from trustmilter.checks import StartupError
from trustmilter.checks.base import Direction
from trustmilter.command_support import CommandFailure, policy_from
from trustmilter.config.settings import Settings
from trustmilter.domains import DomainTools
from trustmilter.engine import Client, MessageOutcome, Refusal, Transaction, VerdictRecord
from trustmilter.lookup import Resolver
from trustmilter.lookup.fixture import Fixture, FixtureError, FixtureResolver, RecordingResolver
from trustmilter.lookup.resolver import build_resolver
from trustmilter.mail.addresses import AddressList, envelope_address
from trustmilter.model import Message
from trustmilter.pipeline import PipelineError
from trustmilter.state.memory import MemoryStore

EXIT_OK = 0


def add_parser(commands: Any) -> None:
    """The ``check`` subcommand's arguments."""
    check = commands.add_parser("check", help="judge one message as the milter would, inline")
    check.add_argument("message", help="the message (.eml), or - for standard input")
    check.add_argument("--ip", required=True, type=_ip, help="the SMTP client's IP address")
    check.add_argument("--client-name", help="the client's name as the MTA verified it")
    check.add_argument("--helo", help="the HELO/EHLO name the client gave")
    check.add_argument(
        "--mail-from",
        help="envelope sender; '' for the null sender "
        "(default: the Return-Path field, else the From address)",
    )
    check.add_argument(
        "--rcpt", action="append", default=[],
        help="envelope recipient, one RCPT TO each (repeat; default: the To and Cc addresses)",
    )
    check.add_argument("--auth", metavar="USER", help="the SASL login the client authenticated as")
    check.add_argument(
        "--state", choices=("memory", "none"), default="memory",
        help="rate counts and learned senders: a fresh in-memory store (default) or none",
    )
    check.add_argument("--policy", type=Path, help=f"policy.yaml ({policy_search.DEFAULT_HELP})")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    replay = check.add_mutually_exclusive_group()
    replay.add_argument("--record-dns", type=Path, metavar="FILE",
                        help="write every DNS answer seen to FILE (zone-style fixture)")
    replay.add_argument("--dns-fixture", type=Path, metavar="FILE",
                        help="answer DNS from FILE instead of the network")


@dataclass(frozen=True, slots=True)
class Step:
    """One SMTP step as the MTA saw it: what was sent and what it was answered."""

    command: str  # "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "end of message"
    answer: str  # "continue", or the reply ("550 5.7.1 ...", "451 4.3.2 ...")


@dataclass(frozen=True, slots=True)
class Envelope:
    """The envelope `check` used, and where each part came from."""

    sender: str
    sender_source: str  # "--mail-from", "Return-Path", "From" or "none"
    recipients: tuple[str, ...]
    recipients_source: str  # "--rcpt", "To/Cc" or "none"


def run(args: argparse.Namespace) -> int:
    settings = policy_from(args.policy)
    message = Message(_read_message(args.message))
    envelope = _envelope(args, message)
    domains = DomainTools()
    resolver = _resolver(args, settings, domains)
    try:
        app = App.build(
            settings, resolver=resolver, domains=domains,
            state=MemoryStore() if args.state == "memory" else None,
        )
    except (StartupError, PipelineError) as error:
        raise CommandFailure(str(error)) from error
    records: list[VerdictRecord] = []
    try:
        steps, outcome = _transact(app, args, envelope, message, records.append)
    finally:
        app.executor.shutdown(wait=False, cancel_futures=True)
    if isinstance(resolver, RecordingResolver):
        resolver.write(args.record_dns)
    # The decision that ended the message: the end of message, or the refusal that
    # stopped it (an early or per-recipient one: the last recorded).
    decision = outcome.record if outcome is not None else records[-1]
    report = Report(app, envelope, steps, decision, outcome, records)
    print(json.dumps(report.as_json()) if args.json else report.text())
    return EXIT_OK


def _transact(
    app: App, args: argparse.Namespace, envelope: Envelope, message: Message, observer: Any
) -> tuple[list[Step], MessageOutcome | None]:
    """Drive one transaction; the steps and the end-of-message outcome (None if
    no recipient was accepted, so the message was never sent)."""
    client = Client(ip=args.ip, hostname=args.client_name, helo=args.helo)
    tx = Transaction(app, client, envelope.sender, args.auth, observer=observer)
    steps = [Step(f"MAIL FROM:<{tx.mail_from}>", _answer(tx.opening()))]
    if steps[0].answer != "continue":
        return steps, None
    accepted = 0
    for recipient in envelope.recipients:
        refusal = tx.recipient(recipient)
        steps.append(Step(f"RCPT TO:<{recipient}>", _answer(refusal)))
        accepted += refusal is None
    if not accepted:
        return steps, None
    outcome = tx.finish(message)
    reply = f"{outcome.reply}" if outcome.reply else outcome.disposition.value
    steps.append(Step("end of message", reply))
    return steps, outcome


def _answer(refusal: Refusal | None) -> str:
    if refusal is None:
        return "continue"
    return str(refusal.reply) if refusal.reply else refusal.disposition.value


class Report:
    """What `check` prints, as text or JSON."""

    def __init__(self, app: App, envelope: Envelope, steps: list[Step],
                 decision: VerdictRecord, outcome: MessageOutcome | None,
                 records: list[VerdictRecord]) -> None:
        self.records = records
        self.app = app
        self.envelope = envelope
        self.steps = steps
        self.decision = decision
        self.outcome = outcome

    @property
    def authentication_results(self) -> str:
        """Our A-R for the results known at the decision (added only to delivered mail)."""
        return build_header_value(self.app.authserv_id, self.decision.results)

    def as_json(self) -> dict[str, Any]:
        verdict = self.decision.verdict
        outcome = self.outcome
        return {
            "action": verdict.action.smtp_action,
            "smtp_reply": str(verdict.reply) if verdict.reply else None,
            "stage": self.decision.stage,
            "client_kind": self.decision.kind.value,
            # inbound (judged), outbound (our own client's mail, outbound checks
            # ran), or null (our own client's mail, passed with no check).
            "direction": self.decision.direction.value if self.decision.direction else None,
            "mail_from": self.envelope.sender,
            "mail_from_source": self.envelope.sender_source,
            "rcpt": list(self.envelope.recipients),
            "rcpt_source": self.envelope.recipients_source,
            "steps": [{"command": s.command, "answer": s.answer} for s in self.steps],
            "authentication_results": self.authentication_results,
            "headers_added": [list(h) for h in outcome.add_headers] if outcome else [],
            "headers_removed": (
                [[h.name, h.value] for h in outcome.remove_headers] if outcome else []
            ),
            "reasons": list(verdict.reasons),
            "score": verdict.score,
            # Each decision's verdict line fields, as the milter logs them.
            "verdict_lines": [dict(record.pairs()) for record in self.records],
        }

    def text(self) -> str:
        """Each step and its answer, each check's result and why, score, verdict."""
        record = self.decision
        envelope = self.envelope
        outbound = ", outbound" if record.direction is Direction.OUTBOUND else ""
        lines = [
            f"client {record.client.ip} ({record.kind.value}{outbound})"
            f" helo {record.client.helo or '-'}"
        ]
        if envelope.sender_source not in ("--mail-from",):
            lines.append(f"assumed MAIL FROM:<{envelope.sender}> from {envelope.sender_source}"
                         " (give --mail-from to set it)")
        if envelope.recipients_source != "--rcpt":
            lines.append(f"assumed RCPT TO from {envelope.recipients_source}"
                         " (give --rcpt to set them)")
        lines.extend(f"{step.command} -> {step.answer}" for step in self.steps)
        for result in record.results.all():
            lines.append(
                f"  {result.check:<14} {result.outcome.value:<10} {result.reason}".rstrip()
            )
            lines.extend(
                f"  {'':<14} - {f.name}{': ' + f.detail if f.detail else ''}"
                for f in result.findings
            )
        verdict = record.verdict
        for hit in verdict.hits:
            effect = f"would have {hit.action.value}" if hit.shadow and hit.action else (
                hit.action.value if hit.action else f"{hit.score:+g} points")
            lines.append(f"rule {hit.rule}{' (shadow)' if hit.shadow else ''}: {effect}")
        lines.append(f"score {verdict.score:g}")
        reply = f" {verdict.reply}" if verdict.reply else ""
        lines.append(f"verdict {verdict.action.value}{reply} (at {record.stage})")
        if verdict.reasons:
            lines.append("reasons " + ", ".join(verdict.reasons))
        if self.outcome is not None:
            lines.extend(f"{name}: {value}" for name, value in self.outcome.add_headers)
            lines.extend(f"remove {h.name}: {h.value}" for h in self.outcome.remove_headers)
        return "\n".join(lines)


def _envelope(args: argparse.Namespace, message: Message) -> Envelope:
    """The envelope to send: the arguments, else what the message says, and from where."""
    if args.mail_from is not None:
        sender, sender_source = args.mail_from, "--mail-from"
    elif (return_path := message.header("Return-Path")) is not None:
        sender, sender_source = return_path, "Return-Path"
    elif message.from_mailboxes:
        sender, sender_source = message.from_mailboxes[0].address, "From"
    else:
        sender, sender_source = "", "none"
    if args.rcpt:
        recipients, recipients_source = tuple(args.rcpt), "--rcpt"
    else:
        found = _addresses(message.address_lists("To") + message.address_lists("Cc"))
        recipients, recipients_source = (found, "To/Cc") if found else ((), "none")
    if not recipients:
        raise CommandFailure("no recipient: give --rcpt (the message has no To or Cc address)")
    return Envelope(envelope_address(sender), sender_source, recipients, recipients_source)


def _addresses(lists: tuple[AddressList, ...]) -> tuple[str, ...]:
    """Each mailbox's address once, in order of appearance."""
    found = dict.fromkeys(mailbox.address for parsed in lists for mailbox in parsed.mailboxes)
    return tuple(found)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _read_message(source: str) -> bytes:
    try:
        if source == "-":
            return sys.stdin.buffer.read()
        return Path(source).read_bytes()
    except OSError as error:
        raise CommandFailure(f"{source}: cannot read message: {error.strerror}") from error


def _resolver(args: argparse.Namespace, settings: Settings, domains: DomainTools) -> Resolver:
    if args.dns_fixture is not None:
        try:
            return FixtureResolver(Fixture.load(args.dns_fixture))
        except FixtureError as error:
            raise CommandFailure(str(error)) from error
        except OSError as error:
            raise CommandFailure(f"{args.dns_fixture}: cannot read: {error.strerror}") from error
    resolver = build_resolver(settings.dns, domains=domains)
    return RecordingResolver(resolver) if args.record_dns is not None else resolver
