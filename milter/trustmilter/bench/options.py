"""The options of ``trustmilter bench``, apart from the code that runs it.

cli.py builds its parser from `add_arguments` for every command, so this
module imports nothing beyond the standard library: the benchmark's own
dependencies (the `bench` extra) are only needed when it runs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class BenchOptions:
    concurrency: tuple[int, ...] = (1, 8, 32)
    messages: int = 2000  # per measured point
    seconds: float = 20.0  # per measured point, at most
    socket_kind: Literal["inet", "unix"] = "inet"
    corpus_messages: int = 300
    domains: int = 200
    seed: int = 1
    timeout: float = 30.0  # per socket operation of the load generator
    processes: int = 1  # trustmilter's milter.processes


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,8,32, got {text!r}") from None
    if not values or any(not 1 <= v <= 256 for v in values):
        raise argparse.ArgumentTypeError("each concurrency must be 1-256")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trustmilter bench`` (cli.py adds them to its subparser)."""
    parser.add_argument("--concurrency", type=_concurrency, default=(1, 8, 32),
                        help="connections at once, comma-separated (default 1,8,32)")
    parser.add_argument("--messages", type=int, default=2000,
                        help="messages per measured point, at most (default 2000)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds per measured point, at most (default 20)")
    parser.add_argument("--socket-kind", choices=("inet", "unix"), default="inet",
                        help="milter sockets on 127.0.0.1 TCP or unix (default inet)")
    parser.add_argument("--corpus", type=int, default=300, metavar="N",
                        help="distinct messages in the corpus (default 300)")
    parser.add_argument("--domains", type=int, default=200,
                        help="sender domains in the corpus, at most 500 (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--processes", type=int, default=1, choices=range(1, 65), metavar="N",
                        help="trustmilter's milter.processes (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
