"""What the administrator's subcommands share: policy, state store, output, failures.

``quarantine``, ``reputation`` and ``bounces`` each load the policy the
daemon uses (its state store, header names, own domains), open that store
with the daemon's own opener, and print either readable lines or exactly
one JSON document. Without ``--policy`` every command reads the
installation's policy (policy_search.py); the state commands say on
standard error which policy and store they read, and warn when a running
daemon keeps its state elsewhere (runfile.py). A failure is one line on
standard error and exit status 1. Text output escapes control characters:
addresses, subjects and headers come from strangers and must not drive the
reviewer's terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmilter import policy_search
from trustmilter.config.load import ConfigError, load_settings
from trustmilter.config.settings import Settings
from trustmilter.runfile import describe_state, read_note, runtime_directory
from trustmilter.state.base import StateError

if TYPE_CHECKING:
    from trustmilter.state.base import StateStore

EXIT_OK, EXIT_FAILURE = 0, 1


class CommandFailure(Exception):
    """Reported as one line, exit status 1."""


def common_options(json_help: str) -> argparse.ArgumentParser:
    """``--policy`` and ``--json``, for the subcommands' parents=[...]."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--policy", type=Path, help="policy.yaml (state store, header names; "
                        f"{policy_search.DEFAULT_HELP})")
    common.add_argument("--json", action="store_true", help=json_help)
    return common


def guarded(
    action: Callable[[argparse.Namespace], None],
    args: argparse.Namespace,
    expected: tuple[type[Exception], ...] = (),
) -> int:
    """Run `action`; a CommandFailure, StateError or `expected` error is one line and 1."""
    caught: tuple[type[Exception], ...] = (CommandFailure, StateError, *expected)
    try:
        action(args)
    except caught as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy and the file it came from (None: the built-in defaults)."""

    path: Path | None
    settings: Settings

    def source(self) -> str:
        """The file, or which files were looked for, for a "policy: ..." line."""
        if self.path is not None:
            return str(self.path)
        tried = " or ".join(str(p) for p in policy_search.search_path(Path.cwd()))
        return f"built-in defaults (no {tried})" if tried else "built-in defaults"


def find_policy(explicit: Path | None) -> Path | None:
    """`explicit`, else the installation's policy file (policy_search.py), else None."""
    return policy_search.find_policy(explicit, policy_search.search_path(Path.cwd()))


def load_policy(explicit: Path | None) -> LoadedPolicy:
    """The policy `explicit` names or the search finds; CommandFailure if unusable."""
    path = find_policy(explicit)
    if path is None:
        return LoadedPolicy(None, Settings())
    try:
        return LoadedPolicy(path, load_settings(path))
    except ConfigError as error:
        raise CommandFailure(str(error)) from error
    except OSError as error:
        raise CommandFailure(f"{path}: cannot read policy: {error.strerror}") from error


def policy_from(path: Path | None) -> Settings:
    """The policy at `path`, else the one the search finds; CommandFailure if unusable."""
    return load_policy(path).settings


def state_policy(args: argparse.Namespace) -> Settings:
    """The policy (``args.policy`` or the search's) of a command that shows or changes state.

    A warning comes at once, before anything is changed, when the running
    daemon's note (runfile.py) names another store: what this command shows
    or teaches is then not what the daemon uses. The line naming the policy
    file and the store comes with the output (`output`), so that a failure
    stays one line.
    """
    loaded = load_policy(args.policy)
    ours = describe_state(loaded.settings.state)
    daemon = read_note(runtime_directory(os.environ))
    if daemon is not None and daemon.state != ours:
        hint = f" (give --policy {daemon.policy})" if daemon.policy else ""
        print(f"trustmilter: warning: the running daemon (process {daemon.pid}) keeps its state "
              f"in {daemon.state}, not in {ours}{hint}", file=sys.stderr)
    args.read_from = f"policy: {loaded.source()}, state: {ours}"
    return loaded.settings


@contextmanager
def state_store(settings: Settings) -> Iterator[StateStore]:
    """The state store the policy configures, closed afterwards."""
    # The same opener the daemon uses, so a command reads and writes exactly its data.
    from trustmilter.state.open import open_store

    store = open_store(settings.state)
    try:
        yield store
    finally:
        store.close()


def output(args: argparse.Namespace, document: dict[str, Any], lines: list[str]) -> None:
    """One JSON document under ``--json``, else the readable lines.

    On standard error first, what `state_policy` read (the document stays
    the only thing on standard output).
    """
    read_from = getattr(args, "read_from", None)
    if read_from:
        print(read_from, file=sys.stderr)
    if args.json:
        print(json.dumps(document))
    else:
        print("\n".join(lines))


def printable(text: str) -> str:
    """`text` with control characters (ANSI escapes included) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def age(seconds: float) -> str:
    """``3d``, ``5h``, ``12m``, ``40s``: the largest whole unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def utc(epoch: float) -> str:
    """``2026-11-24 22:30:00Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
