"""`trustmilter run` as a process: reload on SIGHUP, clean stop on SIGTERM,
and with milter.processes: 2 one /metrics endpoint for both processes.

Driven over its real socket by the benchmark's milter-protocol client
(an MTA stand-in), against the DNS test server. The metrics tests scrape
the real endpoint on 127.0.0.1 and also read each process's own file in
the shared directory, to know which process counted what.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from keys import message
from trustmilter.authresults import parse_header_value
from trustmilter.bench.client import MilterClient
from trustmilter.bench.corpus import BenchMessage
from trustmilter.config.daemon import MetricsConfig, MilterConfig
from trustmilter.config.settings import Settings
from trustmilter.config.socket import parse_socket
from trustmilter.testing.daemon import DaemonProcess, free_port

ZONE = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
example.org.               300 IN MX  10 mx.example.org.
"""
MAIL = BenchMessage(
    kind="unsigned", client_ip="192.0.2.10", client_name="mail.example.com",
    helo="mail.example.com", mail_from="alice@example.com",
    rcpts=("support@example.org",), raw=message(),
)


def policy_text(dns_server, authserv_id: str) -> str:
    return (
        f"authserv_id: {authserv_id}\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        "state: {backend: memory}\n"
    )


def listening_pids(log: str) -> list[int]:
    """The pid of every "listening on ... process N)" line, in order."""
    return [int(pid) for pid in re.findall(r"listening on .* process (\d+)\)", log)]


def authserv_id_seen(daemon: DaemonProcess) -> str:
    """Send one message; the authserv-id of the Authentication-Results it got."""
    outcome = MilterClient(parse_socket(daemon.spec), timeout=20).converse(MAIL)
    assert outcome.action == "accept", outcome
    [value] = outcome.headers("Authentication-Results")
    return str(parse_header_value(value.strip()).authserv_id)


@pytest.fixture
def daemon(tmp_path: Path, dns_server):
    dns_server.load(ZONE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(dns_server, "mx-one.example.org"))
    running = DaemonProcess.start(policy, tmp_path / "trustmilter.log")
    yield running, policy
    running.stop()


def test_sighup_with_a_broken_policy_keeps_the_old_one(daemon, dns_server):
    running, policy = daemon
    assert authserv_id_seen(running) == "mx-one.example.org"

    policy.write_text("dns:\n  timeout: soon\n")  # invalid: the reload must be refused
    mark = len(running.log_text())
    running.reload()
    running.wait_for_log("policy reload refused", after=mark)
    assert f"{policy}:2: dns.timeout" in running.log_text()[mark:]
    assert authserv_id_seen(running) == "mx-one.example.org"  # still the old policy

    policy.write_text(policy_text(dns_server, "mx-two.example.org"))
    mark = len(running.log_text())
    running.reload()
    running.wait_for_log("policy reloaded", after=mark)
    assert authserv_id_seen(running) == "mx-two.example.org"


def test_sigterm_stops_cleanly(daemon):
    running, _ = daemon
    assert running.stop() == 0
    assert "stopped (process " in running.log_text()


def test_sigterm_ends_the_listener_without_waiting_out_its_five_seconds(daemon):
    """libmilter's listener sees its stop flag only when its 5-second wait for a
    connection ends; the supervisor wakes it by connecting. Stopped right after
    it started listening (a fresh wait), the milter would take about 5 s without."""
    running, _ = daemon
    started = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - started < 3.0
    assert "stopped (process " in running.log_text()


def test_a_bad_policy_stops_start_up_with_one_line(tmp_path: Path):
    import subprocess
    import sys

    policy = tmp_path / "policy.yaml"
    policy.write_text("milter:\n  socket: tcp:25\n")
    done = subprocess.run(
        [sys.executable, "-m", "trustmilter", "run", "--policy", str(policy)],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2  # a configuration error: systemd does not restart for it
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"{policy}:2: milter.socket" in done.stderr


def test_several_processes_share_the_socket_reload_and_stop_together(tmp_path: Path, dns_server):
    """milter.processes: 2 — both serve, both reload on SIGHUP, none is left after SIGTERM."""

    dns_server.load(ZONE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(dns_server, "mx-one.example.org") + "milter: {processes: 2}\n")
    running = DaemonProcess.start(policy, tmp_path / "trustmilter.log")
    try:
        running.wait_for_log("listening on", after=running.log_text().index("listening on") + 1)
        for _ in range(6):
            assert authserv_id_seen(running) == "mx-one.example.org"
        policy.write_text(policy_text(dns_server, "mx-two.example.org") + "milter: {processes: 2}\n")
        mark = len(running.log_text())
        running.reload()
        running.wait_for_log("policy reloaded", after=mark)
        running.wait_for_log("policy reloaded", after=running.log_text().index("policy reloaded", mark) + 1)
        for _ in range(6):  # whichever process answers, it has the new policy
            assert authserv_id_seen(running) == "mx-two.example.org"
        pids = set(listening_pids(running.log_text()))
        assert len(pids) == 2
    finally:
        assert running.stop() == 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()
    assert running.log_text().count("stopped (process") == 2


# ---- milter.processes > 1 with metrics.listen: one endpoint for all processes ----


def metrics_policy(dns_server, port: int) -> str:
    return (policy_text(dns_server, "mx-one.example.org")
            + f"milter: {{processes: 2}}\nmetrics: {{listen: '127.0.0.1:{port}'}}\n")


def start_with_metrics(tmp_path: Path, dns_server) -> tuple[DaemonProcess, int]:
    """Two milter processes with metrics on a free port, once both listen."""
    dns_server.load(ZONE)
    port = free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(metrics_policy(dns_server, port))
    running = DaemonProcess.start(policy, tmp_path / "trustmilter.log")
    try:
        running.wait_for_log("listening on", after=running.log_text().index("listening on") + 1)
    except BaseException:
        running.stop()
        raise
    return running, port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the daemon's /metrics as {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def messages_total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return sum(value for (name, _), value in samples.items() if name == "trustmilter_messages_total")


def shared_dir(running: DaemonProcess) -> tuple[Path, int]:
    """The metrics directory the daemon logged, and the pid of the process serving it."""
    match = re.search(r"metrics of 2 processes recorded in (\S+), served by process (\d+)",
                      running.log_text())
    assert match, running.log_tail()
    return Path(match[1]), int(match[2])


def counted_by_pid(directory: Path) -> dict[int, float]:
    """Messages each process recorded, read from its own file (counter_PID.db)."""
    counted = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        counted[pid] = sum(
            sample.value
            for metric in MultiProcessCollector.merge([str(path)])
            for sample in metric.samples
            if sample.name == "trustmilter_messages_total"
        )
    return counted


def send(running: DaemonProcess, count: int) -> None:
    """`count` messages over concurrent connections, each accepted."""
    client = MilterClient(parse_socket(running.spec), timeout=20)
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda n: client.converse(MAIL, f"4MP{n:06d}"), range(count)))
    assert all(outcome.action == "accept" for outcome in outcomes), outcomes


def settled(port: int, sent: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A scrape once every message is counted and no transaction is open."""
    deadline = time.monotonic() + 10
    while True:  # a connection's close may be counted just after the client has its reply
        samples = scrape(port)
        done = (messages_total(samples) >= sent
                and samples.get(("trustmilter_transactions_in_flight", frozenset())) == 0)
        if done or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_several_processes_share_one_metrics_endpoint(tmp_path: Path, dns_server):
    """milter.processes: 2 with metrics.listen: /metrics sums both processes'
    counters, whichever served the messages; the directory goes at SIGTERM."""
    running, port = start_with_metrics(tmp_path, dns_server)
    try:
        directory, server_pid = shared_dir(running)
        assert directory.stat().st_mode & 0o777 == 0o700
        # Both processes record into it from the start (the reload series exist at zero).
        assert len(counted_by_pid(directory)) == 2
        sent = 0
        for _ in range(10):  # until both processes have served some (the kernel picks)
            send(running, 8)
            sent += 8
            settled(port, sent)
            if all(counted_by_pid(directory).values()):
                break
        by_pid = counted_by_pid(directory)
        assert all(by_pid.values()), f"one process served every message: {by_pid}"
        assert server_pid in by_pid
        samples = settled(port, sent)
        assert messages_total(samples) == sent == sum(by_pid.values())
        assert samples[("trustmilter_messages_total", frozenset({("action", "accept")}))] == sent
        assert samples[("trustmilter_transactions_in_flight", frozenset())] == 0
        # One series per label set, not one per process.
        assert samples[("trustmilter_policy_reloads_total", frozenset({("outcome", "ok")}))] == 0
    finally:
        assert running.stop() == 0
    assert running.log_text().count("stopped (process") == 2
    assert not directory.exists()


def test_a_worker_that_exits_is_marked_dead(tmp_path: Path, dns_server):
    """Its live gauge drops out of the sum; what it counted stays counted; its
    replacement records into the same directory."""
    running, port = start_with_metrics(tmp_path, dns_server)
    try:
        directory, server_pid = shared_dir(running)
        [worker] = set(listening_pids(running.log_text())) - {server_pid}
        send(running, 8)
        before = counted_by_pid(directory)
        assert (directory / f"gauge_livesum_{worker}.db").exists()

        mark = len(running.log_text())
        os.kill(worker, signal.SIGKILL)
        running.wait_for_log(f"worker process {worker} was killed by SIGKILL", after=mark)
        assert not (directory / f"gauge_livesum_{worker}.db").exists()
        running.wait_for_log("listening on", after=mark)
        [newcomer] = listening_pids(running.log_text()[mark:])
        assert (directory / f"gauge_livesum_{newcomer}.db").exists()
        counted = counted_by_pid(directory)
        # A dead worker's counts stay in the sum; its replacement starts at zero.
        assert {pid: counted[pid] for pid in before} == before and counted[newcomer] == 0
        send(running, 4)
        samples = settled(port, 12)
        assert messages_total(samples) == 12
        assert samples[("trustmilter_transactions_in_flight", frozenset())] == 0
    finally:
        assert running.stop() == 0
    assert not directory.exists()


def test_metrics_with_several_processes_is_a_valid_policy() -> None:
    """It used to be refused: one endpoint could not speak for several processes."""
    policy = Settings(milter=MilterConfig(processes=4),
                    metrics=MetricsConfig(listen="127.0.0.1:9425"))
    assert policy.milter.processes == 4 and policy.metrics.listen == "127.0.0.1:9425"
