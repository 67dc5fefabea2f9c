"""`trustmilter run` as a child process, for tests and the benchmark.

`DaemonProcess.start()` runs it on a free loopback port with stderr
logging to a file, and returns once it listens. `stop()` sends SIGTERM as
systemd does and returns the exit status (SIGKILL to the whole process
group if it hangs). Every wait has a timeout. `write_policy()` writes the
policy such a daemon usually runs with: one test DNS server, short timeouts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from trustmilter.daemon.verdictlog import parse_verdict_line

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def write_policy(
    path: Path, authserv_id: str, nameserver: str, **sections: dict[str, object]
) -> Path:
    """A policy with `authserv_id`, `nameserver` as the only DNS server and
    short DNS timeouts, state in memory (nothing shared between test runs),
    plus `sections` (a `dns` one adds to those settings)."""
    dns = {"nameservers": [nameserver], "timeout": 0.5, "lifetime": 1.0, **sections.pop("dns", {})}
    sections.setdefault("state", {"backend": "memory"})
    lines = [f"authserv_id: {json.dumps(authserv_id)}", f"dns: {json.dumps(dns)}"]
    lines += [f"{name}: {json.dumps(value)}" for name, value in sections.items()]
    path.write_text("\n".join(lines) + "\n")  # JSON is YAML's flow style
    return path


class Verdict(NamedTuple):
    """A verdict line, parsed."""

    queue_id: str
    fields: dict[str, str]


class DaemonError(Exception):
    """The daemon did not start, or a wait timed out; carries the log tail."""


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    socket_spec: str = ""  # when not the loopback port (a unix socket)

    @property
    def spec(self) -> str:
        """The socket as trustmilter and Sendmail write it."""
        return self.socket_spec or f"inet:{self.port}@127.0.0.1"

    @property
    def postfix_spec(self) -> str:
        """The socket as Postfix's smtpd_milters writes it."""
        return f"inet:127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, policy: Path, log_path: Path, *extra_args: str, socket_spec: str = "",
        env: dict[str, str] | None = None,
    ) -> DaemonProcess:
        """Start `trustmilter run --policy POLICY` on a free port (or on
        `socket_spec`), with `env` added to the environment; wait until it listens."""
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "trustmilter", "run", "--policy", str(policy),
                 "--socket", socket_spec or f"inet:{port}@127.0.0.1", "--foreground-log",
                 *extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
                env={**os.environ, **(env or {})},
            )
        daemon = cls(process, port, log_path, socket_spec)
        try:
            daemon.wait_for_log("listening on", START_TIMEOUT)
        except DaemonError:
            daemon.stop()
            raise
        return daemon

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        """The log's last `lines` lines, for a failure message."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 10.0, after: int = 0) -> int:
        """Wait until `text` is in the log past offset `after`; returns the log length."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log[after:]:
                return len(log)
            if self.process.poll() is not None:
                raise DaemonError(f"trustmilter exited {self.process.returncode}:\n{log[-3000:]}")
            if time.monotonic() > deadline:
                raise DaemonError(f"no {text!r} in the log after {timeout}s:\n{log[-3000:]}")
            time.sleep(0.05)

    def verdicts(self) -> list[Verdict]:
        """Every verdict line so far, parsed: (queue id, fields)."""
        return [
            Verdict(*parse_verdict_line(line))
            for line in self.log_text().splitlines()
            if " action=" in line
        ]

    def wait_verdict(
        self, queue_id: str | None = None, *, mail_from: str | None = None, timeout: float = 10.0
    ) -> Verdict:
        """The latest verdict line for `queue_id` and/or envelope sender
        `mail_from` (without the <>), once there is one."""
        wanted = " ".join(f"{key}={value}" for key, value in
                          (("queue_id", queue_id), ("from", mail_from)) if value is not None)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None  # before reading: its last lines count
            found = [
                verdict for verdict in self.verdicts()
                if queue_id in (None, verdict.queue_id)
                and (mail_from is None or verdict.fields.get("from") == f"<{mail_from}>")
            ]
            if found:
                return found[-1]
            if exited:
                raise DaemonError(f"trustmilter exited {self.process.returncode} with no verdict "
                                  f"for {wanted}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DaemonError(f"no verdict for {wanted} after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload` sends it."""
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        """SIGTERM; the exit status (negative: killed because it hung)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
            return -signal.SIGKILL
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # a milter child left behind
