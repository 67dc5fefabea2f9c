"""``trustmilter quarantine`` and ``trustmilter reputation``: the argparse side.

`add_quarantine_parser` / `add_reputation_parser` register the
subcommands on cli.py's parser; `run_quarantine` / `run_reputation` run
them and return the exit status: 0 on success, 1 after one line on
standard error (an unknown queue ID, a Postfix or state-store failure, a
bad policy). ``--json`` prints exactly one JSON document on standard
output. Text output escapes control characters: subjects and headers
come from strangers and must not drive the reviewer's terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmilter.policy.load import PolicyError, load_policy
from trustmilter.policy.model import Policy
from trustmilter.quarantine.postfix import PostfixQueue
from trustmilter.quarantine.review import (
    HeldMessage,
    QuarantineReview,
    ReviewError,
    reputation_json,
)
from trustmilter.state.base import StateError

if TYPE_CHECKING:
    from trustmilter.state.base import Reputation, StateStore

EXIT_OK, EXIT_FAILURE = 0, 1


class _Failure(Exception):
    """Reported as one line, exit status 1."""


def _common(json_help: str) -> argparse.ArgumentParser:
    """Options every quarantine/reputation action takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--policy", type=Path,
                        help="policy.yaml (trust header name, state store; default: built-in)")
    common.add_argument("--json", action="store_true", help=json_help)
    return common


def add_quarantine_parser(commands: Any) -> None:
    """``quarantine list|show|release|delete`` on cli.py's subparsers."""
    common = _common("print one JSON document")
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
    common = _common("print one JSON document")
    parser = commands.add_parser("reputation", help="what releases from quarantine taught")
    actions = parser.add_subparsers(dest="reputation_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="every sender with releases, most first")
    forget = actions.add_parser("forget", parents=[common],
                                help="drop what was learned about one sender address")
    forget.add_argument("address", metavar="ADDR")


def run_quarantine(args: argparse.Namespace) -> int:
    return _guarded(_quarantine, args)


def run_reputation(args: argparse.Namespace) -> int:
    return _guarded(_reputation, args)


# ---- the actions ------------------------------------------------------------


def _quarantine(args: argparse.Namespace) -> None:
    policy = _policy(args.policy)
    review = QuarantineReview(PostfixQueue(args.postfix_config), policy.headers.trust_header)
    action = args.quarantine_command
    if action == "list":
        messages = review.held()
        _out(args, {"messages": [m.as_json() for m in messages]},
             [_summary(m) for m in messages] or ["the hold queue is empty"])
    elif action == "show":
        message = review.show(args.queue_id)
        _out(args, message.as_json(with_headers=True), _details(message))
    elif action == "release":
        if args.no_learn:
            released = review.release(args.queue_ids, None)
        else:
            with _store(policy) as store:
                released = review.release(args.queue_ids, store)
        lines = []
        for item in released:
            learned = item.reputation
            lines.append(f"{item.message.queue_id}: released" + (
                f"; <{learned.sender}> has {learned.releases} release(s)" if learned
                else " (nothing learned)"))
        _out(args, {"released": [item.as_json() for item in released]}, lines)
    else:
        deleted = review.delete(args.queue_ids)
        _out(args, {"deleted": deleted}, [f"{queue_id}: deleted" for queue_id in deleted])


def _reputation(args: argparse.Namespace) -> None:
    policy = _policy(args.policy)
    needed = releases_to_trust(policy)
    with _store(policy) as store:
        if args.reputation_command == "list":
            known = store.reputations()
            _out(args, {"releases_to_trust": needed,
                        "reputations": [reputation_json(r, needed) for r in known]},
                 [_reputation_line(r, needed) for r in known] or ["nothing learned yet"])
            return
        address = args.address.strip().strip("<>").lower()
        if not store.forget(address):
            raise _Failure(f"{address}: nothing learned about this sender")
        _out(args, {"forgotten": address}, [f"{address}: forgotten"])


def releases_to_trust(policy: Policy) -> int | None:
    """Releases before the reputation check trusts a sender (None: the check is off)."""
    config = policy.checks.reputation
    return config.releases_to_trust if config.enabled else None


# ---- helpers ----------------------------------------------------------------


def _guarded(action: Any, args: argparse.Namespace) -> int:
    try:
        action(args)
    except (_Failure, ReviewError, StateError) as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        return load_policy(path)
    except PolicyError as error:
        raise _Failure(str(error)) from error
    except OSError as error:
        raise _Failure(f"{path}: cannot read policy: {error.strerror}") from error


@contextmanager
def _store(policy: Policy) -> Iterator[StateStore]:
    """The state store the policy configures, closed afterwards."""
    # The same opener the daemon uses, so the CLI teaches exactly what it reads.
    from trustmilter.state.open import open_store

    store = open_store(policy.state)
    try:
        yield store
    finally:
        store.close()


def _out(args: argparse.Namespace, document: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(document))
    else:
        print("\n".join(lines))


def _printable(text: str) -> str:
    """`text` with control characters (ANSI escapes included) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _summary(message: HeldMessage) -> str:
    rcpts = ",".join(f"<{r}>" for r in message.entry.recipients)
    reasons = ",".join(message.reasons) or "-"
    return _printable(f"{message.queue_id}  {_age(message.age):>4}  <{message.sender}> -> "
                      f"{rcpts}  subject={message.subject!r}  reasons={reasons}")


def _details(message: HeldMessage) -> list[str]:
    mark = message.mark
    lines = [
        f"queue id:    {message.queue_id}",
        f"arrived:     {_when(message.entry.arrival_time)} ({_age(message.age)} ago)",
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
    return [_printable(line) for line in lines]


def _reputation_line(reputation: Reputation, needed: int | None) -> str:
    trusted = "" if needed is None else (
        "  trusted" if reputation.releases >= needed else f"  ({needed} to trust)")
    reasons = ",".join(reputation.reasons) or "-"
    return _printable(f"<{reputation.sender}>  releases={reputation.releases}  "
                      f"last={_when(reputation.last_release)}  reasons={reasons}{trusted}")
