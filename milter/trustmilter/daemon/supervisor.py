"""`trustmilter run`: a small supervisor in front of the milter process.

It stays in the foreground (systemd Type=simple), starts the milter
process (serve.py) and relays signals to it: SIGHUP becomes a ``reload``
line on the milter's standard input (libmilter would treat a SIGHUP as
"stop"), SIGTERM and SIGINT are passed on as SIGTERM and we wait for a
clean exit. If the milter process stops on its own, we exit with its
status, never 0, so systemd's Restart=on-failure can act.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

# How long a stopping milter may take to finish its sessions.
STOP_GRACE_SECONDS = 30


def run(settings: Path | None, socket_spec: str | None, foreground_log: bool) -> int:
    """Start the milter process and supervise it; returns its exit status."""
    command = [sys.executable, "-m", "trustmilter", "_serve"]
    if settings is not None:
        command += ["--policy", str(settings)]
    if socket_spec:
        command += ["--socket", socket_spec]
    if foreground_log:
        command.append("--foreground-log")
    # Its own process group: with milter.processes > 1 the milter forks
    # workers, and a stop reaches them all at once through the group.
    child = subprocess.Popen(command, stdin=subprocess.PIPE, text=True, start_new_session=True)
    stopping = threading.Event()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        assert child.stdin is not None
        try:
            child.stdin.write("reload\n")
            child.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    stop_deadline: float | None = None
    while True:
        try:
            status = child.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if stopping.is_set():
                now = time.monotonic()
                stop_deadline = stop_deadline or now + STOP_GRACE_SECONDS
                if now > stop_deadline:
                    # Sessions still open are tempfailed by the MTA (milter_default_action).
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
    if stopping.is_set() and status in (0, -signal.SIGTERM):
        return 0
    if status == 0:
        # Nobody asked it to stop (a stray SIGTERM, say): a failure all the
        # same, so that systemd's Restart=on-failure brings the milter back.
        print("trustmilter: the milter process stopped on its own; exiting with status 1",
              file=sys.stderr, flush=True)
        return 1
    return status if status > 0 else 128 - status
