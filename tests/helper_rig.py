"""The privileged helper as it ships, for the tests of everything that reads the queue.

`trustmilter review helper` runs as a subprocess, as root, answering root
and the user ``nobody`` (uid 65534, whose primary group is nogroup), on a
socket in a directory it makes itself under `socket_base()` (a directory
other users may enter: pytest's tmp dirs are root's alone). Its log
(standard error) goes to a file the tests read back. `running_helper` is
what a module-scoped fixture wraps: the helper on one private Postfix's
hold queue, stopped with SIGTERM as systemd stops it.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TRUSTMILTER = str(Path(sys.executable).with_name("trustmilter"))
HELPER_USER = "nobody"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 30.0


@dataclass
class Helper:
    """A running `trustmilter review helper` and where it logs."""

    process: subprocess.Popen[bytes]
    socket_path: str
    log_path: Path

    def log(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def wait_for_log(self, pattern: str, after: int = 0, timeout: float = 10.0) -> str:
        """The first log line from line `after` on that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log()[after:]:
                if re.search(pattern, line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matches {pattern!r}: {self.log()}")
            time.sleep(0.02)


def start_helper(socket_path: str, postfix_config: Path, log_path: Path,
                 *extra: str) -> subprocess.Popen[bytes]:
    """Start the helper for the Postfix configured in `postfix_config`; not waited for."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [TRUSTMILTER, "review", "helper", "--socket", socket_path, "--user", HELPER_USER,
             "--postfix-config", str(postfix_config), *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def wait_listening(path: str, process: subprocess.Popen[bytes],
                   timeout: float = START_TIMEOUT) -> None:
    """Return once something accepts connections on the unix socket `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the helper stopped while starting"
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"the helper did not listen on {path}")


@contextmanager
def socket_base() -> Iterator[Path]:
    """A fresh directory every user may enter, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="trustmilter-helper-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def running_helper(postfix_config: Path, base: Path, log_path: Path) -> Iterator[Helper]:
    """The helper on base/run/helper.sock (a directory it makes), until the block ends."""
    path = str(base / "run" / "helper.sock")
    process = start_helper(path, postfix_config, log_path)
    try:
        wait_listening(path, process)
        yield Helper(process, path, log_path)
    finally:
        process.terminate()
        process.wait(timeout=STOP_TIMEOUT)
