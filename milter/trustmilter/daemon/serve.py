"""The milter process: builds the App, runs libmilter, reloads on request.

libmilter owns SIGHUP, SIGTERM and SIGINT in this process (its signal
thread stops the milter on any of them), so a reload cannot arrive as a
signal here. The supervising `trustmilter run` process (supervisor.py)
takes SIGHUP and writes ``reload`` on our standard input instead; end of
input means the supervisor is gone, and we stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import Milter

from trustmilter.app import App
from trustmilter.checks import StartupError
from trustmilter.daemon.adapter import ACTIONS, TrustMilter
from trustmilter.daemon.apps import AppHolder, build_app
from trustmilter.daemon.logsetup import setup_logging
from trustmilter.daemon.metrics import Metrics, NullMetrics
from trustmilter.daemon.session import SmtpSession
from trustmilter.daemon.sharedmetrics import SharedMetricsDir
from trustmilter.daemon.socketspec import SocketSpec, parse_socket
from trustmilter.pipeline import PipelineError
from trustmilter.policy.load import PolicyError, load_policy
from trustmilter.policy.model import Policy
from trustmilter.state.base import StateError, StateStore

log = logging.getLogger("trustmilter")

MILTER_NAME = "trustmilter"
# pymilter's C module, as pymilter itself imports it (our source root is also
# called milter/, so we never import it by that name).
libmilter = Milter.milter


class ServeError(Exception):
    """Start-up failed; the message says why in one line."""


def _shared_metrics_dir(policy: Policy) -> SharedMetricsDir | None:
    """With metrics and several processes: their shared directory, made before
    any of them imports prometheus_client (see sharedmetrics.py)."""
    if not policy.metrics.listen or policy.milter.processes == 1:
        return None
    try:
        return SharedMetricsDir.create()
    except (OSError, RuntimeError) as error:
        raise ServeError(f"metrics: cannot share them between processes: {error}") from error


def _start_metrics(policy: Policy, shared: SharedMetricsDir | None) -> Metrics:
    """This process's metrics; with `shared`, only the parent serves them."""
    if not policy.metrics.listen:
        return NullMetrics()
    from trustmilter.daemon.prometheus import start_metrics  # optional dependency

    if shared is None:
        return start_metrics(policy.metrics)
    try:
        return start_metrics(policy.metrics, shared.path, serve=shared.owned)
    except OSError as error:
        raise ServeError(f"metrics.listen {policy.metrics.listen}: {error}") from error


def _watch_worker(pid: int, shared: SharedMetricsDir) -> None:
    """Wait for a worker to exit (a crash, or shutdown), then drop its live gauges.

    WNOWAIT leaves the worker a zombie for `_reap`, so its pid cannot be
    reused (and signalled by mistake) while we still hold it.
    """
    with contextlib.suppress(ChildProcessError):  # _reap got it first
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    shared.process_exited(pid)
    log.info("worker process %d exited", pid)


def _open_state(policy: Policy) -> StateStore:
    """The policy's state store, wrapped so an outage follows `state.on_error`."""
    from trustmilter.state.open import ResilientStore, open_store

    try:
        store = open_store(policy.state)
    except StateError as error:
        raise ServeError(f"state: {error}") from error
    resilient: StateStore = ResilientStore(store, policy.state.on_error, log)
    return resilient


def _listen_for_reloads(holder: AppHolder, workers: list[Worker]) -> None:
    """Read commands from the supervisor (or our parent process); pass them on
    to our worker processes; stop the milter when the sender goes away."""
    for line in sys.stdin:
        if line.strip() == "reload":
            for worker in workers:
                worker.send("reload")
            holder.reload()
    log.info("supervisor gone; stopping")
    # Stop the way SIGTERM does: libmilter's own signal thread takes it (the
    # only thread that does not block it), so shutdown follows one path.
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Worker:
    """Another milter process sharing our listening socket (milter.processes)."""

    pid: int
    control: int  # the write end of its standard input

    def send(self, command: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.control, command.encode() + b"\n")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.control)  # end of input: it stops, as when the supervisor goes
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)


def serve(policy_path: Path | None, socket_spec: str | None, foreground_log: bool) -> int:
    """Run the milter until libmilter stops; returns the exit status."""
    # Block the signals libmilter handles before any thread exists, so every
    # thread inherits the block and only libmilter's sigwait thread sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
    try:
        policy = load_policy(policy_path) if policy_path else Policy()
    except PolicyError as error:
        raise ServeError(str(error)) from error
    except OSError as error:
        raise ServeError(f"{policy_path}: cannot read policy: {error.strerror}") from error
    where = setup_logging(policy.logging, force_stderr=foreground_log)
    spec = socket_spec or policy.milter.socket
    try:
        parsed = parse_socket(spec)
    except ValueError as error:
        raise ServeError(f"--socket {spec}: {error}") from error

    _register(spec)
    old_umask = os.umask(0o117)  # the socket: owner and group (postfix) only, 0660
    try:
        libmilter.opensocket(True)
    finally:
        os.umask(old_umask)
    _tune_listener(parsed)
    shared = _shared_metrics_dir(policy)
    try:
        return _run_processes(policy, policy_path, shared, f"{parsed}", where)
    finally:
        if shared is not None:
            shared.remove()  # in the parent; a worker leaves it alone


def _run_processes(
    policy: Policy,
    policy_path: Path | None,
    shared: SharedMetricsDir | None,
    where_listening: str,
    where_logging: str,
) -> int:
    """Fork the workers, then run this process's milter until libmilter stops."""
    # Python runs one thread at a time: more processes on the one listening
    # socket use more cores (the kernel spreads the connections). Forked here,
    # before this process has any thread, so each starts clean.
    workers: list[Worker] = []
    for _ in range(policy.milter.processes - 1):
        worker = _fork_worker()
        if worker.pid == 0:
            # We are a worker: our parent speaks to us on stdin; the pipes to
            # our elder siblings are the parent's, not ours.
            for sibling in workers:
                os.close(sibling.control)
            workers = []
            break
        workers.append(worker)
    try:
        app, holder, executor, metrics = _start_services(policy, policy_path, shared)
    except ServeError:
        for worker in workers:
            worker.stop()
        if shared is not None:  # they may be writing into the directory we remove next
            for worker in workers:
                _reap(worker.pid)
        raise
    if shared is not None and shared.owned:
        for worker in workers:
            threading.Thread(target=_watch_worker, args=(worker.pid, shared), daemon=True).start()
        log.info("metrics of %d processes recorded in %s, served by process %d",
                 len(workers) + 1, shared.path, os.getpid())
    threading.Thread(target=_listen_for_reloads, args=(holder, workers), daemon=True).start()
    log.info(
        "listening on %s (policy %s, authserv-id %s, logging to %s, process %d)",
        where_listening, policy_path or "built-in defaults", app.authserv_id, where_logging,
        os.getpid(),
    )
    try:
        libmilter.main()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.stop()
        for worker in workers:
            _reap(worker.pid)
        if shared is not None:
            metrics.close()  # no scrape reads the files while serve() removes them
    log.info("stopped (process %d)", os.getpid())
    return 0


def _fork_worker() -> Worker:
    """A copy of this process (listening socket included) that reads its stdin from us."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        os.dup2(read_end, 0)
        os.close(read_end)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (process-long)
        return Worker(0, -1)
    os.close(read_end)
    return Worker(pid, write_end)


def _reap(pid: int, timeout: float = 30.0) -> None:
    """Wait for a worker to exit; kill it if it will not."""
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


def _start_services(
    policy: Policy, policy_path: Path | None, shared: SharedMetricsDir | None
) -> tuple[App, AppHolder, Executor, Metrics]:
    """This process's thread pool, metrics, state store and App, wired to pymilter."""
    executor = ThreadPoolExecutor(policy.milter.check_threads, "trustmilter-check")
    metrics = _start_metrics(policy, shared)
    state = _open_state(policy)
    try:
        app = build_app(policy, executor, metrics, state)
    except (StartupError, PipelineError) as error:
        raise ServeError(str(error)) from error
    holder = AppHolder(app, policy_path, executor, metrics, state)
    # pymilter's one bootstrap point: the factory is a module attribute.
    Milter.factory = lambda: TrustMilter(SmtpSession(holder, metrics), metrics)
    return app, holder, executor, metrics


def _tune_listener(spec: SocketSpec) -> None:
    """Adjust libmilter's listening socket, which it offers no hook for.

    - Non-blocking: with several processes on one socket, all wake for a
      connection and only one gets it; libmilter retries an accept that
      finds nothing (EAGAIN) instead of blocking in it, so a stopping
      process is never stuck waiting for a connection that went elsewhere.
    - TCP_NODELAY (Linux passes it on to each accepted connection):
      libmilter writes each end-of-message edit and the reply separately;
      with Nagle on, the second small write waits for an ACK the MTA delays
      ~40 ms.
    """
    wanted: object = spec.path if spec.family == "unix" else spec.port
    for entry in os.listdir("/proc/self/fd"):
        try:
            fd = int(entry)
            if not os.readlink(f"/proc/self/fd/{entry}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                name = sock.getsockname()
                found = name if isinstance(name, str) else name[1]
                if sock.type != socket.SOCK_STREAM or found != wanted:
                    continue
                os.set_blocking(fd, False)
                if spec.family != "unix":
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return
        except (OSError, ValueError, IndexError, TypeError):
            continue
    log.warning("could not tune the listening socket %s; replies may lag", spec)


def _register(spec: str) -> None:
    """Wire the callbacks as Milter.runmilter does, with our action flags."""
    libmilter.set_flags(ACTIONS)
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.setconn(spec)
    libmilter.register(
        MILTER_NAME,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )
