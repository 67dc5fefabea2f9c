"""The worker keeper: replaces milter worker processes that die (milter.processes > 1).

With `milter.processes: N`, serve.py opens libmilter's listening socket and
then, before it starts any thread, forks this keeper. The keeper stays
single-threaded (no libmilter, no thread pool), so it can still fork when
the milter process no longer safely can: it forks the N-1 worker processes,
each a copy of a clean process holding the socket that goes on to serve as
the milter process does, and it replaces any worker that dies (a crash, the
OOM killer, SIGKILL), as Postfix's master(8) replaces its daemons. Without
it a dead worker would silently take its share of the capacity with it.

The milter process serves too, and speaks to the keeper on a pipe (the
keeper's standard input):

- ``reload``: passed on to every worker, on its standard input as serve.py
  reads it. A worker started after a reload re-reads the policy before it
  serves, so it runs what its siblings were told to.
- End of input (the milter process stops, or died): stop the workers (end
  of their input, and SIGTERM; SIGKILL after STOP_GRACE_SECONDS), reap
  them, exit.

Signals. SIGHUP, SIGTERM and SIGINT stay blocked in every milter process
for libmilter's signal thread (see serve.py); workers are forked with them
blocked and their original handlers back. The keeper takes SIGTERM and
SIGINT as "stop": `trustmilter run` stops the milter with a SIGTERM to its
whole process group, which reaches the keeper and the workers at once, and
a worker stopping then must not be replaced. The keeper looks at its
signals after it has reaped and before it restarts anything: a worker
stopped by that SIGTERM died after the keeper's own SIGTERM was sent, so
the keeper has it by then. SIGCHLD wakes it for a dead worker; all three
arrive on a wakeup pipe beside its standard input. SIGHUP stays blocked:
reloads come as lines.

A worker that exits while the keeper is not stopping is logged at ERROR
(one line: its pid, its exit status or signal, when the next one starts)
and replaced as soon as `RestartPolicy` allows. With shared metrics the
keeper drops the dead worker's live gauges (`process_exited`); its
replacement records into the same directory.

The milter process watches the keeper (`Keeper.watch`): if the keeper dies
its workers stop (end of their input), so the milter process stops too,
with exit status 1, and the whole milter is restarted (systemd Restart=).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from trustmilter.app import App
from trustmilter.config.settings import Settings
from trustmilter.daemon.policyfile import load_policy_off_path
from trustmilter.daemon.sharedmetrics import SharedMetricsDir
from trustmilter.daemon.supervisor import STOP_GRACE_SECONDS

log = logging.getLogger("trustmilter")

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers

# Signals the keeper handles, through its wakeup pipe; the ones that stop it.
KEEPER_SIGNALS = frozenset({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# How long the milter process waits for the keeper, which itself waits
# STOP_GRACE_SECONDS for its workers.
KEEPER_STOP_SECONDS = STOP_GRACE_SECONDS + 5


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How soon a dead worker is replaced: never in a tight loop, and ever
    more slowly while its replacements keep dying young.

    - A slot starts at most one worker per `min_interval` (1 s): a worker
      that dies at start-up is retried once a second, not fork-bombed.
    - A worker that lived less than `stable_after` (60 s) died young. After
      `burst` (5) young deaths in a row, the wait doubles with each further
      one: 2, 4, 8, 16, 32 s, then `max_delay` (60 s), so about one try a
      minute while the cause lasts (a state store down, a broken install).
    - A worker that lived `stable_after` or longer resets the count: its
      death was a one-off, and it is replaced at once.
    """

    min_interval: float = 1.0
    stable_after: float = 60.0
    burst: int = 5
    max_delay: float = 60.0

    def after_exit(self, young_deaths: int, lived: float) -> tuple[int, float]:
        """For a worker that lived `lived` seconds, in a slot whose workers
        died young `young_deaths` times in a row before it: the new count,
        and the seconds to wait from now before its replacement starts."""
        if lived >= self.stable_after:
            return 0, 0.0
        young_deaths += 1
        if young_deaths > self.burst:
            doublings = min(young_deaths - self.burst, 30)  # 2.0 ** a large count overflows
            return young_deaths, min(self.max_delay, 2.0**doublings)
        return young_deaths, max(0.0, self.min_interval - lived)


@dataclass(frozen=True, slots=True)
class WorkerStart:
    """What `start_keeper` returns in a worker process, which then serves."""

    # The policy its siblings run: the start-up one, or the last one a reload
    # accepted (not the file as it is now, which may since have changed).
    settings: Settings


@dataclass
class Keeper:
    """The milter process's handle on the keeper process."""

    pid: int
    control: int  # the write end of its standard input; -1 once closed
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _failed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    # `send` (the reload thread) and `stop`: no write to a closed, reused descriptor.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def failed(self) -> bool:
        """Whether the keeper died on its own (and this process stopped for it)."""
        return self._failed.is_set()

    def send(self, command: str) -> None:
        with self._lock, contextlib.suppress(OSError):  # it died: `watch` stops us
            if self.control >= 0:
                os.write(self.control, command.encode() + b"\n")

    def watch(self) -> None:
        """From now on, stop this milter process if the keeper dies."""
        threading.Thread(target=self._watch, name="trustmilter-keeper", daemon=True).start()

    def _watch(self) -> None:
        # WNOWAIT leaves it a zombie for `stop`, so its pid is not reused meanwhile.
        try:
            result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # `stop` reaped it first
            return
        if self._stopping.is_set() or result is None:
            return
        if result.si_code != os.CLD_EXITED or result.si_status != 0:
            # Its workers see the end of their input and stop: rather than
            # serve on alone, stop, and let the whole milter be restarted.
            self._failed.set()
            log.error("worker keeper process %d %s; stopping, to be restarted whole",
                      self.pid, _how(result.si_code, result.si_status))
        # Else it stopped on SIGTERM: the whole process group is stopping (or
        # someone stopped the workers); we stop too. Stop the way SIGTERM
        # does: libmilter's signal thread takes it (harmless if it already did).
        os.kill(os.getpid(), signal.SIGTERM)

    def stop(self, timeout: float = KEEPER_STOP_SECONDS) -> None:
        """End of its input: it stops the workers and exits; wait for it."""
        self._stopping.set()
        with self._lock, contextlib.suppress(OSError):
            os.close(self.control)
            self.control = -1
        reap(self.pid, timeout)  # killed: its workers see the end of their input


def start_keeper(
    workers: int,
    shared: SharedMetricsDir | None,
    serving: ServingPolicy,
    socket_path: str | None = None,
    restarts: RestartPolicy | None = None,
) -> Keeper | WorkerStart:
    """Fork the keeper and, through it, `workers` worker processes.

    `serving` is the policy the workers start with and how to reload it;
    `socket_path` the unix socket's path (None for inet): if it is gone when
    a worker dies, the keeper stops rather than replace it.

    Call it before this process starts any thread. Returns the keeper's
    handle here, and a `WorkerStart` in each worker process (which goes on
    to serve as this one does); in the keeper itself it never returns.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return Keeper(pid, write_end)
    os.close(write_end)
    outcome: int | WorkerStart
    try:
        _take_stdin(read_end)
        keeper = _KeeperProcess(workers, shared, serving, socket_path, restarts or RestartPolicy())
        outcome = keeper.run()
    except BaseException:  # never back into serve(), as a second milter process
        log.exception("worker keeper process %d failed", os.getpid())
        outcome = 1
    if isinstance(outcome, WorkerStart):
        return outcome
    logging.shutdown()
    os._exit(outcome)


def reap(pid: int, timeout: float) -> None:
    """Wait for a child process to exit; kill it if it will not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                time.sleep(0.1)
                continue
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _take_stdin(read_end: int) -> None:
    """Make `read_end` this process's standard input."""
    os.dup2(read_end, 0)
    os.close(read_end)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (process-long)


def _how(code: int, status: int) -> str:
    """How a process ended, from waitid's si_code and si_status."""
    if code == os.CLD_EXITED:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(status).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {status}"


@dataclass(slots=True)
class ServingPolicy:
    """The policy the workers run, as the keeper follows it through reloads.

    The keeper loads the file on each ``reload`` as the milter processes do
    and keeps it only if they would (it loads and an App builds from it), so
    a replacement worker runs what its siblings run, never a file edited
    since or one they refused.
    """

    settings: Settings
    path: Path | None

    def reload(self) -> None:
        if self.path is None:
            return
        try:
            # As the milter processes read it (policyfile.py): a FIFO or a huge
            # file at the path must not block the keeper, which replaces workers.
            settings = load_policy_off_path(self.path)
            App.build(settings)  # what each milter process builds; raises what it refuses
        except Exception as error:  # the milter processes log the refusal
            log.debug("worker keeper keeps its policy: %s", error)
            return
        self.settings = settings


@dataclass(slots=True)
class _Slot:
    """One of the places the keeper keeps filled with a worker."""

    pid: int = 0  # its worker; 0 while none runs
    control: int = -1  # the write end of that worker's standard input
    started: float = 0.0  # time.monotonic() when it was forked
    young_deaths: int = 0  # see RestartPolicy
    due: float | None = 0.0  # when to start its next worker; None while one runs


@dataclass(frozen=True, slots=True)
class _Exit:
    """A worker that has exited, its slot already emptied."""

    slot: _Slot
    pid: int
    how: str  # "exited with status 1", "was killed by SIGKILL"
    lived: float  # seconds


class _KeeperProcess:
    """The keeper's loop: start the workers, replace the dead, stop them all."""

    def __init__(self, workers: int, shared: SharedMetricsDir | None, serving: ServingPolicy,
                 socket_path: str | None, restarts: RestartPolicy) -> None:
        self._slots = [_Slot() for _ in range(workers)]
        self._shared = shared
        self._serving = serving
        self._socket_path = socket_path
        self._restarts = restarts
        self._stopping = ""  # why the keeper stops; empty while it does not
        self._status = 0  # the keeper's exit status
        self._commands = b""  # a partial line from the milter process
        self._pid = os.getpid()
        self._wake_read, self._wake_write = os.pipe()
        # What a worker gets back: serve.py's signal mask and the handlers.
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self._handlers: dict[signal.Signals, _Handler] = {}

    def run(self) -> int | WorkerStart:
        """Keep the workers until told to stop; 0, or 1 after an unexpected error
        or a lost unix socket. In a worker forked meanwhile: its `WorkerStart`."""
        log.info("worker keeper process %d keeps %d worker processes",
                 os.getpid(), len(self._slots))
        try:
            self._catch_signals()
            while not self._stopping:
                for slot in self._due():
                    self._take_signals()  # no new worker once a stop has come
                    if self._stopping:
                        break
                    started = self._start(slot)
                    if started is not None:
                        return started  # we are the new worker
                self._wait()
        except Exception:
            log.exception("worker keeper process %d failed; stopping its workers", os.getpid())
            self._stopping = "an error"
            self._status = 1
        self._stop_workers()
        return self._status

    def _catch_signals(self) -> None:
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        for signum in KEEPER_SIGNALS:
            # A no-op: the wakeup pipe says which signal came.
            self._handlers[signum] = signal.signal(signum, _ignore) or signal.SIG_DFL
        signal.pthread_sigmask(signal.SIG_UNBLOCK, KEEPER_SIGNALS)

    def _due(self) -> list[_Slot]:
        now = time.monotonic()
        return [slot for slot in self._slots if slot.due is not None and slot.due <= now]

    def _wait(self) -> None:
        """Sleep until a signal, a command or the next due start; act on them."""
        dues = [slot.due for slot in self._slots if slot.due is not None]
        timeout = max(0.0, min(dues) - time.monotonic()) if dues else None
        readable, _, _ = select.select([0, self._wake_read], [], [], timeout)
        # Forgotten at once: from here on no slot holds a reaped (reusable) pid.
        dead = [exit for exit in map(self._forget, self._reap()) if exit is not None]
        # After reaping: a worker stopped by a group-wide SIGTERM has died
        # after ours was sent, so ours is in the wakeup pipe by now.
        self._take_signals()
        if 0 in readable:
            self._take_commands()
        for exit in dead:
            self._replace(exit)

    def _take_signals(self) -> None:
        received = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._wake_read, 512):
                received += chunk
        stops = [signum for signum in received if signum in STOP_SIGNALS]
        if stops and not self._stopping:
            self._stopping = signal.Signals(stops[0]).name

    def _take_commands(self) -> None:
        data = os.read(0, 4096)
        if not data:
            self._stopping = self._stopping or "end of input"
            return
        *lines, self._commands = (self._commands + data).split(b"\n")
        # Several reloads read at once are one: each reads the file as it is now.
        if any(line.strip() == b"reload" for line in lines):
            for slot in self._slots:
                if slot.pid:
                    _send(slot.control, b"reload")
            self._serving.reload()  # what a replacement will run

    def _reap(self) -> list[tuple[int, int, int]]:
        """Every worker that has exited: (pid, si_code, si_status)."""
        exits = []
        while True:
            try:
                result = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                break
            if result is None:
                break
            exits.append((result.si_pid, result.si_code, result.si_status))
        return exits

    def _forget(self, exit: tuple[int, int, int]) -> _Exit | None:
        """Empty the slot of a reaped worker (None: not one of ours)."""
        pid, code, status = exit
        slot = next((slot for slot in self._slots if slot.pid == pid), None)
        if slot is None:
            return None
        if self._shared is not None:
            self._shared.process_exited(pid)
        with contextlib.suppress(OSError):
            os.close(slot.control)
        slot.pid, slot.control = 0, -1
        return _Exit(slot, pid, _how(code, status), time.monotonic() - slot.started)

    def _replace(self, exit: _Exit) -> None:
        """Unless stopping, log a dead worker and plan its replacement."""
        if self._stopping:
            return
        if self._socket_path is not None and not os.path.exists(self._socket_path):
            # The socket's path is gone (libmilter no longer removes it, see
            # listen.py; someone else did): a replacement would listen on a
            # path no MTA can reach. Stop, to be restarted whole.
            log.error("worker process %d %s and the socket %s went with it; stopping,"
                      " to be restarted whole", exit.pid, exit.how, self._socket_path)
            self._stopping = "socket removed"
            self._status = 1
            return
        slot = exit.slot
        slot.young_deaths, delay = self._restarts.after_exit(slot.young_deaths, exit.lived)
        slot.due = time.monotonic() + delay
        when = "starting another" if delay < 0.05 else f"starting another in {delay:.1f} s"
        if slot.young_deaths > self._restarts.burst:
            when += f" ({slot.young_deaths} in a row died within "
            when += f"{self._restarts.stable_after:.0f} s)"
        log.error("worker process %d %s; %s", exit.pid, exit.how, when)

    def _start(self, slot: _Slot) -> WorkerStart | None:
        """Fork a worker into `slot`. In that worker: its `WorkerStart`."""
        slot.due = None
        try:
            read_end, write_end = os.pipe()
        except OSError as error:
            self._retry(slot, error)
            return None
        # No handler of ours may run in the child before it has its own back.
        signal.pthread_sigmask(signal.SIG_BLOCK, KEEPER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as error:  # out of memory or processes: try again later
            os.close(read_end)
            os.close(write_end)
            self._retry(slot, error)
            return None
        finally:
            if os.getpid() == self._pid:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, KEEPER_SIGNALS)
        if pid == 0:
            try:
                os.close(write_end)
                self._become_worker(read_end)
            except BaseException:  # never back into the keeper's loop
                os._exit(1)
            return WorkerStart(self._serving.settings)
        os.close(read_end)
        # A worker that has not read its last reload yet needs no second one
        # (see `_send`): the keeper never blocks on a full pipe.
        os.set_blocking(write_end, False)
        slot.pid, slot.control, slot.started = pid, write_end, time.monotonic()
        return None

    def _retry(self, slot: _Slot, error: OSError) -> None:
        """A worker could not be forked: count it as one that died at once."""
        slot.young_deaths, delay = self._restarts.after_exit(slot.young_deaths, 0.0)
        slot.due = time.monotonic() + delay
        log.error("cannot start a worker process: %s; trying again in %.1f s",
                  error.strerror, delay)

    def _become_worker(self, read_end: int) -> None:
        """In a new worker: drop the keeper's signals and pipes; read from `read_end`."""
        signal.set_wakeup_fd(-1)
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        os.close(self._wake_read)
        os.close(self._wake_write)
        # Its siblings see the end of their input when the keeper closes it,
        # only if no other process holds a copy.
        for slot in self._slots:
            if slot.control >= 0:
                os.close(slot.control)
        _take_stdin(read_end)

    def _stop_workers(self) -> None:
        """End of input and SIGTERM for every worker; reap them, SIGKILL after
        the grace period."""
        live = {slot.pid for slot in self._slots if slot.pid}
        log.info("worker keeper process %d stops %d worker processes (%s)",
                 os.getpid(), len(live), self._stopping)
        for slot in self._slots:
            slot.due = None
            with contextlib.suppress(OSError):
                os.close(slot.control)
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while live:
            for pid, _code, _status in self._reap():
                self._gone(pid, live)
            if live and time.monotonic() > deadline:
                log.warning("worker processes %s did not stop within %d s; killing them",
                            ", ".join(map(str, sorted(live))), STOP_GRACE_SECONDS)
                for pid in sorted(live):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                    self._gone(pid, live)
            elif live:
                time.sleep(0.05)

    def _gone(self, pid: int, live: set[int]) -> None:
        live.discard(pid)
        if self._shared is not None:
            self._shared.process_exited(pid)


def _send(control: int, command: bytes) -> None:
    # BlockingIOError: its pipe is full of reloads it has yet to read, and
    # one of them reads the file as it is now. Other errors: a worker that
    # just died, reaped next.
    with contextlib.suppress(OSError):
        os.write(control, command + b"\n")


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The keeper's handler: the wakeup pipe carries the signal."""
