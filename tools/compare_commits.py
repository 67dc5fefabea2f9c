#!/usr/bin/env python3
"""Compare what two commits' daemons do with the benchmark corpus, byte for byte.

    python tools/compare_commits.py OLD NEW [--messages N] [--show N] [--corpus-file F]

OLD and NEW are commits (anything ``git rev-parse`` takes) of this
repository, or directories holding a ``milter/trustmilter`` tree (a working
tree with uncommitted changes). For a refactor that must not change
behaviour: on the benchmark corpus, every milter reply, header edit,
quarantine and log line must be the same before and after.

How: each commit is exported with ``git archive`` into a temporary
directory. The corpus (`trustmilter.bench.corpus`, seeded) is made once
(its DKIM keys are new on every run, so both commits get the same pickled
corpus) and its zone served by the project's test DNS server on
127.0.0.1. For each commit, that tree's ``python -m trustmilter run``
(``PYTHONPATH=<tree>/milter``, hash seed 0, the bench's policy, a fresh
SQLite state) gets every message in corpus order, one connection at a time,
from the bench's milter client, with queue ids ``4C00000000``, ``4C00000001``...
Only the command line and the milter protocol are used, so commits whose
internals differ compare fine.

Recorded per message: the option negotiation, every milter reply at each
step (MAIL, each RCPT, end of message: code and text), every header edit
(add, insert, change: index, name, value), the quarantine reason, and the
daemon's log lines written while the message was handled (its verdict
line, and any warning), without the volatile ``ms=`` field. Lines the daemon
writes outside any message (start, stop) are compared too, with the
temporary paths, the port and the process ids replaced by placeholders.

Prints the first ``--show`` differing messages as unified diffs and the
counts; exits 0 when everything is identical, 1 when anything differs,
2 when a commit could not be run. The daemons use this checkout's virtual
environment (``sys.executable``): a commit that needs a library it lacks
fails to start. About 30 s for two commits and 300 messages.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milter_rig import (
    Daemon,
    RigError,
    SourceTree,
    imported_from,
    load_corpus,
    served_zone,
    source_tree,
)

from miltertest import constants as c
from trustmilter.bench.client import MilterClient, MilterProtocolError, Negotiated
from trustmilter.bench.corpus import BenchMessage, Corpus
from trustmilter.testing.dnsserver import DnsTestServer

START_TIMEOUT = 60.0
VERDICT_WAIT = 5.0  # seconds to wait for a message's verdict line after its conversation
CLIENT_TIMEOUT = 30.0
_REPLY_NAMES = {getattr(c, name): name.removeprefix("SMFIR_").lower()
                for name in dir(c) if name.startswith("SMFIR_")}
_EDITS = frozenset({c.SMFIR_ADDHEADER, c.SMFIR_INSHEADER, c.SMFIR_CHGHEADER, c.SMFIR_ADDRCPT,
                    c.SMFIR_DELRCPT, c.SMFIR_ADDRCPT_PAR, c.SMFIR_CHGFROM, c.SMFIR_REPLBODY})
_MS_FIELD = re.compile(r" ms=\S*")
_PROCESS_ID = re.compile(r"\bprocess (\d+)")
_VERDICT = re.compile(r"[A-Za-z0-9]+: action=")  # as verdictlog.parse_verdict_line finds it


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """What one commit's daemon did with one message, as comparable lines."""

    index: int
    queue_id: str
    message: BenchMessage
    lines: tuple[str, ...]  # "category: text"


@dataclass(frozen=True, slots=True)
class Transcript:
    """Everything one commit's daemon did with the corpus."""

    tree: SourceTree
    imported: str
    negotiated: str
    messages: tuple[MessageRecord, ...]
    outside: tuple[str, ...]  # log lines written before the first and after the last message
    exit_status: int
    seconds: float


def describe_negotiation(negotiated: Negotiated) -> str:
    symlists = " ".join(f"{where}:{names}" for where, names in negotiated.symlists)
    return (f"version {negotiated.version} actions 0x{negotiated.actions:x} "
            f"protocol 0x{negotiated.protocol:x} symlists [{symlists}]")


def describe_reply(stage: str, cmd: str, fields: dict[str, Any]) -> str:
    """One milter reply as a line: "reply rcpt: replycode smtpcode='550' ..."."""
    category = "edit" if cmd in _EDITS else "quarantine" if cmd == c.SMFIR_QUARANTINE else "reply"
    name = _REPLY_NAMES.get(cmd, repr(cmd))
    details = " ".join(f"{key}={value!r}" for key, value in sorted(fields.items()))
    return f"{category} {stage}: {name} {details}".rstrip()


def normalise_log_line(line: str, daemon: Daemon) -> str:
    """`line` without what differs between any two runs: timing, paths, port, pids."""
    line = _MS_FIELD.sub("", line)
    line = line.replace(str(daemon.workdir), "<run>").replace(str(daemon.tree.root), "<tree>")
    line = line.replace(str(daemon.port), "<port>")
    return _PROCESS_ID.sub("process <pid>", line)


def _complete_lines(text: str) -> list[str]:
    """The lines of `text` that end in a newline (the last one may still be being written)."""
    return text[: text.rfind("\n") + 1].splitlines()


def _converse(client: MilterClient, message: BenchMessage, queue_id: str) -> list[str]:
    try:
        outcome = client.converse(message, queue_id)
    except (OSError, MilterProtocolError) as error:
        return [f"error: {type(error).__name__}: {error}"]
    return [describe_reply(stage, cmd, fields) for stage, cmd, fields in outcome.replies]


def _log_since(daemon: Daemon, offset: int) -> tuple[list[str], int]:
    """The log lines after `offset`, once a verdict line is among them (or the wait is over)."""
    deadline = time.monotonic() + VERDICT_WAIT
    while True:
        text = daemon.log_text()[offset:]
        complete = text[: text.rfind("\n") + 1]
        if _VERDICT.search(complete) or time.monotonic() > deadline:
            lines = complete.splitlines()
            if not _VERDICT.search(complete):
                lines.append(f"(no verdict line within {VERDICT_WAIT:g} s)")
            return lines, offset + len(complete)
        time.sleep(0.005)


def run_tree(tree: SourceTree, corpus: Corpus, nameserver: str, workdir: Path) -> Transcript:
    """Send the whole corpus to `tree`'s daemon, one message at a time; what it did."""
    imported = imported_from(tree)
    started = time.monotonic()
    daemon = Daemon(tree, workdir, nameserver)
    client = MilterClient(daemon.spec, CLIENT_TIMEOUT)
    negotiated = daemon.start(client, START_TIMEOUT)
    records: list[MessageRecord] = []
    try:
        outside = _complete_lines(daemon.log_text())
        offset = sum(len(line) + 1 for line in outside)
        for index, message in enumerate(corpus.messages):
            queue_id = f"4C{index:08X}"
            replies = _converse(client, message, queue_id)
            log_lines, offset = _log_since(daemon, offset)
            lines = replies + [f"log: {normalise_log_line(line, daemon)}" for line in log_lines]
            records.append(MessageRecord(index, queue_id, message, tuple(lines)))
            if (index + 1) % 50 == 0:
                print(f"compare: {tree.label}: {index + 1}/{len(corpus.messages)} messages",
                      file=sys.stderr, flush=True)
    finally:
        exit_status = daemon.stop()
    outside += daemon.log_text()[offset:].splitlines()
    with (workdir / "transcript.txt").open("w") as out:  # for a look by hand (--keep)
        for record in records:
            out.write(f"message {record.index} {record.queue_id}\n")
            out.writelines(f"  {line}\n" for line in record.lines)
    return Transcript(
        tree=tree, imported=imported, negotiated=describe_negotiation(negotiated),
        messages=tuple(records),
        outside=tuple(normalise_log_line(line, daemon) for line in outside),
        exit_status=exit_status, seconds=time.monotonic() - started)


def _category(line: str) -> str:
    return line.split(":", 1)[0].split(" ", 1)[0]


def compare(old: Transcript, new: Transcript, show: int) -> tuple[int, list[str]]:
    """(number of differences, report lines)."""
    report: list[str] = []
    differences = 0
    if old.negotiated != new.negotiated:
        differences += 1
        report += ["option negotiation differs:", f"- {old.negotiated}", f"+ {new.negotiated}"]
    if old.exit_status != new.exit_status:
        differences += 1
        report.append(f"exit status on SIGTERM differs: {old.exit_status} -> {new.exit_status}")
    by_category: Counter[str] = Counter()
    shown = 0
    differing = 0
    for before, after in zip(old.messages, new.messages, strict=True):
        if before.lines == after.lines:
            continue
        differing += 1
        for category in {_category(line) for line in before.lines + after.lines}:
            if ([x for x in before.lines if _category(x) == category]
                    != [x for x in after.lines if _category(x) == category]):
                by_category[category] += 1
        if shown < show:
            shown += 1
            m = before.message
            report.append(f"message {before.index} ({m.kind}, queue id {before.queue_id}, "
                          f"from <{m.mail_from}>, client {m.client_ip}):")
            diff = difflib.unified_diff(before.lines, after.lines, lineterm="", n=1)
            report += [f"    {line}" for line in list(diff)[2:]]
    differences += differing
    outside = list(difflib.unified_diff(old.outside, new.outside, lineterm="", n=1))[2:]
    if outside:
        differences += 1
        report.append("log lines outside any message (start, stop) differ:")
        report += [f"    {line}" for line in outside]
    total = len(old.messages)
    summary = f"messages differing: {differing} of {total}"
    if by_category:
        summary += " (" + ", ".join(f"{k} {v}" for k, v in sorted(by_category.items())) + ")"
    if differing > shown:
        summary += f"; the first {shown} shown"
    report.append(summary)
    return differences, report


def _describe(transcript: Transcript) -> str:
    actions = Counter(
        next((line.split(": ", 1)[1].split(" ", 1)[0] for line in reversed(record.lines)
              if line.startswith(("reply ", "error"))), "none")
        for record in transcript.messages)
    commit = transcript.tree.commit[:12] or "(directory)"
    return (f"{transcript.tree.label} = {commit}: trustmilter from {transcript.imported}; "
            f"{transcript.seconds:.1f} s; last replies: "
            + ", ".join(f"{k} {v}" for k, v in sorted(actions.items())))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare two commits' daemons on the benchmark corpus (exit 0: identical).")
    parser.add_argument("old", help="commit (or tree directory) before")
    parser.add_argument("new", help="commit (or tree directory) after")
    parser.add_argument("--messages", type=int, default=300,
                        help="corpus messages (default 300, the benchmark's)")
    parser.add_argument("--domains", type=int, default=200, help="sender domains (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--show", type=int, default=20,
                        help="differing messages printed in full (default 20)")
    parser.add_argument("--corpus-file", type=Path,
                        help="pickled corpus to reuse (made and kept there if missing)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (trees, policies, daemon logs, "
                             "run-old/transcript.txt and run-new/transcript.txt)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.messages < 1 or not 1 <= args.domains <= 500 or args.show < 0:
        print("compare: --messages must be positive, --domains 1-500", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="trustmilter-compare-"))
    dns = DnsTestServer()
    try:
        trees = [source_tree(spec, workdir / "trees") for spec in (args.old, args.new)]
        corpus = load_corpus(args.corpus_file, seed=args.seed, messages=args.messages,
                             domains=args.domains)
        print(f"compare: corpus of {len(corpus.messages)} messages: " + ", ".join(
            f"{kind} {count}" for kind, count in sorted(corpus.kinds().items())),
            file=sys.stderr, flush=True)
        dns.start()
        dns.load(served_zone(corpus))
        transcripts = [run_tree(tree, corpus, dns.nameserver, workdir / f"run-{side}")
                       for side, tree in (("old", trees[0]), ("new", trees[1]))]
    except RigError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    finally:
        dns.close()
        if args.keep:
            print(f"compare: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    old, new = transcripts
    differences, report = compare(old, new, args.show)
    print(f"old: {_describe(old)}")
    print(f"new: {_describe(new)}")
    print(f"negotiated: {old.negotiated}")
    print("\n".join(report))
    print("IDENTICAL" if differences == 0 else f"DIFFERENT ({differences} differences)")
    return 0 if differences == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
