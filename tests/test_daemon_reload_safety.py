"""Reloads that cannot knock the milter over: SIGHUP bursts, FIFOs and huge files at the policy path.

A real `trustmilter run` (supervisor, milter process, worker keeper and a
worker), messages through the milter protocol while it is attacked, and
the policy file replaced on disk as an admin (or an attacker with write
access to its directory) would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from keys import message
from trustmilter.authresults import parse_header_value
from trustmilter.bench.client import MilterClient, Outcome
from trustmilter.bench.corpus import BenchMessage
from trustmilter.config.socket import parse_socket
from trustmilter.daemon.policyfile import MAX_POLICY_BYTES
from trustmilter.testing.daemon import DaemonProcess, write_policy

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
SIGHUPS = 12_000
# Enough rules that one reload takes a while: SIGHUPs come far faster than
# the milter can act on them (the old supervisor's pipe filled up).
RULES = [{"name": f"held-{n}", "when": ["dmarc.fail", "helo.localhost"], "action": "quarantine",
          "reason": f"rule {n} of a large policy"} for n in range(1000)]


def send_sighups(pid: int) -> None:
    """SIGHUPs 0.2 ms apart, from a process of their own (this one's GIL is
    busy with the load): faster than any reload, slow enough that each is
    handled rather than merged by the kernel with the one before."""
    subprocess.run(
        [sys.executable, "-c", "import os, signal, sys, time\n"
         f"for _ in range({SIGHUPS}):\n"
         f"    os.kill({pid}, signal.SIGHUP)\n"
         "    time.sleep(0.0002)\n"],
        check=True, timeout=120,
    )


def converse(daemon: DaemonProcess, sender: str = "alice@example.com") -> Outcome:
    mail = dataclasses.replace(MAIL, mail_from=sender)
    return MilterClient(parse_socket(daemon.spec), timeout=30).converse(mail)


def authserv_id_seen(daemon: DaemonProcess, sender: str = "alice@example.com") -> str:
    outcome = converse(daemon, sender)
    assert outcome.action == "accept", outcome
    [value] = outcome.headers("Authentication-Results")
    return str(parse_header_value(value.strip()).authserv_id)


def wait_until_all_answer(daemon: DaemonProcess, authserv_id: str, timeout: float = 90) -> None:
    """Until six messages in a row (whichever process takes them) carry `authserv_id`."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while in_a_row < 6:
        assert time.monotonic() < deadline, daemon.log_tail()
        in_a_row = in_a_row + 1 if authserv_id_seen(daemon) == authserv_id else 0


class Load(threading.Thread):
    """Messages from ever new senders (no rate tier kicks in), one after another."""

    def __init__(self, daemon: DaemonProcess) -> None:
        super().__init__(daemon=True)
        self.daemon_process = daemon
        self.stopping = threading.Event()
        self.outcomes: list[tuple[str, str, float]] = []

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            start = time.monotonic()
            try:
                outcome = converse(self.daemon_process, f"load{n}@example.com")
            except OSError as error:  # counted as a failure, not lost with the thread
                self.outcomes.append(("error", str(error), time.monotonic() - start))
                continue
            self.outcomes.append((outcome.action, outcome.reply, time.monotonic() - start))


def test_a_sighup_burst_under_load_leaves_the_supervisor_serving_the_last_good_policy(
    tmp_path: Path, dns_server
):
    dns_server.load(ZONE)
    policy = tmp_path / "policy.yaml"
    sections = {
        "milter": {"processes": 2},
        "state": {"backend": "sqlite", "sqlite_path": str(tmp_path / "state" / "db.sqlite3")},
        "rules": RULES,
    }
    write_policy(policy, "mx-one.example.org", dns_server.nameserver, **sections)
    running = DaemonProcess.start(policy, tmp_path / "run.log")
    # The milter process leads its own process group (so do its workers):
    # should the supervisor die, the group is killed here, not left serving.
    [milter] = re.findall(r"listening on .* process (\d+)\)", running.log_text())[:1]
    milter_group = os.getpgid(int(milter))
    load = Load(running)
    try:
        assert authserv_id_seen(running) == "mx-one.example.org"
        write_policy(policy, "mx-two.example.org", dns_server.nameserver, **sections)
        load.start()
        send_sighups(running.process.pid)
        assert running.process.poll() is None, running.log_tail()
        wait_until_all_answer(running, "mx-two.example.org")
        load.stopping.set()
        load.join(timeout=60)

        mark = len(running.log_text())
        policy.write_text("dns:\n  timeout: soon\n")
        running.reload()
        running.wait_for_log("policy reload refused", after=mark, timeout=60)
        wait_until_all_answer(running, "mx-two.example.org")  # the last good one
    finally:
        load.stopping.set()
        status = running.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(milter_group, signal.SIGKILL)
    assert status == 0, running.log_tail()
    log = running.log_text()
    assert "Traceback" not in log, log[-3000:]
    # Coalesced: a handful of reloads per process, not one per SIGHUP.
    assert 2 <= log.count("policy reloaded from") < 200
    assert load.outcomes and {action for action, _, _ in load.outcomes} == {"accept"}, (
        [o for o in load.outcomes if o[0] != "accept"][:5])


def test_a_fifo_or_a_huge_file_at_the_policy_path_is_refused_in_one_line(
    tmp_path: Path, dns_server
):
    dns_server.load(ZONE)
    policy = write_policy(tmp_path / "policy.yaml", "mx-one.example.org", dns_server.nameserver)
    running = DaemonProcess.start(policy, tmp_path / "run.log")
    try:
        policy.unlink()
        os.mkfifo(policy)
        mark = len(running.log_text())
        running.reload()
        running.wait_for_log("policy reload refused", after=mark)
        refused = running.log_text()[mark:].strip().splitlines()
        assert refused == [f"trustmilter: policy reload refused, keeping the old policy: "
                           f"{policy}: is a FIFO, not a regular file"]
        assert authserv_id_seen(running) == "mx-one.example.org"

        policy.unlink()
        policy.write_bytes(b"# " + b"x" * MAX_POLICY_BYTES + b"\n")
        mark = len(running.log_text())
        running.reload()
        running.wait_for_log("policy reload refused", after=mark)
        assert (f"{policy}: {MAX_POLICY_BYTES + 3} bytes, more than a policy may have"
                in running.log_text()[mark:])

        write_policy(policy, "mx-two.example.org", dns_server.nameserver)
        mark = len(running.log_text())
        running.reload()  # a later reload is acted on: nothing is stuck
        running.wait_for_log("policy reloaded from", after=mark)
        assert authserv_id_seen(running) == "mx-two.example.org"
    finally:
        assert running.stop() == 0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(its own, its reaped children's) user+system CPU seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    tick = os.sysconf("SC_CLK_TCK")
    return (utime + stime) / tick, (cutime + cstime) / tick


def test_a_large_policy_is_parsed_outside_the_serving_process(tmp_path: Path, dns_server):
    """The parse's CPU is a child's, not the serving process's: the threads
    answering the MTA do not wait for the GIL while a large file is read."""
    dns_server.load(ZONE)
    policy = tmp_path / "policy.yaml"
    rules = RULES * 4
    rules = [{**rule, "name": f"held-{n}"} for n, rule in enumerate(rules)]
    write_policy(policy, "mx-one.example.org", dns_server.nameserver, rules=rules)
    running = DaemonProcess.start(policy, tmp_path / "run.log")
    try:
        [milter] = re.findall(r"listening on .* process (\d+)\)", running.log_text())
        write_policy(policy, "mx-two.example.org", dns_server.nameserver, rules=rules)
        own_before, children_before = cpu_seconds(int(milter))
        mark = len(running.log_text())
        running.reload()
        running.wait_for_log("policy reloaded from", after=mark, timeout=60)
        own, children = cpu_seconds(int(milter))
        assert authserv_id_seen(running) == "mx-two.example.org"
    finally:
        assert running.stop() == 0
    parse, serving = children - children_before, own - own_before
    assert parse > 2 * serving, (parse, serving)
