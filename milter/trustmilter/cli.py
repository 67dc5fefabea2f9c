"""The ``trustmilter`` command line.

``trustmilter check`` runs the same App and pipeline as the milter on a
message from a file or standard input. ``trustmilter policy check|show``
validate and print the policy. ``trustmilter quarantine`` and
``trustmilter reputation`` review Postfix's hold queue and what releases
taught (quarantine/commands.py); ``explain-bounce`` reads a bounce and
``bounces`` lists the hard bounces the milter recorded (bounce/);
``doctor`` checks a sender's setup (doctor/). Exit status: 0 whatever
the verdict, 1 for unreadable input or a bad policy, 2 for usage errors;
each failure is one line on standard error.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trustmilter import __version__
from trustmilter.app import App
from trustmilter.bounce.commands import (
    add_bounces_parser,
    add_explain_parser,
    run_bounces,
    run_explain_bounce,
)
from trustmilter.checks import StartupError
from trustmilter.command_support import CommandFailure, policy_from
from trustmilter.doctor import add_parser as add_doctor_parser
from trustmilter.doctor import run_command as run_doctor
from trustmilter.domains import DomainTools
from trustmilter.evaluation import Evaluation, evaluate_message
from trustmilter.lookup import Resolver
from trustmilter.lookup.fixture import Fixture, FixtureError, FixtureResolver, RecordingResolver
from trustmilter.lookup.resolver import build_resolver
from trustmilter.model import Connection, Envelope, Facts, Message
from trustmilter.pipeline import PipelineError
from trustmilter.policy.dump import policy_to_yaml
from trustmilter.policy.model import Policy
from trustmilter.quarantine.commands import (
    add_quarantine_parser,
    add_reputation_parser,
    run_quarantine,
    run_reputation,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustmilter", description="Decide how far to trust inbound mail."
    )
    parser.add_argument("--version", action="version", version=f"trustmilter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="evaluate one message offline, as the milter would")
    check.add_argument("message", help="the message (.eml), or - for standard input")
    check.add_argument("--ip", required=True, type=_ip, help="the SMTP client's IP address")
    check.add_argument("--helo", help="the HELO/EHLO name the client gave")
    check.add_argument(
        "--mail-from",
        help="envelope sender; '' for the null sender (default: the Return-Path header)",
    )
    check.add_argument("--rcpt", action="append", default=[], help="envelope recipient (repeat)")
    check.add_argument("--policy", type=Path, help="policy.yaml (default: built-in defaults)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    replay = check.add_mutually_exclusive_group()
    replay.add_argument("--record-dns", type=Path, metavar="FILE",
                        help="write every DNS answer seen to FILE (zone-style fixture)")
    replay.add_argument("--dns-fixture", type=Path, metavar="FILE",
                        help="answer DNS from FILE instead of the network")

    for name, hidden in (("run", False), ("_serve", True)):
        daemon = commands.add_parser(
            name, help=argparse.SUPPRESS if hidden else "run the milter (foreground)"
        )
        daemon.add_argument("--policy", type=Path, help="policy.yaml (default: built-in defaults)")
        daemon.add_argument(
            "--socket", help="unix:/path, inet:PORT@HOST or inet6:PORT@HOST (default: the policy's)"
        )
        daemon.add_argument(
            "--foreground-log", action="store_true", help="log to stderr instead of syslog"
        )

    policy = commands.add_parser("policy", help="validate or print a policy")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    policy_check = policy_commands.add_parser("check", help="validate a policy file")
    policy_check.add_argument("file", type=Path)
    policy_show = policy_commands.add_parser(
        "show", help="print the effective policy, every default filled in"
    )
    policy_show.add_argument("--policy", type=Path, help="policy.yaml (default: built-in defaults)")

    bench = commands.add_parser(
        "bench", help="measure the daemon under load beside a null milter (milter protocol)"
    )
    from trustmilter.bench.options import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    add_quarantine_parser(commands)
    add_reputation_parser(commands)
    add_doctor_parser(commands)
    add_explain_parser(commands)
    add_bounces_parser(commands)
    return parser


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


def _facts(args: argparse.Namespace, raw: bytes) -> Facts:
    message = Message(raw)
    mail_from = args.mail_from
    if mail_from is None:
        return_path = message.header("Return-Path")
        mail_from = return_path.strip().strip("<>") if return_path else ""
    return Facts(
        connection=Connection(ip=args.ip, helo=args.helo),
        envelope=Envelope(mail_from=mail_from.strip("<>"), rcpt_to=tuple(args.rcpt)),
        message=message,
    )


def _resolver(args: argparse.Namespace, policy: Policy, domains: DomainTools) -> Resolver:
    if args.dns_fixture is not None:
        try:
            return FixtureResolver(Fixture.load(args.dns_fixture))
        except FixtureError as error:
            raise CommandFailure(str(error)) from error
        except OSError as error:
            raise CommandFailure(f"{args.dns_fixture}: cannot read: {error.strerror}") from error
    resolver = build_resolver(policy.dns, domains=domains)
    return RecordingResolver(resolver) if args.record_dns is not None else resolver


def _as_json(evaluation: Evaluation) -> dict[str, Any]:
    verdict = evaluation.verdict
    return {
        "action": verdict.action.smtp_action,
        "smtp_reply": str(verdict.reply) if verdict.reply else None,
        "authentication_results": evaluation.authentication_results,
        "headers_added": [list(h) for h in evaluation.headers_added],
        "headers_removed": [[h.name, h.value] for h in evaluation.headers_removed],
        "reasons": list(verdict.reasons),
        "score": verdict.score,
    }


def _report(evaluation: Evaluation, facts: Facts) -> str:
    """The human-readable report: each check, its result and why, score, verdict."""
    lines = [
        f"client {facts.connection.ip} helo {facts.connection.helo or '-'} "
        f"mail from <{facts.envelope.mail_from}>"
    ]
    for result in evaluation.results.all():
        lines.append(f"  {result.check:<14} {result.outcome.value:<10} {result.reason}".rstrip())
        lines.extend(
            f"  {'':<14} - {f.name}{': ' + f.detail if f.detail else ''}" for f in result.findings
        )
    verdict = evaluation.verdict
    for hit in verdict.hits:
        effect = f"would have {hit.action.value}" if hit.shadow and hit.action else (
            hit.action.value if hit.action else f"{hit.score:+g} points")
        lines.append(f"rule {hit.rule}{' (shadow)' if hit.shadow else ''}: {effect}")
    lines.append(f"score {verdict.score:g}")
    reply = f" {verdict.reply}" if verdict.reply else ""
    lines.append(f"verdict {verdict.action.value}{reply}")
    if verdict.reasons:
        lines.append("reasons " + ", ".join(verdict.reasons))
    lines.extend(f"{name}: {value}" for name, value in evaluation.headers_added)
    lines.extend(f"remove {h.name}: {h.value}" for h in evaluation.headers_removed)
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    policy = policy_from(args.policy)
    facts = _facts(args, _read_message(args.message))
    domains = DomainTools()
    resolver = _resolver(args, policy, domains)
    try:
        app = App.build(policy, resolver=resolver, domains=domains)
    except (StartupError, PipelineError) as error:
        raise CommandFailure(str(error)) from error
    try:
        evaluation = evaluate_message(app, facts)
    finally:
        app.executor.shutdown(wait=False, cancel_futures=True)
    if isinstance(resolver, RecordingResolver):
        resolver.write(args.record_dns)
    if args.json:
        print(json.dumps(_as_json(evaluation)))
    else:
        print(_report(evaluation, facts))
    return EXIT_OK


def _policy(args: argparse.Namespace) -> int:
    if args.policy_command == "check":
        policy_from(args.file)
        print(f"{args.file}: ok")
    else:
        sys.stdout.write(policy_to_yaml(policy_from(args.policy)))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from trustmilter.daemon.supervisor import run

    if args.policy is not None:
        policy_from(args.policy)  # a bad policy stops here, in one line, before any process starts
    return run(args.policy, args.socket, args.foreground_log)


def _serve(args: argparse.Namespace) -> int:
    from trustmilter.daemon.serve import ServeError, serve

    try:
        return serve(args.policy, args.socket, args.foreground_log)
    except ServeError as error:
        raise CommandFailure(str(error)) from error


def _bench(args: argparse.Namespace) -> int:
    # Imported here: the benchmark needs the `bench` extra (miltertest), the rest does not.
    from trustmilter.bench.run import main as bench_main

    return bench_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="trustmilter: %(levelname)s %(message)s")
    handlers = {"check": _check, "policy": _policy, "run": _run, "_serve": _serve,
                "bench": _bench, "quarantine": run_quarantine, "reputation": run_reputation,
                "explain-bounce": run_explain_bounce, "bounces": run_bounces,
                "doctor": run_doctor}
    try:
        return handlers[args.command](args)
    except CommandFailure as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
