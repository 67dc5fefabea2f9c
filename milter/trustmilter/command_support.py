"""What the administrator's subcommands share: policy, state store, output, failures.

``quarantine``, ``reputation`` and ``bounces`` each load the policy the
daemon uses (its state store, header names, own domains), open that store
with the daemon's own opener, and print either readable lines or exactly
one JSON document. A failure is one line on standard error and exit
status 1. Text output escapes control characters: addresses, subjects and
headers come from strangers and must not drive the reviewer's terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmilter.config.load import ConfigError, load_settings
from trustmilter.config.settings import Settings
from trustmilter.state.base import StateError

if TYPE_CHECKING:
    from trustmilter.state.base import StateStore

EXIT_OK, EXIT_FAILURE = 0, 1


class CommandFailure(Exception):
    """Reported as one line, exit status 1."""


def common_options(json_help: str) -> argparse.ArgumentParser:
    """``--policy`` and ``--json``, for the subcommands' parents=[...]."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--policy", type=Path,
                        help="policy.yaml (state store, header names; default: built-in)")
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


def policy_from(path: Path | None) -> Settings:
    """The policy at `path` (built-in defaults for None); CommandFailure if unusable."""
    if path is None:
        return Settings()
    try:
        return load_settings(path)
    except ConfigError as error:
        raise CommandFailure(str(error)) from error
    except OSError as error:
        raise CommandFailure(f"{path}: cannot read policy: {error.strerror}") from error


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
    """One JSON document under ``--json``, else the readable lines."""
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
