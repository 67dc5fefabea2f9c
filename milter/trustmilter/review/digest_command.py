"""``trustmilter review digest``: send the help desk the day's held mail.

`add_digest_parser` registers the subcommand on the ``review`` parser's
actions; `run_digest` runs it and returns the exit status: 0 when the
digest was sent, when nothing was held since the last one (no mail; it
says so) and when the digest is off in the policy (it says so: the timer
may run before anyone enabled it); 1 after one line on standard error (the
policy, the hold queue, the data directory or sendmail failed, or another
digest is running). The systemd timer trustmilter-review-digest.timer runs
it once a day, as review.user: like the page, it reads the hold queue
through the privileged helper on review.helper_socket, never with
Postfix's own tools (those need root).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustmilter import policy_search
from trustmilter.command_support import guarded, load_policy, utc
from trustmilter.config.settings import Settings
from trustmilter.i18n import translator
from trustmilter.mail.identity import Identities
from trustmilter.quarantine.review import HeldMessage, QuarantineReview, ReviewError
from trustmilter.review.digest import Window, compose_digest
from trustmilter.review.digest_send import (
    DEFAULT_SENDMAIL,
    SendError,
    send,
    sendmail_argv,
)
from trustmilter.review.digest_state import (
    DigestBusy,
    data_directory,
    digest_lock,
    read_last,
    write_last,
)
from trustmilter.review.helper.client import open_queue

DESCRIPTION = """\
Send one mail to review.digest.recipients listing every message held since
the last digest: queue ID, age, sender, recipients, subject and the reasons
in words, with links to the review page (review.url). Nothing held since the
last digest: no mail. Never mails a held message's sender. The time of the
last digest is kept in review.data_dir and moves on only once sendmail took
the mail."""


def add_digest_parser(actions: Any) -> None:
    """``digest`` on the ``review`` parser's subparsers."""
    parser = actions.add_parser(
        "digest", help="mail the help desk what was held since the last digest",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, help="policy.yaml (the review: section; "
                        f"{policy_search.DEFAULT_HELP})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the mail instead of sending it; remember nothing")
    parser.add_argument("--sendmail", default=DEFAULT_SENDMAIL, metavar="PATH",
                        help="the sendmail(1) program that takes the mail "
                             f"(default: {DEFAULT_SENDMAIL})")
    parser.set_defaults(review_run=run_digest)


def run_digest(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    return guarded(lambda parsed: _digest(parsed, clock), args,
                   (ReviewError, SendError, DigestBusy, OSError))


def _digest(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    loaded = load_policy(args.policy)
    settings, review = loaded.settings, loaded.settings.review
    if not review.digest.enabled and not args.dry_run:
        print(f"the digest is off (review.digest.enabled in {loaded.source()}): no mail sent")
        return
    data_dir = data_directory(Path(review.data_dir))
    with digest_lock(data_dir):
        last = read_last(data_dir)
        if last.problem:
            print(f"trustmilter: warning: {last.problem}; listing everything held",
                  file=sys.stderr)
        now = clock()
        window = Window(last.end, int(now))
        since = utc(last.end) if last.end is not None else "the start"
        messages = [m for m in _held(settings, clock, window) if window.holds(m)]
        if not messages:
            print(f"nothing held since {since}: no digest sent")
            return
        mail = compose_digest(messages, window, review, translator(review.default_language),
                              now)
        config = review.postfix_config
        argv = sendmail_argv(args.sendmail, review.digest.sender, review.digest.recipients,
                             Path(config) if config else None)
        if args.dry_run:
            print(f"dry run: would run {' '.join(argv)} with:", file=sys.stderr)
            sys.stdout.write(mail.as_bytes().decode("utf-8", errors="replace"))
            return
        send(mail.as_bytes(), argv)
        write_last(data_dir, window.end)
        print(f"digest sent to {', '.join(review.digest.recipients)}: "
              f"{len(messages)} held since {since}")


def _held(settings: Settings, clock: Callable[[], float], window: Window) -> list[HeldMessage]:
    reader = QuarantineReview(open_queue(settings), settings.policy.headers.trust_header,
                              clock=clock, identities=Identities(settings.address_separators))
    return reader.held(arrived_since=window.start)
