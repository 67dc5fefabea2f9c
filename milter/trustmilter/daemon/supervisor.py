"""`trustmilter run`: a small supervisor in front of the milter process.

It stays in the foreground as the service's main process, starts the
milter process (serve.py) and relays signals to it: SIGHUP becomes a
``reload`` line on the milter's standard input (libmilter would treat a
SIGHUP as "stop"), SIGTERM and SIGINT are passed on as SIGTERM and we
wait for a clean exit. If the milter process stops on its own, we exit
with its status, never 0, so systemd's Restart=on-failure can act.

Signal handlers only set flags; everything else happens in the main loop,
woken by the signal wakeup pipe. A handler that wrote to the milter's pipe
itself could be interrupted by the next SIGHUP inside that write: a burst
of SIGHUPs killed the supervisor (``RuntimeError: reentrant call``) and
orphaned the milter. Reloads are coalesced: one is sent, and the next only
after the milter process reports it done, so any number of SIGHUPs meanwhile
make one more reload, of the file as it is then.

The milter process reports on a status pipe (``--status-fd``): ``ready
SOCKET`` once its socket listens, ``reloaded`` after each reload.

Stopping fast: libmilter's listener looks at its stop flag only between
waits of five seconds for a connection (MI_CHK_TIME in libmilter), so a
SIGTERM alone takes up to five seconds to end it. While the milter stops,
the supervisor connects to its socket every `WAKE_SECONDS` and closes the
connection at once: each wait ends, the flag is seen, and the milter is
gone in a fraction of a second (each worker of milter.processes takes one
such connection; libmilter ends it as a session that sent nothing). The supervisor
alone speaks to systemd (notify.py, ``NotifyAccess=main``): ``READY=1``,
``RELOADING=1`` ... ``READY=1`` around each reload, ``STOPPING=1``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from trustmilter.config.socket import SocketSpec, SocketSpecError, parse_socket
from trustmilter.daemon.notify import NOTIFY_SOCKET, notify, reloading

# How long a stopping milter may take to finish its sessions.
STOP_GRACE_SECONDS = 30
# The longest the main loop sleeps without a signal or a report.
POLL_SECONDS = 1.0
# While the milter stops: how often its listener is woken (see above).
WAKE_SECONDS = 0.1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(settings: Path | None, socket_spec: str | None, foreground_log: bool) -> int:
    """Start the milter process and supervise it; returns its exit status."""
    status_read, status_write = os.pipe()
    control_read, control_write = os.pipe()
    command = [sys.executable, "-m", "trustmilter", "_serve", "--status-fd", str(status_write)]
    if settings is not None:
        command += ["--policy", str(settings)]
    if socket_spec:
        command += ["--socket", socket_spec]
    if foreground_log:
        command.append("--foreground-log")
    supervisor = _Supervisor(status_read, control_write)
    environment = {key: value for key, value in os.environ.items() if key != NOTIFY_SOCKET}
    # Its own process group: with milter.processes > 1 the milter forks
    # workers, and a stop reaches them all at once through the group.
    # Started after our handlers are in place: a SIGHUP now is a flag.
    try:
        child = subprocess.Popen(command, stdin=control_read, pass_fds=(status_write,),
                                 start_new_session=True, env=environment)
    finally:
        os.close(control_read)
        os.close(status_write)
    return supervisor.supervise(child)


class _Supervisor:
    """The main loop's state: what the signals asked for and what the milter reported."""

    def __init__(self, status_read: int, control_write: int) -> None:
        self._status = status_read  # -1 once the milter process closed it
        self._control = control_write
        self._pending = b""  # a partial status line
        self._reload_wanted = False
        self._stop_signal = 0
        self._ready = False
        self._listening: SocketSpec | None = None  # from the ``ready`` report
        self._reload_in_flight = False
        self._wake_read, wake_write = os.pipe()
        for fd in (self._wake_read, wake_write, control_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGHUP, self._on_hup)
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGCHLD, _wake_only)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_wanted = True  # nothing else here: see the module docstring

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = self._stop_signal or signum

    def supervise(self, child: subprocess.Popen[bytes]) -> int:
        stop_deadline: float | None = None
        killed = False
        while (status := child.poll()) is None:
            if self._stop_signal and stop_deadline is None:
                notify("STOPPING=1")
                _signal_group(child, signal.SIGTERM)
                stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
            elif stop_deadline is not None and not killed and time.monotonic() > stop_deadline:
                # Sessions still open are tempfailed by the MTA (milter_default_action).
                _signal_group(child, signal.SIGKILL)
                killed = True
            elif stop_deadline is not None and self._listening is not None:
                wake_listener(self._listening)
            self._send_reload()
            self._wait(WAKE_SECONDS if stop_deadline is not None else POLL_SECONDS)
        with contextlib.suppress(OSError):
            os.close(self._control)
        if self._stop_signal and status in (0, -signal.SIGTERM):
            return 0
        if status == 0:
            # Nobody asked it to stop (a stray SIGTERM, say): a failure all the
            # same, so that systemd's Restart=on-failure brings the milter back.
            print("trustmilter: the milter process stopped on its own; exiting with status 1",
                  file=sys.stderr, flush=True)
            return 1
        return status if status > 0 else 128 - status

    def _send_reload(self) -> None:
        """One reload at a time, once the milter listens; SIGHUPs meanwhile wait as one."""
        if not self._reload_wanted or not self._ready or self._reload_in_flight:
            return
        if self._stop_signal:
            self._reload_wanted = False
            return
        try:
            os.write(self._control, b"reload\n")
        except BlockingIOError:
            return  # cannot happen with one line in flight; tried again next round
        except OSError:  # it is gone: poll() says so next round
            self._reload_wanted = False
            return
        self._reload_wanted = False
        self._reload_in_flight = True
        notify(*reloading())

    def _wait(self, seconds: float) -> None:
        """Sleep until a signal, a status report or `seconds`; take the reports."""
        watched = [self._wake_read] + ([self._status] if self._status >= 0 else [])
        readable, _, _ = select.select(watched, [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 512):
                pass
        if self._status in readable:
            self._take_reports()

    def _take_reports(self) -> None:
        data = os.read(self._status, 512)
        if not data:  # the milter process (and its workers) closed it: poll() tells why
            os.close(self._status)
            self._status = -1
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            word, _, where = line.partition(b" ")
            if word == b"ready" and not self._ready:
                self._ready = True
                with contextlib.suppress(SocketSpecError, UnicodeDecodeError):
                    self._listening = parse_socket(where.decode()) if where else None
                notify("READY=1")
            elif line == b"reloaded" and self._reload_in_flight:
                self._reload_in_flight = False
                notify("READY=1")


def wake_listener(listening: SocketSpec) -> None:
    """Connect to the milter's socket and hang up: libmilter's listener wakes
    and sees that it is to stop. Failures do not matter (it may be gone)."""
    address: str | tuple[str, int]
    if listening.family == "unix":
        family, address = socket.AF_UNIX, listening.path
    else:
        family = socket.AF_INET6 if listening.family == "inet6" else socket.AF_INET
        address = (listening.host, listening.port)
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as poke:
        poke.settimeout(WAKE_SECONDS)
        poke.connect(address)


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD: the wakeup pipe has woken the main loop, which polls the child."""


class MilterStatus:
    """The milter process's end of the status pipe (serve.py): ``ready``, ``reloaded``.

    Without a pipe (``_serve`` run by hand, or a worker, which closes it) it
    sends nothing. A supervisor that is gone is no error: the end of our
    standard input stops us.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = -1 if fd is None else fd
        self._lock = threading.Lock()  # the reload thread and the main thread

    def send(self, report: str) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self._fd >= 0:
                os.write(self._fd, report.encode() + b"\n")

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
