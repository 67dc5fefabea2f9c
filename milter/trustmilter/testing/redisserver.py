"""A private, real redis-server on 127.0.0.1 for the state tests.

`RedisServer(workdir)` runs Debian's ``redis-server`` on a free loopback
port (or the one given, so a test can bring a server back where a store
expects it), with its working directory, log and nothing else under
`workdir`: no RDB snapshots, no AOF (``persistent=True``: an AOF, which a
server stopped by `stop()` flushes, so started again it has its data),
protected mode on, no daemonizing, so the child is ours to stop.
`start()` returns once it answers PING; `stop()` ends it (SIGTERM, then
SIGKILL) and is safe to call twice.
Every wait has a timeout.

DIAGNOSTICS: `RedisServerError` with the server's log when it does not
start; `redis_unavailable()` says why this machine cannot run one.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """redis-server did not start; carries its log."""


def redis_unavailable() -> str | None:
    """Why a private redis-server cannot run here (None: it can)."""
    if shutil.which("redis-server") is None:
        return (
            "redis-server is not installed"
            " (apt-get install redis-server; see packaging/install.sh --test)"
        )
    return None


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server child process on 127.0.0.1:`port`, its files under `workdir`."""

    def __init__(self, workdir: Path, port: int = 0, *, persistent: bool = False) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.persistent = persistent
        self.log_path = self.workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server; returns once it answers PING, else RedisServerError."""
        if self._process is not None:
            raise RedisServerError("this server is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--bind", HOST,
                "--port", str(self.port),
                "--dir", str(self.workdir),
                "--logfile", str(self.log_path),
                "--save", "",  # no RDB snapshots
                "--appendonly", "yes" if self.persistent else "no",
                "--appendfsync", "everysec",  # SIGTERM flushes it on the way out
                "--daemonize", "no",
                "--protected-mode", "yes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RedisServerError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL if it lingers); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answers(self) -> bool:
        """True if the server answers PING now."""
        client = redis.Redis(
            host=HOST, port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                client.close()
