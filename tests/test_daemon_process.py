"""`trustmilter run` as a process: reload on SIGHUP, clean stop on SIGTERM.

Driven over its real socket by the benchmark's milter-protocol client
(an MTA stand-in), against the DNS test server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keys import message
from trustmilter.authresults import parse_header_value
from trustmilter.bench.client import MilterClient
from trustmilter.bench.corpus import BenchMessage
from trustmilter.daemon.socketspec import parse_socket
from trustmilter.testing.daemon import DaemonProcess

ZONE = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
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


def test_a_bad_policy_stops_start_up_with_one_line(tmp_path: Path):
    import subprocess
    import sys

    policy = tmp_path / "policy.yaml"
    policy.write_text("milter:\n  socket: tcp:25\n")
    done = subprocess.run(
        [sys.executable, "-m", "trustmilter", "run", "--policy", str(policy)],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
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
        pids = {int(word.rstrip(")")) for line in running.log_text().splitlines()
                if "listening on" in line for word in line.split()[-1:]}
        assert len(pids) == 2
    finally:
        assert running.stop() == 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()
    assert running.log_text().count("stopped (process") == 2
