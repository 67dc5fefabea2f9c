"""``trustmilter bench``: start everything, drive the load, print the table.

One run, in this order: generate the corpus (corpus.py) and serve its zone
from a DnsTestServer on 127.0.0.1; write a policy that asks only that
server; start ``trustmilter run`` and ask it for its option negotiation;
start the null milter (nullmilter.py) negotiating the same steps; send
trustmilter the whole corpus once at concurrency 8 (the "cold" row: its
DNS cache starts empty) and the null milter a few unmeasured messages;
then, for each concurrency, measure the null milter and trustmilter one
after the other, so both see the same machine.

A measured point sends up to ``--messages`` messages (the corpus over
again as needed), or stops when ``--seconds`` have passed, whichever comes
first; each message is its own milter connection, as Postfix opens one per
SMTP session. Figures per point: messages per second, p50/p95/p99 of the
whole conversation's latency, the milter's CPU (user+system, all threads
of its process and its children, from /proc) per message, and its peak
RSS (VmHWM, summed over those processes) so far. "p99
added latency" is trustmilter's p99 minus the null milter's at the same
concurrency.

Everything started is stopped at the end, also on errors and Ctrl-C:
milters by their own process group (SIGTERM, then SIGKILL after a grace
period), the DNS server by closing it. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from trustmilter.bench.client import MilterClient, MilterProtocolError, Negotiated, Outcome
from trustmilter.bench.corpus import Corpus, make_corpus
from trustmilter.bench.options import BenchOptions
from trustmilter.config.load import load_settings
from trustmilter.config.socket import SocketSpec, parse_socket
from trustmilter.daemon.verdictlog import parse_verdict_line
from trustmilter.testing.dnsserver import DnsTestServer

READY_TIMEOUT = 60.0  # seconds a milter may take to start listening
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
NULL_WARMUP = 50  # unmeasured messages for the null milter
COLD_CONCURRENCY = 8
TARGET_RATIO = 0.60  # issue 3: at least 60 % of the null milter's throughput at c=8
TARGET_ADDED_P99_MS = 20.0  # ... and p99 added latency under 20 ms
AUTHSERV_ID = "mx.bench.example.org"


class BenchError(Exception):
    """The benchmark could not run (a milter did not start, died, ...)."""


@dataclass(frozen=True, slots=True)
class Point:
    """One measured (milter, concurrency) point."""

    milter: str
    concurrency: int
    label: str  # "warm", or "cold" for trustmilter's first pass
    messages: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_ms_per_message: float
    peak_rss_mb: float
    loadgen_cpu_ms_per_message: float
    actions: dict[str, int] = field(default_factory=dict)
    first_error: str = ""


@dataclass(frozen=True, slots=True)
class BenchReport:
    date: str
    cpus: int
    options: BenchOptions
    corpus: dict[str, int]
    negotiated: dict[str, dict[str, str]]
    points: tuple[Point, ...]
    verdict_lines: dict[str, int]

    def point(self, milter: str, concurrency: int, label: str = "warm") -> Point | None:
        for point in self.points:
            if (point.milter, point.concurrency, point.label) == (milter, concurrency, label):
                return point
        return None


# ---- processes ---------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the "(name)", which may hold spaces: field 3 onwards."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """`root` and its descendants (``trustmilter run`` supervises a child process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU of every thread of `root` and its descendants (stat fields 14, 15)."""
    total = 0.0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tree_peak_rss_mb(root: int) -> float:
    """Peak resident set size (VmHWM) of `root` plus that of each descendant."""
    total_kb = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


class MilterProcess:
    """A milter started in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], spec: SocketSpec, log: Path) -> None:
        self.name, self.argv, self.spec, self.log = name, argv, spec, log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        with self.log.open("wb") as output:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to stop it and its children
            )

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, client: MilterClient) -> Negotiated:
        """Its option negotiation, once it answers; BenchError if it dies or never does."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if not self.alive():
                raise BenchError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                return client.negotiate()
            except (OSError, MilterProtocolError):
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name} not listening on {self.spec} after "
                                     f"{READY_TIMEOUT:g} s:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def wait(self, timeout: float) -> bool:
        """True when it has exited within `timeout`."""
        if self._process is None:
            return True
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


@contextlib.contextmanager
def _running(processes: list[MilterProcess]) -> Iterator[None]:
    """Stop every process in `processes` on the way out, in parallel, whatever happens."""
    try:
        yield
    finally:
        for process in processes:
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in processes:
            if not process.wait(max(0.0, deadline - time.monotonic())):
                process.signal(signal.SIGKILL)
                process.wait(5.0)


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the milter binds it just after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _socket_spec(kind: str, workdir: Path, name: str) -> SocketSpec:
    if kind == "unix":
        return parse_socket(f"unix:{workdir / (name + '.sock')}")
    return parse_socket(f"inet:{_free_port()}@127.0.0.1")


def policy_text(nameserver: str, spec: SocketSpec, workdir: Path, processes: int = 1) -> str:
    """The shipped defaults, except: DNS only from the bench server, our socket,
    stderr log, the SQLite state in the bench's own directory, and rate tiers
    too high to trip, for unauthenticated claims too (the corpus repeats
    senders far beyond 20 an hour; the state is still written for every
    message, so its cost is measured)."""
    return (
        f"authserv_id: {AUTHSERV_ID}\n"
        "dns:\n"
        f"  nameservers: ['{nameserver}']\n"
        "  timeout: 1.0\n"
        "  lifetime: 3.0\n"
        "milter:\n"
        f"  socket: '{spec}'\n"
        f"  processes: {processes}\n"
        "logging:\n"
        "  destination: stderr\n"
        "state:\n"
        "  backend: sqlite\n"
        f"  sqlite_path: '{workdir / 'state.sqlite3'}'\n"
        "checks:\n"
        "  rate: {quarantine_after: 1000000, reject_after: 2000000,\n"
        "         unauthenticated_quarantine_after: 1000000,\n"
        "         unauthenticated_reject_after: 2000000}\n"
    )


# ---- measuring ---------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(slots=True)
class _Tally:
    """What the workers of one point collect (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    next_index: int = 0
    latencies: list[float] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    first_error: str = ""


def _action_key(outcome: Outcome) -> str:
    action = "quarantine" if outcome.quarantine else outcome.action
    return f"{action}@{outcome.stage}" if outcome.stage != "eom" else action


def measure(client: MilterClient, process: MilterProcess, corpus: Corpus, *, milter: str,
            concurrency: int, messages: int, seconds: float, stop: threading.Event,
            label: str = "warm", queue_prefix: str = "B") -> Point:
    """Send up to `messages` messages over `concurrency` connections at a time."""
    tally = _Tally()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            with tally.lock:
                index = tally.next_index
                if index >= messages:
                    return
                tally.next_index += 1
            message = corpus.messages[index % len(corpus.messages)]
            started = time.perf_counter()
            try:
                outcome = client.converse(message, f"{queue_prefix}{index:09X}")
            except (OSError, MilterProtocolError) as error:
                with tally.lock:
                    tally.errors += 1
                    tally.first_error = tally.first_error or f"{type(error).__name__}: {error}"
                continue
            elapsed = time.perf_counter() - started
            with tally.lock:
                tally.latencies.append(elapsed)
                tally.actions[_action_key(outcome)] += 1

    cpu_before, own_before = tree_cpu_seconds(process.pid), time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True, name=f"bench-{i}")
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Joined with a timeout so Ctrl-C reaches the main thread; a worker
        # ends within one socket timeout after the deadline.
        while thread.is_alive():
            thread.join(0.2)
    wall = time.perf_counter() - started
    cpu = tree_cpu_seconds(process.pid) - cpu_before
    own = time.process_time() - own_before
    done = len(tally.latencies)
    latencies = sorted(tally.latencies)
    per = max(done, 1)
    return Point(
        milter=milter, concurrency=concurrency, label=label, messages=done,
        errors=tally.errors, seconds=round(wall, 3),
        per_second=round(done / wall, 1) if wall > 0 else 0.0,
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p95_ms=round(percentile(latencies, 95) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        cpu_ms_per_message=round(cpu * 1000 / per, 3),
        peak_rss_mb=round(tree_peak_rss_mb(process.pid), 1),
        loadgen_cpu_ms_per_message=round(own * 1000 / per, 3),
        actions=dict(sorted(tally.actions.items())),
        first_error=tally.first_error,
    )


def _verdict_lines(log: Path) -> dict[str, int]:
    """Verdict log lines per action in trustmilter's log (one per message decided)."""
    counts: Counter[str] = Counter()
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        try:
            _queue_id, fields = parse_verdict_line(line)
        except ValueError:
            continue
        counts[fields.get("action", "?")] += 1
    return dict(sorted(counts.items()))


def _flags(negotiated: Negotiated) -> dict[str, str]:
    return {"actions": f"0x{negotiated.actions:x}", "protocol": f"0x{negotiated.protocol:x}",
            "symlists": " ".join(f"{w}:{n}" for w, n in negotiated.symlists)}


def run_bench(options: BenchOptions, progress: Callable[[str], None] = lambda _m: None,
              trustmilter_argv: Sequence[str] | None = None) -> BenchReport:
    """The whole benchmark; raises BenchError when it cannot run."""
    progress(f"corpus: {options.corpus_messages} messages, {options.domains} domains "
             f"(seed {options.seed})")
    corpus = make_corpus(options.seed, options.corpus_messages, options.domains)
    workdir = Path(tempfile.mkdtemp(prefix="trustmilter-bench-"))
    dns = DnsTestServer()
    stop = threading.Event()
    try:
        dns.start()
        dns.load(corpus.zone)
        trust_spec = _socket_spec(options.socket_kind, workdir, "trustmilter")
        null_spec = _socket_spec(options.socket_kind, workdir, "null")
        settings = workdir / "policy.yaml"
        settings.write_text(policy_text(dns.nameserver, trust_spec, workdir, options.processes))
        load_settings(settings)  # a policy this version refuses should fail here, not in the daemon
        argv = list(trustmilter_argv or [sys.executable, "-m", "trustmilter", "run"])
        trust = MilterProcess(
            "trustmilter",
            [*argv, "--policy", str(settings), "--socket", str(trust_spec), "--foreground-log"],
            trust_spec, workdir / "trustmilter.log")
        trust_client = MilterClient(trust_spec, options.timeout)
        processes = [trust]
        with _running(processes):
            trust.start()
            trust_shape = trust.wait_ready(trust_client)
            progress(f"trustmilter ready on {trust_spec} (protocol 0x{trust_shape.protocol:x})")
            null = MilterProcess(
                "null milter",
                [sys.executable, "-m", "trustmilter.bench.nullmilter", "--socket", str(null_spec),
                 "--protocol", hex(trust_shape.protocol), "--actions", hex(trust_shape.actions)],
                null_spec, workdir / "null.log")
            processes.append(null)
            null.start()
            null_client = MilterClient(null_spec, options.timeout)
            null_shape = null.wait_ready(null_client)

            def point(milter: str, concurrency: int, count: int, label: str = "warm") -> Point:
                process, client = (trust, trust_client) if milter == "trustmilter" else (
                    null, null_client)
                result = measure(client, process, corpus, milter=milter, concurrency=concurrency,
                                 messages=count, seconds=options.seconds, stop=stop, label=label,
                                 queue_prefix=f"{milter[0].upper()}{concurrency:02d}{label[0]}")
                if not process.alive():
                    raise BenchError(f"{process.name} died during the run:\n{process.log_tail()}")
                progress(f"{milter} c={concurrency} {label}: {result.per_second} msg/s, "
                         f"p99 {result.p99_ms} ms, {result.errors} errors")
                return result

            points = [point("trustmilter", COLD_CONCURRENCY, len(corpus.messages), "cold")]
            point("null", COLD_CONCURRENCY, NULL_WARMUP, "warmup")
            for concurrency in options.concurrency:
                points.append(point("null", concurrency, options.messages))
                points.append(point("trustmilter", concurrency, options.messages))
        verdicts = _verdict_lines(trust.log)
        return BenchReport(
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            cpus=os.cpu_count() or 0,
            options=options,
            corpus=corpus.kinds(),
            negotiated={"trustmilter": _flags(trust_shape), "null": _flags(null_shape)},
            points=tuple(points),
            verdict_lines=verdicts,
        )
    except BaseException:
        stop.set()  # workers still running (Ctrl-C) end at their next message
        raise
    finally:
        stop.set()
        dns.close()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- reporting ---------------------------------------------------------------


def markdown(report: BenchReport) -> str:
    """The table and the comparison with the issue's targets."""
    lines = [
        f"trustmilter bench, {report.date}, {report.cpus} CPUs, "
        f"{report.options.socket_kind} sockets, {report.options.processes} trustmilter "
        f"process(es), corpus "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(report.corpus.items())),
        "",
        "| milter | conc. | msgs | errors | msg/s | p50 ms | p95 ms | p99 ms "
        "| CPU ms/msg | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.points:
        name = p.milter + (f" ({p.label})" if p.label != "warm" else "")
        lines.append(
            f"| {name} | {p.concurrency} | {p.messages} | {p.errors} | {p.per_second:g} "
            f"| {p.p50_ms:g} | {p.p95_ms:g} | {p.p99_ms:g} | {p.cpu_ms_per_message:g} "
            f"| {p.peak_rss_mb:g} |"
        )
    lines.append("")
    trust8, null8 = report.point("trustmilter", 8), report.point("null", 8)
    if trust8 and null8 and null8.per_second > 0:
        ratio = trust8.per_second / null8.per_second
        verdict = "meets" if ratio >= TARGET_RATIO else "below"
        lines.append(f"- throughput at concurrency 8: trustmilter {trust8.per_second:g} / null "
                     f"{null8.per_second:g} msg/s = {ratio:.0%} ({verdict} the "
                     f"{TARGET_RATIO:.0%} target)")
    added = []
    for concurrency in report.options.concurrency:
        trust, null = report.point("trustmilter", concurrency), report.point("null", concurrency)
        if trust and null:
            added.append(f"c={concurrency} {trust.p99_ms - null.p99_ms:+.1f} ms")
    if added:
        lines.append(f"- p99 added latency (trustmilter p99 - null p99; target < "
                     f"{TARGET_ADDED_P99_MS:g} ms): " + ", ".join(added))
    actions = Counter[str]()
    for p in report.points:
        if p.milter == "trustmilter":
            actions.update(p.actions)
    lines.append("- trustmilter decisions seen by the client: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(actions.items())))
    lines.append("- trustmilter verdict log lines: "
                 + (", ".join(f"{k} {v}" for k, v in report.verdict_lines.items()) or "none"))
    t, n = report.negotiated["trustmilter"], report.negotiated["null"]
    lines.append(f"- negotiated: trustmilter actions {t['actions']} protocol {t['protocol']}; "
                 f"null milter actions {n['actions']} protocol {n['protocol']}")
    loadgen = [p.loadgen_cpu_ms_per_message for p in report.points if p.label == "warm"]
    if loadgen:
        lines.append(f"- load generator CPU (this process, DNS server included): "
                     f"{min(loadgen):g} to {max(loadgen):g} ms/msg, on the same CPUs")
    errors = [f"{p.milter} c={p.concurrency}: {p.first_error}" for p in report.points
              if p.first_error]
    lines.extend(f"- first error, {e}" for e in errors)
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run from parsed arguments; 0 when measured, 1 when the bench could not run."""
    out = out or sys.stdout
    if args.messages < 1 or args.seconds <= 0 or args.corpus < 1 or not 1 <= args.domains <= 500:
        print("trustmilter: bench: --messages, --seconds, --corpus must be positive and "
              "--domains 1-500", file=sys.stderr)
        return 2
    options = BenchOptions(
        concurrency=args.concurrency, messages=args.messages, seconds=args.seconds,
        socket_kind=args.socket_kind, corpus_messages=args.corpus, domains=args.domains,
        seed=args.seed, processes=args.processes,
    )
    # SIGTERM, and SIGINT even where the shell started us with it ignored (a
    # background job), unwind like Ctrl-C so that run_bench stops what it started.
    previous = {signum: signal.signal(signum, _interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = run_bench(options, lambda text: print(f"bench: {text}", file=sys.stderr,
                                                      flush=True))
    except BenchError as error:
        print(f"trustmilter: bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trustmilter: bench: interrupted; everything started was stopped",
              file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    out.write(markdown(report))
    if args.json is not None:
        args.json.write_text(json.dumps(_as_json(report), indent=2) + "\n")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _as_json(report: BenchReport) -> dict[str, Any]:
    data = asdict(report)
    data["options"]["concurrency"] = list(report.options.concurrency)
    return data
