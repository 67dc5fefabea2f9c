#!/usr/bin/env python3
"""Instructions per warm message: a commit's whole daemon under callgrind.

    python tools/callgrind_per_message.py TREE [--messages 300] [--corpus-file F]

TREE is a commit of this repository (anything ``git rev-parse`` takes) or a
directory holding a ``milter/trustmilter`` tree. The figure is the README's
"instructions per warm message" (section Benchmark): the instructions
(callgrind's Ir) of a run with N warm messages minus those of a run with 0
warm messages, divided by N. Instructions do not vary with the machine's
load the way time does, so two commits compare to a fraction of a percent.

Method, chosen to stay valid while the engine's internals change: the
daemon as shipped (``python -m trustmilter run``, the tree's package first
on ``PYTHONPATH``, hash seed 0) runs under ``valgrind --tool=callgrind
--trace-children=yes``; only the milter process's count is used (the
supervisor in front of it is left out; its pid is in the "listening on"
line). This tool, outside valgrind, serves the corpus zone from the test
DNS server and plays the MTA with the bench's milter client, one
connection at a time (concurrency 1, corpus order, fixed queue ids). Each
run starts the daemon, sends the whole corpus once (the cold pass: DNS
answers and parsed keys become cached), then N further messages (the
corpus from its start again, as often as needed), and stops it with
SIGTERM; callgrind writes its count when the process exits. The start,
the cold pass and the stop are the same in both runs and cancel in the
difference. Nothing in the driver names a class or function of the
daemon, so it measures any commit that keeps ``trustmilter run`` and the
milter protocol.

The corpus must be the same for every figure to compare (its DKIM keys
are new each time it is made): pass one ``--corpus-file`` to every run;
it is made there on the first. The DNS timeouts in the policy are 10 s, as
the daemon under callgrind is ~50 times slower and a timed-out lookup would
change the work done.

Cost on this 2-CPU machine: about 9 minutes at the defaults (two runs of
4-5 minutes; each one's start and cold pass take most of it). A corpus of
100 with 100 warm messages takes about a third of that, but its mix
differs: compare figures of one corpus only. ``--runs 2`` repeats the pair
to show the spread (at c7d1ef9 two runs of 0 warm messages differed by 7 M
instructions, 0.02 M per warm message).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from milter_rig import (
    Daemon,
    RigError,
    SourceTree,
    imported_from,
    load_corpus,
    served_zone,
    source_tree,
)

from trustmilter.bench.client import MilterClient, MilterProtocolError
from trustmilter.bench.corpus import Corpus
from trustmilter.testing.dnsserver import DnsTestServer

START_TIMEOUT = 600.0  # python's start under callgrind takes about half a minute
CLIENT_TIMEOUT = 120.0
DNS_TIMEOUT = 10.0
_TOTAL = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CallgrindRun:
    """One daemon run under callgrind."""

    warm: int
    milter_instructions: int
    supervisor_instructions: int
    warm_dns_queries: int  # queries the daemon sent during the warm messages
    seconds: float


def valgrind_prefix(outdir: Path) -> tuple[str, ...]:
    return ("valgrind", "--tool=callgrind", "--trace-children=yes", "--fair-sched=yes",
            f"--callgrind-out-file={outdir}/callgrind.%p", "--log-file=" + str(outdir / "vg.%p"))


def _instructions(path: Path) -> int:
    found = _TOTAL.search(path.read_text(errors="replace"))
    if found is None:
        raise RigError(f"{path}: no instruction total (did the process exit cleanly?)")
    return int(found.group(1))


def _send(client: MilterClient, corpus: Corpus, count: int, prefix: str) -> None:
    """`count` messages, the corpus in order and over again, one connection at a time."""
    for index in range(count):
        message = corpus.messages[index % len(corpus.messages)]
        try:
            client.converse(message, f"{prefix}{index:08X}")
        except (OSError, MilterProtocolError) as error:
            raise RigError(f"message {index}: {type(error).__name__}: {error}") from error


def run_once(tree: SourceTree, corpus: Corpus, dns: DnsTestServer, warm: int,
             workdir: Path) -> CallgrindRun:
    started = time.monotonic()
    outdir = workdir / "callgrind"
    outdir.mkdir(parents=True)
    daemon = Daemon(tree, workdir, dns.nameserver, prefix=valgrind_prefix(outdir),
                    dns_timeout=DNS_TIMEOUT)
    client = MilterClient(daemon.spec, CLIENT_TIMEOUT)
    try:
        daemon.start(client, START_TIMEOUT)
        _send(client, corpus, len(corpus.messages), "4C")
        queries_before = len(dns.queries)
        _send(client, corpus, warm, "4W")
        warm_queries = len(dns.queries) - queries_before
    finally:
        status = daemon.stop()
    if status != 0:
        raise RigError(f"{tree.label}: the daemon exited {status}:\n{daemon.tail()}")
    milter_pid = daemon.milter_pid()
    outputs = {int(path.name.split(".")[1]): path for path in outdir.glob("callgrind.*")}
    if milter_pid not in outputs:
        raise RigError(f"no callgrind output for the milter process {milter_pid} in {outdir}")
    milter = _instructions(outputs.pop(milter_pid))
    supervisor = sum(_instructions(path) for path in outputs.values())
    return CallgrindRun(warm, milter, supervisor, warm_queries, time.monotonic() - started)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Instructions per warm message of a commit's daemon (callgrind).")
    parser.add_argument("tree", help="commit, or a directory holding milter/trustmilter")
    parser.add_argument("--messages", type=int, default=300,
                        help="warm messages in the measured run (default 300)")
    parser.add_argument("--corpus-messages", type=int, default=300,
                        help="corpus size, sent once cold in each run (default 300)")
    parser.add_argument("--domains", type=int, default=200, help="sender domains (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--corpus-file", type=Path,
                        help="pickled corpus to reuse (made and kept there if missing); use "
                             "the same file for every figure you compare")
    parser.add_argument("--runs", type=int, default=1, help="measure the pair this many times")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (callgrind files, daemon logs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.messages < 1 or args.corpus_messages < 1 or args.runs < 1:
        print("callgrind: --messages, --corpus-messages and --runs must be positive",
              file=sys.stderr)
        return 2
    if shutil.which("valgrind") is None:
        print("callgrind: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="trustmilter-callgrind-"))
    dns = DnsTestServer()
    figures: list[float] = []
    try:
        tree = source_tree(args.tree, workdir / "trees")
        print(f"callgrind: {tree.label} ({tree.commit[:12] or 'directory'}), trustmilter from "
              f"{imported_from(tree)}", file=sys.stderr, flush=True)
        corpus = load_corpus(args.corpus_file, seed=args.seed, messages=args.corpus_messages,
                             domains=args.domains)
        dns.start()
        dns.load(served_zone(corpus))
        for attempt in range(args.runs):
            runs = []
            for warm in (0, args.messages):
                run = run_once(tree, corpus, dns, warm, workdir / f"run{attempt}-{warm}")
                print(f"callgrind: {warm} warm: milter process {run.milter_instructions:,} "
                      f"instructions (supervisor {run.supervisor_instructions:,}), DNS queries "
                      f"during the warm messages {run.warm_dns_queries}, {run.seconds:.0f} s",
                      file=sys.stderr, flush=True)
                runs.append(run)
            per_message = (runs[1].milter_instructions - runs[0].milter_instructions) / warm
            figures.append(per_message)
    except RigError as error:
        print(f"callgrind: {error}", file=sys.stderr)
        return 2
    finally:
        dns.close()
        if args.keep:
            print(f"callgrind: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    label = f"{tree.label}" + (f" ({tree.commit[:12]})" if tree.commit else "")
    each = " ".join(f"{f / 1e6:.2f}" for f in figures)
    median = statistics.median(figures) / 1e6
    print(f"{label}: {median:.2f} M instructions per warm message (median of {each}; "
          f"{args.messages} warm, corpus of {len(corpus.messages)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
