"""``trustmilter quarantine`` and ``trustmilter reputation``: the argparse side.

`add_quarantine_parser` / `add_reputation_parser` register the
subcommands on cli.py's parser; `run_quarantine` / `run_reputation` run
them and return the exit status: 0 on success, 1 after one line on
standard error (an unknown queue ID, a Postfix or state-store failure, a
bad policy). ``--json`` prints exactly one JSON document on standard
output (command_support.py has the pieces all such commands share).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmilter.command_support import (
    CommandFailure,
    age,
    common_options,
    guarded,
    output,
    printable,
    state_policy,
    state_store,
    utc,
)
from trustmilter.config.settings import Settings
from trustmilter.mail.addresses import normalise_address
from trustmilter.quarantine.postfix import PostfixQueue
from trustmilter.quarantine.review import (
    HeldMessage,
    QuarantineReview,
    ReviewError,
    reputation_json,
)
from trustmilter.state.base import is_current

if TYPE_CHECKING:
    from trustmilter.state.base import Reputation


def add_quarantine_parser(commands: Any) -> None:
    """``quarantine list|show|release|delete`` on cli.py's subparsers."""
    common = common_options("print one JSON document")
    common.add_argument("--postfix-config", type=Path, metavar="DIR",
                        help="Postfix configuration directory (postqueue/postsuper -c DIR)")
    parser = commands.add_parser("quarantine", help="review Postfix's hold queue")
    actions = parser.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common],
                       help="held messages: queue id, age, sender, recipients, subject, reasons")
    show = actions.add_parser("show", parents=[common],
                              help="one held message: its headers and the reasons")
    show.add_argument("queue_id", metavar="ID")
    release = actions.add_parser(
        "release", parents=[common],
        help="release from hold (postsuper -H); each release teaches the sender's reputation")
    release.add_argument("queue_ids", nargs="+", metavar="ID")
    release.add_argument("--no-learn", action="store_true",
                         help="release without teaching the state store")
    delete = actions.add_parser("delete", parents=[common], help="delete (postsuper -d)")
    delete.add_argument("queue_ids", nargs="+", metavar="ID")


def add_reputation_parser(commands: Any) -> None:
    """``reputation list|forget ADDR`` on cli.py's subparsers."""
    common = common_options("print one JSON document")
    parser = commands.add_parser("reputation", help="what releases from quarantine taught")
    actions = parser.add_subparsers(dest="reputation_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="every sender with releases, most first")
    forget = actions.add_parser("forget", parents=[common],
                                help="drop what was learned about one sender address")
    forget.add_argument("address", metavar="ADDR")


def run_quarantine(args: argparse.Namespace) -> int:
    return guarded(_quarantine, args, (ReviewError,))


def run_reputation(args: argparse.Namespace) -> int:
    return guarded(_reputation, args, (ReviewError,))


# ---- the actions ------------------------------------------------------------


def _quarantine(args: argparse.Namespace) -> None:
    settings = state_policy(args)
    review = QuarantineReview(PostfixQueue(args.postfix_config),
                              settings.policy.headers.trust_header,
                              lapse=settings.checks.reputation.lapse)
    action = args.quarantine_command
    if action == "list":
        messages = review.held()
        output(args, {"messages": [m.as_json() for m in messages]},
             [_summary(m) for m in messages] or ["the hold queue is empty"])
    elif action == "show":
        message = review.show(args.queue_id)
        output(args, message.as_json(with_headers=True), _details(message))
    elif action == "release":
        if args.no_learn:
            released = review.release(args.queue_ids, None)
        else:
            with state_store(settings) as store:
                released = review.release(args.queue_ids, store)
        lines = []
        for item in released:
            learned = item.reputation
            lines.append(f"{item.message.queue_id}: released" + (
                f"; <{learned.sender}> has {learned.releases} release(s)" if learned
                else " (nothing learned)"))
        output(args, {"released": [item.as_json() for item in released]}, lines)
    else:
        deleted = review.delete(args.queue_ids)
        output(args, {"deleted": deleted}, [f"{queue_id}: deleted" for queue_id in deleted])


def _reputation(args: argparse.Namespace) -> None:
    settings = state_policy(args)
    needed = releases_to_trust(settings)
    with state_store(settings) as store:
        if args.reputation_command == "list":
            now, lapse = time.time(), settings.checks.reputation.lapse
            known = [r for r in store.reputations() if is_current(r, now, lapse)]
            output(args, {"releases_to_trust": needed,
                        "reputations": [reputation_json(r, needed) for r in known]},
                 [_reputation_line(r, needed) for r in known] or ["nothing learned yet"])
            return
        address = normalise_address(args.address)
        if not store.forget(address):
            raise CommandFailure(f"{address}: nothing learned about this sender")
        output(args, {"forgotten": address}, [f"{address}: forgotten"])


def releases_to_trust(settings: Settings) -> int | None:
    """Releases before the reputation check trusts a sender (None: the check is off)."""
    config = settings.checks.reputation
    return config.releases_to_trust if config.enabled else None


# ---- output -----------------------------------------------------------------


def _summary(message: HeldMessage) -> str:
    rcpts = ",".join(f"<{r}>" for r in message.entry.recipients)
    reasons = ",".join(message.reasons) or "-"
    return printable(f"{message.queue_id}  {age(message.age):>4}  <{message.sender}> -> "
                      f"{rcpts}  subject={message.subject!r}  reasons={reasons}")


def _details(message: HeldMessage) -> list[str]:
    mark = message.mark
    lines = [
        f"queue id:    {message.queue_id}",
        f"arrived:     {utc(message.entry.arrival_time)} ({age(message.age)} ago)",
        f"sender:      <{message.sender}>",
        f"recipients:  {', '.join(f'<{r}>' for r in message.entry.recipients)}",
        f"subject:     {message.subject}",
        f"held by trustmilter: {'yes' if message.held_by_trustmilter else 'no'}"
        + (f", score {mark.score:g}" if mark and mark.score is not None else ""),
        f"reasons:     {', '.join(message.reasons) or '-'}",
        f"rules:       {', '.join(mark.rules) if mark and mark.rules else '-'}",
        "",
        *(f"{name}: {value}" for name, value in message.headers),
    ]
    return [printable(line) for line in lines]


def _reputation_line(reputation: Reputation, needed: int | None) -> str:
    trusted = "" if needed is None else (
        "  trusted" if reputation.releases >= needed else f"  ({needed} to trust)")
    reasons = ",".join(reputation.reasons) or "-"
    return printable(f"<{reputation.sender}>  releases={reputation.releases}  "
                      f"last={utc(reputation.last_release)}  reasons={reasons}{trusted}")
