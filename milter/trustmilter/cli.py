"""The ``trustmilter`` command line.

``trustmilter check`` runs the transaction the milter runs on a message
from a file or standard input (check_command.py). ``trustmilter policy check|show``
validate and print the policy. ``trustmilter quarantine`` and
``trustmilter reputation`` review Postfix's hold queue and what releases
taught (quarantine/commands.py); ``explain-bounce`` reads a bounce and
``bounces`` lists the hard bounces the milter recorded (bounce/);
``doctor`` checks a sender's setup (doctor/). Without ``--policy`` every
command reads /etc/trustmilter/policy.yaml, else ./policy.yaml, else the
built-in defaults (policy_search.py). Exit status: 0 whatever
the verdict, 1 for unreadable input or a bad policy, 2 for usage errors;
each failure is one line on standard error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from trustmilter import __version__, policy_search
from trustmilter.bounce.commands import (
    add_bounces_parser,
    add_explain_parser,
    run_bounces,
    run_explain_bounce,
)
from trustmilter.check_command import add_parser as add_check_parser
from trustmilter.check_command import run as run_check
from trustmilter.command_support import CommandFailure, find_policy, load_policy, policy_from
from trustmilter.config.dump import settings_to_yaml
from trustmilter.doctor import add_parser as add_doctor_parser
from trustmilter.doctor import run_command as run_doctor
from trustmilter.quarantine.commands import (
    add_quarantine_parser,
    add_reputation_parser,
    run_quarantine,
    run_reputation,
)
from trustmilter.runfile import DaemonNote, describe_state, noted, runtime_directory

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustmilter", description="Decide how far to trust inbound mail."
    )
    parser.add_argument("--version", action="version", version=f"trustmilter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_check_parser(commands)
    for name, hidden in (("run", False), ("_serve", True)):
        daemon = commands.add_parser(
            name, help=argparse.SUPPRESS if hidden else "run the milter (foreground)"
        )
        daemon.add_argument("--policy", type=Path,
                            help=f"policy.yaml ({policy_search.DEFAULT_HELP})")
        daemon.add_argument(
            "--socket", help="unix:/path, inet:PORT@HOST or inet6:PORT@HOST (default: the policy's)"
        )
        daemon.add_argument(
            "--foreground-log", action="store_true", help="log to stderr instead of syslog"
        )

    policy = commands.add_parser("policy", help="validate or print a policy")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    policy_check = policy_commands.add_parser("check", help="validate a policy file")
    policy_check.add_argument("file", type=Path, nargs="?",
                              help="the policy file (default: /etc/trustmilter/policy.yaml, "
                              "else ./policy.yaml)")
    policy_show = policy_commands.add_parser(
        "show", help="print the effective policy, every default filled in"
    )
    policy_show.add_argument("--policy", type=Path,
                             help=f"policy.yaml ({policy_search.DEFAULT_HELP})")

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


def _policy(args: argparse.Namespace) -> int:
    if args.policy_command == "check":
        path = find_policy(args.file)
        if path is None:
            tried = ", ".join(str(p) for p in policy_search.search_path(Path.cwd()))
            raise CommandFailure(f"no policy file to check (none of {tried}); name one")
        policy_from(path)
        print(f"{path}: ok")
    else:
        loaded = load_policy(args.policy)
        print(f"policy: {loaded.source()}", file=sys.stderr)
        sys.stdout.write(settings_to_yaml(loaded.settings))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from trustmilter.daemon.supervisor import run

    # A bad policy stops here, in one line, before any process starts.
    loaded = load_policy(args.policy)
    # What the admin commands compare their own store with (runfile.py).
    note = DaemonNote(os.getpid(), str(loaded.path.absolute()) if loaded.path else None,
                      describe_state(loaded.settings.state))
    with noted(runtime_directory(os.environ), note):
        return run(loaded.path, args.socket, args.foreground_log)


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
    handlers = {"check": run_check, "policy": _policy, "run": _run, "_serve": _serve,
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
