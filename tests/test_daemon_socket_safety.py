"""`trustmilter run` never takes over a live daemon's socket, and a busy port is one line.

Real processes only: the daemon under test (`trustmilter run`), a second
one started against it, and sockets this test binds itself to play
"another process". Messages go through the milter protocol
(`trustmilter.bench.client`), as an MTA sends them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from keys import message
from trustmilter.bench.client import MilterClient
from trustmilter.bench.corpus import BenchMessage
from trustmilter.config.socket import parse_socket
from trustmilter.testing.daemon import DaemonProcess, free_port, write_policy

MAIL = BenchMessage(
    kind="unsigned", client_ip="192.0.2.10", client_name="mail.example.com",
    helo="mail.example.com", mail_from="alice@example.com",
    rcpts=("support@example.org",), raw=message(),
)
ZONE = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
example.org.               300 IN MX  10 mx.example.org.
"""
REFUSAL_TIMEOUT = 60  # a refusing start-up takes seconds; one that serves never ends


def run_second(policy: Path, socket_spec: str) -> subprocess.CompletedProcess[str]:
    """`trustmilter run` as an admin would start it by hand; it must refuse, not serve."""
    return subprocess.run(
        [sys.executable, "-m", "trustmilter", "run", "--policy", str(policy),
         "--socket", socket_spec, "--foreground-log"],
        capture_output=True, text=True, timeout=REFUSAL_TIMEOUT, check=False,
        stdin=subprocess.DEVNULL,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def serves(spec: str) -> bool:
    outcome = MilterClient(parse_socket(spec), timeout=20).converse(MAIL)
    return outcome.action == "accept"


def identity(path: Path) -> tuple[int, int]:
    status = os.lstat(path)
    return status.st_dev, status.st_ino


def test_a_second_instance_refuses_a_live_unix_socket_and_the_first_keeps_serving(
    tmp_path: Path, dns_server
):
    dns_server.load(ZONE)
    port = free_port()
    policy = write_policy(tmp_path / "policy.yaml", "mx.example.org", dns_server.nameserver,
                          metrics={"listen": f"127.0.0.1:{port}"})
    path = tmp_path / "trustmilter.sock"
    first = DaemonProcess.start(policy, tmp_path / "first.log", socket_spec=f"unix:{path}")
    try:
        [pid] = re.findall(r"listening on .* process (\d+)\)", first.log_text())
        assert (f"metrics served by process {pid} on http://127.0.0.1:{port}/metrics"
                in first.log_text())
        served_by_first = identity(path)
        second = run_second(policy, f"unix:{path}")
        assert second.returncode == 1, second.stderr
        line = one_line(second.stderr)
        assert f"unix:{path}" in line and "another process serves this socket" in line
        assert identity(path) == served_by_first  # not replaced, not removed
        assert serves(first.spec)
        assert first.process.poll() is None
    finally:
        assert first.stop() == 0
    assert not path.exists()  # ours: removed at our stop


def test_a_stale_socket_is_replaced_and_a_path_taken_since_is_left_at_stop(
    tmp_path: Path, dns_server
):
    dns_server.load(ZONE)
    policy = write_policy(tmp_path / "policy.yaml", "mx.example.org", dns_server.nameserver)
    path = tmp_path / "trustmilter.sock"
    with socket.socket(socket.AF_UNIX) as gone:  # a daemon killed without cleaning up
        gone.bind(str(path))
    running = DaemonProcess.start(policy, tmp_path / "run.log", socket_spec=f"unix:{path}")
    with socket.socket(socket.AF_UNIX) as other:
        try:
            assert f"removed a stale socket at {path} (nothing answered on it)" in (
                running.log_text())
            assert serves(running.spec)
            path.unlink()  # as a careless second instance of old did
            other.bind(str(path))
            other.listen()
            theirs = identity(path)
        finally:
            assert running.stop() == 0
        assert identity(path) == theirs
        assert f"{path} is no longer our socket" in running.log_text()


def test_a_file_that_is_not_a_socket_is_refused_and_kept(tmp_path: Path, dns_server):
    policy = write_policy(tmp_path / "policy.yaml", "mx.example.org", dns_server.nameserver)
    path = tmp_path / "trustmilter.sock"
    path.write_text("not a socket\n")
    done = run_second(policy, f"unix:{path}")
    assert done.returncode == 2, done.stderr  # configuration: fix it first
    assert one_line(done.stderr) == (
        f"trustmilter: --socket unix:{path}: exists and is not a socket; not removing it")
    assert path.read_text() == "not a socket\n"


def test_a_busy_milter_port_is_one_line_naming_it(tmp_path: Path, dns_server):
    policy = write_policy(tmp_path / "policy.yaml", "mx.example.org", dns_server.nameserver)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_second(policy, f"inet:{port}@127.0.0.1")
    assert done.returncode == 1, done.stderr  # at run time: another process has it
    assert one_line(done.stderr) == (
        f"trustmilter: --socket inet:{port}@127.0.0.1: port {port} is in use by another process")


def test_a_busy_metrics_port_is_one_line_naming_it(tmp_path: Path, dns_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        policy = write_policy(tmp_path / "policy.yaml", "mx.example.org", dns_server.nameserver,
                              metrics={"listen": f"127.0.0.1:{port}"})
        path = tmp_path / "trustmilter.sock"
        done = run_second(policy, f"unix:{path}")
    assert done.returncode == 1, done.stderr
    assert one_line(done.stderr) == (
        f"trustmilter: metrics.listen 127.0.0.1:{port}: port {port} is in use by another process")
    assert not path.exists()  # refused before the socket was taken


def test_run_help_documents_the_exit_statuses():
    done = subprocess.run([sys.executable, "-m", "trustmilter", "run", "--help"],
                          capture_output=True, text=True, timeout=60, check=True)
    text = " ".join(done.stdout.split())
    assert "exit status: 0 stopped as asked" in text
    assert "1 could not run now: the socket or a port is in use by another process" in text
    assert "2 the configuration cannot work: an invalid or unreadable policy" in text
