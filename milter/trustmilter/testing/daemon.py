"""`trustmilter run` as a child process, for tests and the benchmark.

`DaemonProcess.start()` runs it on a free loopback port with stderr
logging to a file, and returns once it listens. `stop()` sends SIGTERM as
systemd does and returns the exit status (SIGKILL to the whole process
group if it hangs). Every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trustmilter.daemon.verdictlog import parse_verdict_line

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class DaemonError(Exception):
    """The daemon did not start, or a wait timed out; carries the log tail."""


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def spec(self) -> str:
        """The socket as trustmilter and Sendmail write it."""
        return f"inet:{self.port}@127.0.0.1"

    @property
    def postfix_spec(self) -> str:
        """The socket as Postfix's smtpd_milters writes it."""
        return f"inet:127.0.0.1:{self.port}"

    @classmethod
    def start(cls, policy: Path, log_path: Path, *extra_args: str) -> DaemonProcess:
        """Start `trustmilter run --policy POLICY` on a free port; wait until it listens."""
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "trustmilter", "run", "--policy", str(policy),
                 "--socket", f"inet:{port}@127.0.0.1", "--foreground-log", *extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        daemon = cls(process, port, log_path)
        try:
            daemon.wait_for_log("listening on", START_TIMEOUT)
        except DaemonError:
            daemon.stop()
            raise
        return daemon

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

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

    def verdicts(self) -> list[tuple[str, dict[str, str]]]:
        """Every verdict line so far, parsed: (queue id, fields)."""
        return [
            parse_verdict_line(line) for line in self.log_text().splitlines() if " action=" in line
        ]

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
