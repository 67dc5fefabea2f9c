"""``trustmilter review``: serve the page, and manage its accounts.

``review serve [--policy F] [--listen HOST:PORT]`` runs the page (never
as root). ``review adduser NAME [--role reviewer|admin]``, ``passwd
NAME``, ``deluser NAME`` and ``users`` manage the local accounts in
review.data_dir; a password is asked twice on the terminal, or read
(one line) from standard input with ``--password-stdin`` for scripts.
Run as root, the account commands give the data directory to review.user,
so the page can still write it. Each account change is audited.

Every action's parser sets ``review_run`` (the function that runs it):
another part of trustmilter adds its own action to the ``review`` parser
with `add_parser` on the actions this module's `add_review_parser`
returns, and `run_review` runs it like these.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustmilter import compat, policy_search
from trustmilter.command_support import CommandFailure, guarded, load_policy, state_store, utc
from trustmilter.config.settings import Settings
from trustmilter.review import audit
from trustmilter.review.accounts import ROLES, AccountError, Accounts, Role
from trustmilter.review.database import Database, ReviewDataError
from trustmilter.review.digest_command import add_digest_parser
from trustmilter.review.helper.command import add_helper_parser

EXIT_OK = 0


def add_review_parser(commands: Any) -> Any:
    """``review serve|adduser|passwd|deluser|users`` on cli.py's subparsers; the
    actions (argparse subparsers), for other parts' actions."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--policy", type=Path,
                        help=f"policy.yaml: its review: section ({policy_search.DEFAULT_HELP})")
    parser = commands.add_parser("review", help="the help desk's review page for held mail")
    actions = parser.add_subparsers(dest="review_command", required=True, metavar="ACTION")

    serve = actions.add_parser(
        "serve", parents=[common],
        help="serve the review page (never as root: run it as review.user, e.g. through "
             "the systemd unit)")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="where to listen (default: review.listen, 127.0.0.1:9426)")
    serve.set_defaults(review_run=_serve)

    adduser = actions.add_parser("adduser", parents=[common],
                                 help="add a local account of the review page")
    adduser.add_argument("name", metavar="NAME")
    adduser.add_argument("--role", choices=ROLES, default="reviewer",
                         help="reviewer: view, release, delete; admin: also the allow-list, "
                              "the accounts and the audit log (default: reviewer)")
    adduser.add_argument("--password-stdin", action="store_true",
                         help="read the password (one line) from standard input, not the "
                              "terminal")
    adduser.set_defaults(review_run=_adduser)

    passwd = actions.add_parser("passwd", parents=[common],
                                help="set an account's password (its sessions end)")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password (one line) from standard input")
    passwd.set_defaults(review_run=_passwd)

    deluser = actions.add_parser("deluser", parents=[common], help="remove an account")
    deluser.add_argument("name", metavar="NAME")
    deluser.set_defaults(review_run=_deluser)

    users = actions.add_parser("users", parents=[common], help="list the accounts")
    users.add_argument("--json", action="store_true", help="print one JSON document")
    users.set_defaults(review_run=_users)
    add_helper_parser(actions)
    add_digest_parser(actions)
    return actions


def run_review(args: argparse.Namespace) -> int:
    run: Callable[[argparse.Namespace], int] = args.review_run
    return run(args)


# ---- serve ------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from trustmilter.review.serve import ServeFailure, serve

    try:
        settings = load_policy(args.policy).settings
    except CommandFailure as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return 2
    logging.getLogger("trustmilter").setLevel(logging.INFO)
    try:
        return serve(settings, args.listen, lambda: _make_app(settings))
    except ServeFailure as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return error.exit_status


def _make_app(settings: Settings) -> Any:
    from trustmilter.review.app import create_app
    from trustmilter.review.helper.client import open_queue

    compat.install()  # strangers' bounces are read: the parsers must stay linear
    # The page is not root: Postfix's queue tools are the privileged helper's.
    return create_app(settings, open_queue(settings), lambda: state_store(settings), time.time)


# ---- accounts ---------------------------------------------------------------------


def _accounts(args: argparse.Namespace) -> tuple[Accounts, audit.AuditLog, Database]:
    settings = load_policy(args.policy).settings
    try:
        database = Database(Path(settings.review.data_dir))
        database.hand_over(settings.review.user)
    except (ReviewDataError, OSError) as error:
        raise CommandFailure(str(error)) from error
    return Accounts(database), audit.AuditLog(database), database


def _who() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid {os.getuid()}"
    return f"{name} (command line)"


def read_password(from_stdin: bool) -> str:
    """The new password: one line of standard input, or asked twice on the terminal."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandFailure("no terminal to ask the password on; give it on standard "
                             "input with --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise CommandFailure("the two passwords differ; nothing changed")
    return first


def _account_command(action: Callable[[argparse.Namespace], None]) -> Callable[
        [argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return guarded(action, args, (AccountError, ReviewDataError))
    return run


def _add(args: argparse.Namespace) -> None:
    accounts, log, _ = _accounts(args)
    role: Role = args.role
    account = accounts.add(args.name, role, read_password(args.password_stdin), time.time())
    log.record(time.time(), _who(), audit.ACCOUNT_ADDED, [], audit.OK,
               f"{account.name} ({account.role})")
    print(f"{account.name}: added ({account.role})")


def _set_password(args: argparse.Namespace) -> None:
    accounts, log, _ = _accounts(args)
    if accounts.get(args.name) is None:  # before asking for a password in vain
        raise CommandFailure(f"{args.name}: no such account")
    accounts.set_password(args.name, read_password(args.password_stdin))
    log.record(time.time(), _who(), audit.PASSWORD_SET, [], audit.OK, args.name.lower())
    print(f"{args.name.lower()}: password set; its sessions have ended")


def _remove(args: argparse.Namespace) -> None:
    accounts, log, _ = _accounts(args)
    accounts.remove(args.name)
    log.record(time.time(), _who(), audit.ACCOUNT_REMOVED, [], audit.OK, args.name.lower())
    print(f"{args.name.lower()}: removed")


def _list(args: argparse.Namespace) -> None:
    accounts, _, _ = _accounts(args)
    listed = accounts.all()
    if args.json:
        print(json.dumps({"accounts": [{"name": a.name, "role": a.role, "created": a.created}
                                       for a in listed]}))
    else:
        print("\n".join(f"{a.name}  {a.role}  created {utc(a.created)}" for a in listed)
              or "no accounts yet: trustmilter review adduser NAME --role admin")


_adduser = _account_command(_add)
_passwd = _account_command(_set_password)
_deluser = _account_command(_remove)
_users = _account_command(_list)
