"""The ``trustmilter`` command line.

``trustmilter check`` runs the transaction the milter runs on a message
from a file or standard input (check_command.py). ``trustmilter policy check|show``
validate and print the policy. ``trustmilter quarantine`` and
``trustmilter reputation`` review Postfix's hold queue and what releases
and deletions as spam taught (quarantine/commands.py); ``review`` serves the
help desk's review page and manages its accounts (review/commands.py);
``explain-bounce`` reads a bounce and
``bounces`` lists the hard bounces the milter recorded (bounce/);
``doctor`` checks a sender's setup (doctor/). Without ``--policy`` every
command reads /etc/trustmilter/policy.yaml, else ./policy.yaml, else the
built-in defaults (policy_search.py). Exit status: 0 whatever
the verdict, 1 for unreadable input or a bad policy, 2 for usage errors;
each failure is one line on standard error. ``trustmilter run`` has its
own (RUN_EXIT_STATUS): 2 for a configuration that cannot work, 1 for a
failure at run time. Output to a reader that went away (``trustmilter
check ... | head -1``) ends the command quietly with status 141, as a Unix
tool killed by SIGPIPE reports in the shell.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
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
from trustmilter.config.settings import Settings
from trustmilter.doctor import add_parser as add_doctor_parser
from trustmilter.doctor import run_command as run_doctor
from trustmilter.quarantine.commands import (
    add_quarantine_parser,
    add_reputation_parser,
    run_quarantine,
    run_reputation,
)
from trustmilter.review.commands import add_review_parser, run_review
from trustmilter.runfile import DaemonNote, describe_state, noted, runtime_directory
from trustmilter.startup import EXIT_CONFIG, EXIT_RUNTIME

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# What a shell reports for a process that SIGPIPE ended: 128 + the signal.
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE

RUN_DESCRIPTION = """\
Run the milter in the foreground: a supervisor process (the service's main
process) and the milter process it starts. SIGHUP re-reads the policy (an
invalid one is refused with a log line; the old one stays in force),
SIGTERM or SIGINT stops it. Under systemd (Type=notify) it reports READY=1
once the socket listens. It refuses to take over a unix socket another
process serves."""
RUN_EXIT_STATUS = f"""\
exit status:
  {EXIT_OK}  stopped as asked (SIGTERM, SIGINT)
  {EXIT_RUNTIME}  could not run now: the socket or a port is in use by another
     process, the state store cannot be opened, the milter process died or
     stopped on its own; starting again later may work
  {EXIT_CONFIG}  the configuration cannot work: an invalid or unreadable policy,
     a bad --socket, a socket path that is not a socket, an address not on
     this host, a check that cannot run; fix it first"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustmilter", description="Decide how far to trust inbound mail."
    )
    parser.add_argument("--version", action="version", version=f"trustmilter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_check_parser(commands)
    # The supervisor's worker entry point is internal: a subparser given no
    # help= at all is left out of --help (help=SUPPRESS is listed as
    # "==SUPPRESS==" by the argparse of Python 3.11).
    for name, hidden in (("run", False), ("_serve", True)):
        daemon = (
            commands.add_parser(
                name, description=RUN_DESCRIPTION, epilog=RUN_EXIT_STATUS,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            if hidden else
            commands.add_parser(
                name, help="run the milter (foreground)", description=RUN_DESCRIPTION,
                epilog=RUN_EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
        daemon.add_argument("--policy", type=Path,
                            help=f"policy.yaml ({policy_search.DEFAULT_HELP})")
        daemon.add_argument(
            "--socket", help="unix:/path, inet:PORT@HOST or inet6:PORT@HOST (default: the policy's)"
        )
        daemon.add_argument(
            "--foreground-log", action="store_true", help="log to stderr instead of syslog"
        )
        if hidden:  # the supervisor's end of the status pipe (daemon/supervisor.py)
            daemon.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)

    policy = commands.add_parser("policy", help="validate or print a policy")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    policy_check = policy_commands.add_parser("check", help="validate a policy file")
    policy_check.add_argument("file", type=Path, nargs="?",
                              help="the policy file (default: /etc/trustmilter/policy.yaml, "
                              "else ./policy.yaml)")
    policy_show = policy_commands.add_parser(
        "show", help="print the effective policy, every default filled in"
    )
    # The file as `policy check` takes it, or --policy as every other command.
    shown = policy_show.add_mutually_exclusive_group()
    shown.add_argument("file", nargs="?", type=Path, help="the policy file")
    shown.add_argument("--policy", type=Path, help=f"policy.yaml ({policy_search.DEFAULT_HELP})")

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
    add_review_parser(commands)
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
        loaded = load_policy(args.file or args.policy)
        print(f"policy: {loaded.source()}", file=sys.stderr)
        sys.stdout.write(settings_to_yaml(loaded.settings))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from trustmilter.daemon.policyfile import PolicyUnusable
    from trustmilter.daemon.policyfile import load_policy as read_as_daemon
    from trustmilter.daemon.supervisor import run

    # A bad policy stops here, in one line and exit status 2, before any
    # process starts; the file is read as the daemon reads it (a FIFO or a
    # huge file is refused).
    path = find_policy(args.policy)
    try:
        settings = read_as_daemon(path) if path is not None else Settings()
    except PolicyUnusable as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return EXIT_CONFIG
    # What the admin commands compare their own store with (runfile.py).
    note = DaemonNote(os.getpid(), str(path.absolute()) if path else None,
                      describe_state(settings.state))
    with noted(runtime_directory(os.environ), note):
        return run(path, args.socket, args.foreground_log)


def _serve(args: argparse.Namespace) -> int:
    from trustmilter.daemon.serve import ServeError, serve

    try:
        return serve(args.policy, args.socket, args.foreground_log, args.status_fd)
    except ServeError as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return error.exit_status


def _bench(args: argparse.Namespace) -> int:
    # Imported here: the benchmark needs the `bench` extra (miltertest), the rest does not.
    from trustmilter.bench.run import main as bench_main

    return bench_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    try:
        status = _command(argv)
        sys.stdout.flush()  # a closed pipe is found here, not at interpreter exit
    except BrokenPipeError:
        return _reader_gone()
    return status


def _reader_gone() -> int:
    """The reader of standard output went away (``| head -1``): stop quietly.

    Python ignores SIGPIPE and raises BrokenPipeError instead; restoring
    SIG_DFL would also kill us on a DNS or milter socket whose peer left.
    What is still buffered goes to /dev/null, so the interpreter's last
    flush does not print a traceback (Python docs, "Note on SIGPIPE").
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def _command(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="trustmilter: %(levelname)s %(message)s")
    handlers = {"check": run_check, "policy": _policy, "run": _run, "_serve": _serve,
                "bench": _bench, "quarantine": run_quarantine, "reputation": run_reputation,
                "explain-bounce": run_explain_bounce, "bounces": run_bounces,
                "doctor": run_doctor, "review": run_review}
    try:
        return handlers[args.command](args)
    except CommandFailure as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
