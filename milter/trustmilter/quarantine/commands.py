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

from trustmilter.checks.reputation import releases_needed, standing
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
from trustmilter.mail.identity import Identities
from trustmilter.quarantine.postfix import PostfixQueue
from trustmilter.quarantine.review import (
    HeldMessage,
    QuarantineReview,
    ReviewError,
    SpamDeletion,
    reputation_json,
)
from trustmilter.state.base import current

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
    show.add_argument("--body", action="store_true",
                      help="also its body as plain text (HTML without markup, attachments "
                      "listed, nothing opened)")
    release = actions.add_parser(
        "release", parents=[common],
        help="release from hold (postsuper -H); each release teaches the sender's reputation")
    release.add_argument("queue_ids", nargs="+", metavar="ID")
    release.add_argument("--no-learn", action="store_true",
                         help="release without teaching the state store")
    delete = actions.add_parser(
        "delete", parents=[common],
        help="delete (postsuper -d); with --spam each deletion damages the sender's reputation")
    delete.add_argument("queue_ids", nargs="+", metavar="ID")
    delete.add_argument("--spam", action="store_true",
                        help="mark each sender as a spammer in the state store: it loses "
                             "learned trust, and enough marks hold its mail")


def add_reputation_parser(commands: Any) -> None:
    """``reputation list|forget ADDR`` on cli.py's subparsers."""
    common = common_options("print one JSON document")
    parser = commands.add_parser(
        "reputation", help="what releases from quarantine and deletions as spam taught")
    actions = parser.add_subparsers(dest="reputation_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common],
                       help="every sender with releases or spam marks, most releases first")
    forget = actions.add_parser(
        "forget", parents=[common],
        help="drop what was learned about one sender (releases and spam marks; any "
             "sub-address, SRS or BATV form of it names the same sender)")
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
                              lapse=settings.checks.reputation.lapse,
                              identities=Identities(settings.address_separators))
    action = args.quarantine_command
    if action == "list":
        messages = review.held()
        output(args, {"messages": [m.as_json() for m in messages]},
             [_summary(m) for m in messages] or ["the hold queue is empty"])
    elif action == "show":
        message = review.show(args.queue_id)
        document, lines = message.as_json(with_headers=True), _details(message)
        if args.body:
            body = review.body(args.queue_id)
            document["body"] = body.as_json()
            lines += ["", *body.lines()]  # escaped by quarantine/body.py
        output(args, document, lines)
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
    elif args.spam:
        with state_store(settings) as store:
            marked = review.delete_as_spam(args.queue_ids, store)
        output(args, {"deleted": [item.message.queue_id for item in marked],
                      "marked": [item.as_json() for item in marked]},
               [_spam_line(item) for item in marked])
    else:
        deleted = review.delete(args.queue_ids)
        output(args, {"deleted": deleted}, [f"{queue_id}: deleted" for queue_id in deleted])


def _reputation(args: argparse.Namespace) -> None:
    settings = state_policy(args)
    config = settings.checks.reputation
    with state_store(settings) as store:
        if args.reputation_command == "list":
            now = time.time()
            known = [r for r in (current(rep, now, config.lapse) for rep in store.reputations())
                     if r is not None]
            output(args, {"releases_to_trust": releases_to_trust(settings),
                          "spam_to_distrust": spam_to_distrust(settings),
                          "reputations": [_judged_json(r, settings) for r in known]},
                   [_reputation_line(r, settings) for r in known] or ["nothing learned yet"])
            return
        # Learning is keyed by the sender identity: any dressed form of the
        # address (sub-address, VERP, SRS, BATV) forgets the one sender. The
        # address exactly as given goes too: what was learned under a dressed
        # address before identities were used.
        address = normalise_address(args.address)
        identity = Identities(settings.address_separators).of(address).address
        forgotten = store.forget(identity)
        if address != identity:
            forgotten = store.forget(address) or forgotten
        if not forgotten:
            raise CommandFailure(f"{identity}: nothing learned about this sender")
        output(args, {"forgotten": identity}, [f"{identity}: forgotten"])


def releases_to_trust(settings: Settings) -> int | None:
    """Releases before the reputation check trusts a sender (None: the check is off)."""
    config = settings.checks.reputation
    return config.releases_to_trust if config.enabled else None


def spam_to_distrust(settings: Settings) -> int | None:
    """Spam marks before the reputation check distrusts a sender (None: the check is off)."""
    config = settings.checks.reputation
    return config.spam_to_distrust if config.enabled else None


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


def _spam_line(item: SpamDeletion) -> str:
    marked = item.reputation
    if marked is None:
        return f"{item.message.queue_id}: deleted (nothing learned)"
    return printable(f"{item.message.queue_id}: deleted as spam; <{marked.sender}> has "
                     f"{marked.spam_marks} spam mark(s)")


def _judged_json(reputation: Reputation, settings: Settings) -> dict[str, Any]:
    """A listed reputation as JSON, with what the reputation check makes of it."""
    data = reputation_json(reputation)
    config = settings.checks.reputation
    if config.enabled:
        judged = standing(reputation, config)
        data.update(trusted=judged.trusted, rejected=judged.rejected)
    return data


def _reputation_line(reputation: Reputation, settings: Settings) -> str:
    config = settings.checks.reputation
    reasons = ",".join(reputation.reasons) or "-"
    last = utc(reputation.last_release) if reputation.releases else "-"
    line = (f"<{reputation.sender}>  releases={reputation.releases}  "
            f"last={last}  reasons={reasons}  spam={reputation.spam_marks}")
    if reputation.spam_marks:
        line += (f"  last_spam={utc(reputation.last_spam_mark)}  "
                 f"spam_reasons={','.join(reputation.spam_reasons) or '-'}")
    if config.enabled:
        judged = standing(reputation, config)
        line += ("  trusted" if judged.trusted else "  rejected" if judged.rejected
                 else f"  ({releases_needed(reputation, config)} to trust)")
    return printable(line)
