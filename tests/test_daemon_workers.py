"""milter.processes > 1: the worker keeper replaces a worker that dies
(daemon/workers.py), and a stop replaces nothing and leaves no process.

The process tests run `trustmilter run` as a child process against the DNS
test server and talk to it with the benchmark's milter-protocol client, as
test_daemon_process.py does. Which process is which comes from the log
("worker keeper process K", "listening on ... process N") and /proc.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import time
from pathlib import Path

from test_daemon_process import ZONE, authserv_id_seen, listening_pids, policy_text
from trustmilter.daemon.workers import RestartPolicy
from trustmilter.policy.model import Policy
from trustmilter.testing.daemon import DaemonProcess

# ---- RestartPolicy: when a dead worker's replacement starts (no processes) ----


def test_a_worker_that_lived_long_is_replaced_at_once() -> None:
    policy = RestartPolicy()
    assert policy.after_exit(0, lived=3600.0) == (0, 0.0)
    # However many young deaths came before it: it was a one-off.
    assert policy.after_exit(9, lived=60.0) == (0, 0.0)


def test_a_slot_starts_at_most_one_worker_a_second() -> None:
    policy = RestartPolicy()
    assert policy.after_exit(0, lived=0.25) == (1, 0.75)
    assert policy.after_exit(1, lived=0.0) == (2, 1.0)
    assert policy.after_exit(2, lived=5.0) == (3, 0.0)  # lived over a second: now


def test_young_deaths_in_a_row_back_off_to_a_minute() -> None:
    """A worker dying at start-up: 5 tries a second apart, then 2, 4, ... 60 s."""
    policy = RestartPolicy()
    deaths, delays = 0, []
    for _ in range(12):
        deaths, delay = policy.after_exit(deaths, lived=0.1)
        delays.append(round(delay, 6))
    assert delays == [0.9] * 5 + [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert deaths == 12
    assert policy.after_exit(10_000, lived=0.1) == (10_001, 60.0)  # no overflow
    # One worker that stays up a minute starts the count afresh.
    deaths, _ = policy.after_exit(deaths, lived=61.0)
    assert policy.after_exit(deaths, lived=0.1) == (1, 0.9)


def test_the_numbers_are_settings() -> None:
    policy = RestartPolicy(min_interval=0.5, stable_after=10.0, burst=2, max_delay=5.0)
    delays = []
    deaths = 0
    for _ in range(6):
        deaths, delay = policy.after_exit(deaths, lived=0.0)
        delays.append(delay)
    assert delays == [0.5, 0.5, 2.0, 4.0, 5.0, 5.0]
    assert policy.after_exit(deaths, lived=10.0) == (0, 0.0)


# ---- the keeper in a running milter ----


def parent_of(pid: int) -> int:
    """The parent pid of `pid`, from /proc (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> set[int]:
    """The milter worker processes `pid` started (``trustmilter _serve``): not the
    short-lived child a reload parses the policy in (daemon/policyfile.py)."""
    return {int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and parent_of(int(entry)) == pid and _serves(int(entry))}


def _serves(pid: int) -> bool:
    try:
        return b"_serve" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def keeper_pid(running: DaemonProcess) -> int:
    match = re.search(r"worker keeper process (\d+) keeps", running.log_text())
    assert match, running.log_tail()
    return int(match[1])


def start(tmp_path: Path, dns_server, processes: int) -> tuple[DaemonProcess, Path]:
    """A milter with `processes` processes, once all of them listen."""
    dns_server.load(ZONE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(dns_server, "mx-one.example.org")
                      + f"milter: {{processes: {processes}}}\n")
    running = DaemonProcess.start(policy, tmp_path / "trustmilter.log")
    deadline = time.monotonic() + 20
    while len(listening_pids(running.log_text())) < processes:
        assert time.monotonic() < deadline, running.log_tail()
        time.sleep(0.05)
    return running, policy


def wait_listening(running: DaemonProcess, after: int) -> int:
    """The pid of the next process that logs "listening on" past offset `after`."""
    running.wait_for_log("listening on", after=after)
    return listening_pids(running.log_text()[after:])[0]


def exit_status(running: DaemonProcess) -> int:
    """Wait for the milter to stop on its own (at most 30 s); its exit status."""
    try:
        return running.process.wait(timeout=30)
    finally:
        running.stop()


def gone(pid: int) -> bool:
    """Exited and reaped: not even a zombie left."""
    return not Path(f"/proc/{pid}").exists()


def zombie(pid: int) -> bool:
    """Exited, not reaped (an orphan's zombie, where PID 1 does not reap)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_a_killed_worker_is_replaced(tmp_path: Path, dns_server):
    """SIGKILL one of two workers: one ERROR line names it, a new worker
    listens, mail flows, a reload reaches all three processes, and SIGTERM
    stops everything (nothing replaced, nothing left)."""
    running, policy = start(tmp_path, dns_server, processes=3)
    try:
        keeper = keeper_pid(running)
        parent = parent_of(keeper)
        workers = children_of(keeper)
        assert len(workers) == 2
        assert set(listening_pids(running.log_text())) == workers | {parent}
        for _ in range(3):
            assert authserv_id_seen(running) == "mx-one.example.org"

        victim = min(workers)
        mark = len(running.log_text())
        os.kill(victim, signal.SIGKILL)
        running.wait_for_log(f"worker process {victim} was killed by SIGKILL; starting another",
                             timeout=5, after=mark)
        newcomer = wait_listening(running, mark)
        assert children_of(keeper) == workers - {victim} | {newcomer}
        assert gone(victim)  # reaped by the keeper
        for _ in range(6):
            assert authserv_id_seen(running) == "mx-one.example.org"

        policy.write_text(policy_text(dns_server, "mx-two.example.org") + "milter: {processes: 3}\n")
        mark = len(running.log_text())
        running.reload()
        deadline = time.monotonic() + 10
        while running.log_text()[mark:].count("policy reloaded") < 3:
            assert time.monotonic() < deadline, running.log_tail()
            time.sleep(0.05)
        for _ in range(9):  # whichever process answers, it has the new policy
            assert authserv_id_seen(running) == "mx-two.example.org"
        stop_mark = len(running.log_text())
    finally:
        assert running.stop() == 0
    after_stop = running.log_text()[stop_mark:]
    assert "starting another" not in after_stop and "listening on" not in after_stop
    assert after_stop.count("stopped (process") == 3
    assert "worker keeper process" in after_stop  # it stopped its workers
    for pid in workers | {victim, newcomer, keeper, parent}:
        assert gone(pid), pid


def test_a_replacement_runs_the_policy_its_siblings_run(tmp_path: Path, dns_server):
    """The last policy a reload accepted, not the start-up one, and not the
    file as it is now: here broken by an edit that a reload refused."""
    running, policy = start(tmp_path, dns_server, processes=2)
    try:
        policy.write_text(policy_text(dns_server, "mx-two.example.org") + "milter: {processes: 2}\n")
        mark = len(running.log_text())
        running.reload()
        wait_count(running, "policy reloaded", 2, mark)
        policy.write_text("authserv_id: [broken\n")
        mark = len(running.log_text())
        running.reload()
        wait_count(running, "policy reload refused", 2, mark)
        [worker] = children_of(keeper_pid(running))

        mark = len(running.log_text())
        os.kill(worker, signal.SIGKILL)
        newcomer = wait_listening(running, mark)
        started = running.log_text()[mark:]
        listening = next(line for line in started.splitlines() if f"process {newcomer})" in line)
        assert "authserv-id mx-two.example.org" in listening, started
        assert "policy reload" not in started  # it did not re-read the file
        for _ in range(8):
            assert authserv_id_seen(running) == "mx-two.example.org"
    finally:
        assert running.stop() == 0


def wait_count(running: DaemonProcess, text: str, count: int, after: int) -> None:
    deadline = time.monotonic() + 10
    while running.log_text()[after:].count(text) < count:
        assert time.monotonic() < deadline, running.log_tail()
        time.sleep(0.05)


def test_a_worker_killed_by_a_real_time_signal_is_replaced(tmp_path: Path, dns_server):
    """Signals 34-64 have no name in Python's signal.Signals."""
    running, _ = start(tmp_path, dns_server, processes=2)
    try:
        [worker] = children_of(keeper_pid(running))
        realtime = signal.SIGRTMIN + 6
        mark = len(running.log_text())
        os.kill(worker, realtime)
        running.wait_for_log(f"worker process {worker} was killed by signal {realtime};"
                             " starting another", timeout=5, after=mark)
        wait_listening(running, mark)
        assert authserv_id_seen(running) == "mx-one.example.org"
    finally:
        assert running.stop() == 0


def test_a_keeper_stopped_alone_is_a_failure_for_systemd(tmp_path: Path, dns_server):
    """SIGTERM to the keeper alone stops the milter; nobody asked `trustmilter
    run` to stop, so it exits 1 and systemd's Restart=on-failure acts."""
    running, _ = start(tmp_path, dns_server, processes=2)
    keeper = keeper_pid(running)
    os.kill(keeper, signal.SIGTERM)
    status = exit_status(running)
    assert status == 1, running.log_tail()
    assert "the milter process stopped on its own; exiting with status 1" in running.log_text()


def test_a_worker_that_takes_the_unix_socket_with_it_stops_the_milter(tmp_path: Path,
                                                                       dns_server):
    """A worker dies after the unix socket's path was removed (by hand here;
    before listen.py, libmilter did so at a worker's clean stop as a user
    other than root): a replacement could not be reached, so the milter
    stops with status 1, to be restarted whole."""
    dns_server.load(ZONE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(dns_server, "mx-one.example.org") + "milter: {processes: 2}\n")
    path = tmp_path / "trustmilter.sock"
    running = DaemonProcess.start(policy, tmp_path / "trustmilter.log", "--socket", f"unix:{path}")
    try:
        wait_count(running, "listening on unix:", 2, 0)
        [worker] = children_of(keeper_pid(running))
        path.unlink()
        os.kill(worker, signal.SIGTERM)
        status = running.process.wait(timeout=30)
    finally:
        running.stop()
    assert status == 1, running.log_tail()
    # libmilter stops cleanly on SIGTERM: status 0.
    assert (f"worker process {worker} exited with status 0 and the socket {path} went with it;"
            " stopping, to be restarted whole") in running.log_text()
    assert "starting another" not in running.log_text()


def test_a_group_wide_sigterm_replaces_nothing(tmp_path: Path, dns_server):
    """SIGTERM to the milter's whole process group, as `trustmilter run`
    sends it (and systemd, to the supervisor too): the keeper and the
    workers get it at once; the workers that stop must not be replaced."""
    for round_ in range(2):  # the keeper and its workers race each time
        directory = tmp_path / f"round{round_}"
        directory.mkdir()
        running, _ = start(directory, dns_server, processes=4)
        keeper = keeper_pid(running)
        parent = parent_of(keeper)
        pids = children_of(keeper) | {keeper, parent}
        assert len(pids) == 5
        mark = len(running.log_text())
        # As systemd stops the unit: SIGTERM to every process of it at once.
        os.kill(running.process.pid, signal.SIGTERM)
        os.killpg(parent, signal.SIGTERM)
        status = exit_status(running)
        assert status == 0, running.log_tail()
        after = running.log_text()[mark:]
        assert "starting another" not in after and "listening on" not in after, after
        assert "stops 3 worker processes (SIGTERM)" in after
        assert after.count("stopped (process") == 4
        for pid in pids:
            assert gone(pid), pid


def test_a_dead_keeper_stops_the_milter_for_a_restart(tmp_path: Path, dns_server):
    """Without its keeper the workers stop (end of their input): the milter
    stops too, with status 1, for systemd to restart it whole."""
    running, _ = start(tmp_path, dns_server, processes=3)
    keeper = keeper_pid(running)
    parent = parent_of(keeper)
    workers = children_of(keeper)
    os.kill(keeper, signal.SIGKILL)
    status = exit_status(running)
    assert status == 1, running.log_tail()
    assert f"worker keeper process {keeper} was killed by SIGKILL; stopping" in running.log_text()
    assert gone(parent) and gone(keeper)
    # Orphans now, they stop on their own, perhaps after the supervisor exited.
    deadline = time.monotonic() + 10
    while not all(gone(pid) or zombie(pid) for pid in workers):
        assert time.monotonic() < deadline, running.log_tail()
        time.sleep(0.05)


def test_a_failed_fork_is_retried_later(monkeypatch, caplog) -> None:
    """Out of memory or processes: the keeper logs it and tries again a
    second later (counted as a worker that died at once), it does not stop."""
    from trustmilter.daemon import workers

    def no_fork() -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(workers.os, "fork", no_fork)
    serving = workers.ServingPolicy(Policy(), None)
    keeper = workers._KeeperProcess(1, None, serving, None, RestartPolicy())
    [slot] = keeper._slots
    before = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="trustmilter"):
        assert keeper._start(slot) is None
    assert slot.pid == 0 and slot.young_deaths == 1
    assert slot.due is not None and before + 1.0 <= slot.due <= time.monotonic() + 1.0
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"cannot start a worker process: {os.strerror(errno.EAGAIN)}; trying again in 1.0 s")
