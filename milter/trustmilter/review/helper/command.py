"""``trustmilter review helper``: start the privileged helper (server.py) in the foreground.

Run as root by systemd (packaging/trustmilter-review-helper.service). The
socket, the user it answers and Postfix's configuration directory come
from the policy's review: section unless given here. A start-up failure
is one line on standard error naming the socket or the user, with the
exit status of ``trustmilter run``: 2 when the configuration cannot work
(fix it first), 1 when it could but not now (another helper serves the
socket). Its log goes to standard error, which systemd keeps in the
journal: one line per request.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from trustmilter import policy_search
from trustmilter.command_support import CommandFailure, load_policy
from trustmilter.daemon.notify import notify
from trustmilter.quarantine.postfix import PostfixQueue
from trustmilter.review.helper.server import HelperServer, bind_socket
from trustmilter.startup import EXIT_CONFIG, EXIT_RUNTIME, ServeError

HELPER_DESCRIPTION = """\
Run the privileged helper of the review page in the foreground, as root: it
lists, shows, releases and deletes messages in Postfix's hold queue for the
page, which runs as review.user and never as root. It listens on a unix
socket (mode 0660, group of review.user), answers only root and
review.user, and takes only queue IDs that are in the hold queue. One log
line per request on standard error. SIGTERM or SIGINT stops it. It refuses
to take over a socket another helper serves."""
HELPER_EXIT_STATUS = f"""\
exit status:
  0  stopped as asked (SIGTERM, SIGINT)
  {EXIT_RUNTIME}  could not run now: another process serves the socket, or it
     cannot be made; starting again later may work
  {EXIT_CONFIG}  the configuration cannot work: an invalid policy, not run as
     root, an unknown user, a socket path or directory that cannot be used"""
log = logging.getLogger("trustmilter.review.helper")
# The longest path a unix socket address holds (sun_path, unix(7)).
MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class HelperSetup:
    """What the helper runs with, settled before it listens."""

    socket_path: str
    user: str
    uid: int
    gid: int  # the user's primary group: the socket's group
    postfix_config: Path | None


def add_helper_parser(actions: Any) -> None:
    """``review helper`` on the ``review`` command's subparsers."""
    parser = actions.add_parser(
        "helper", help="run the privileged helper for the page (as root, foreground)",
        description=HELPER_DESCRIPTION, epilog=HELPER_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path,
                        help=f"policy.yaml (its review: section; {policy_search.DEFAULT_HELP})")
    parser.add_argument("--socket", metavar="PATH",
                        help="the unix socket to listen on (default: review.helper_socket)")
    parser.add_argument("--user", metavar="NAME",
                        help="the only user besides root it answers; the socket's group is "
                             "this user's primary group (default: review.user)")
    parser.add_argument("--postfix-config", type=Path, metavar="DIR",
                        help="Postfix configuration directory (postqueue/postsuper -c DIR; "
                             "default: review.postfix_config, else Postfix's own)")
    parser.set_defaults(review_run=run_helper)


def run_helper(args: argparse.Namespace) -> int:
    """Start the helper and serve until SIGTERM or SIGINT; the exit status."""
    with _logging_to_stderr():
        try:
            setup = _setup(args)
        except ServeError as error:
            log.error("%s", error)
            return error.exit_status
        return _serve(setup)


def _setup(args: argparse.Namespace) -> HelperSetup:
    """The settings from the command line and the policy; ServeError (exit 2)
    naming what cannot work."""
    try:
        review = load_policy(args.policy).settings.review
    except CommandFailure as error:
        raise ServeError(str(error)) from error
    path = args.socket or review.helper_socket
    user = args.user or review.user
    postfix_config = args.postfix_config or (Path(review.postfix_config)
                                             if review.postfix_config else None)
    if not path.startswith("/") or len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ServeError(f"socket {path}: an absolute path of at most {MAX_SOCKET_PATH} bytes")
    if os.geteuid() != 0:
        raise ServeError(f"socket {path}: must run as root (postcat and postsuper need it)")
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise ServeError(f"user {user!r}: no such user (review.user, or --user)") from None
    if postfix_config is not None and not postfix_config.is_dir():
        raise ServeError(f"Postfix configuration directory {postfix_config}: not a directory")
    return HelperSetup(path, user, account.pw_uid, account.pw_gid, postfix_config)


def _serve(setup: HelperSetup) -> int:
    server = HelperServer(PostfixQueue(setup.postfix_config), setup.uid)
    try:
        listener, claim = bind_socket(setup.socket_path, setup.gid)
    except ServeError as error:
        log.error("%s", error)
        server.close()
        return error.exit_status

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info("listening on %s (mode 0660, group %d); answering root and %s (uid %d);"
                 " Postfix configuration %s", setup.socket_path, setup.gid, setup.user,
                 setup.uid, setup.postfix_config or "Postfix's default")
        notify("READY=1")
        server.serve(listener)
        notify("STOPPING=1")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        listener.close()
        claim.release()
        server.close()
    log.info("stopped")
    return 0


@contextmanager
def _logging_to_stderr() -> Iterator[None]:
    """The `trustmilter` loggers at INFO on standard error while the helper runs
    (systemd puts standard error in the journal, with the time)."""
    logger = logging.getLogger("trustmilter")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trustmilter review helper: %(message)s"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
