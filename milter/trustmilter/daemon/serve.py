"""The milter process: builds the App, runs libmilter, reloads on request.

libmilter owns SIGHUP, SIGTERM and SIGINT in this process (its signal
thread stops the milter on any of them), so a reload cannot arrive as a
signal here. The supervising `trustmilter run` process (supervisor.py)
takes SIGHUP and writes ``reload`` on our standard input instead; end of
input means the supervisor is gone, and we stop. With milter.processes > 1
the worker keeper (workers.py) forks the other milter processes, keeps
them running and passes the same commands on to them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import Milter

from trustmilter.app import App
from trustmilter.checks import StartupError
from trustmilter.config.settings import Settings
from trustmilter.config.socket import SocketSpec, parse_socket
from trustmilter.daemon import callbacks
from trustmilter.daemon.adapter import TrustMilter
from trustmilter.daemon.apps import AppHolder, build_app
from trustmilter.daemon.listen import UnixSocketClaim, listen_failure, refuse_if_taken
from trustmilter.daemon.logsetup import setup_logging
from trustmilter.daemon.metrics import Metrics, NullMetrics
from trustmilter.daemon.policyfile import PolicyUnusable, load_policy
from trustmilter.daemon.session import SmtpSession
from trustmilter.daemon.sharedmetrics import SharedMetricsDir
from trustmilter.daemon.supervisor import MilterStatus
from trustmilter.daemon.workers import Keeper, ServingPolicy, start_keeper
from trustmilter.pipeline import PipelineError
from trustmilter.startup import EXIT_RUNTIME, ServeError
from trustmilter.state.base import StateError, StateStore

log = logging.getLogger("trustmilter")

libmilter = callbacks.libmilter  # pymilter's C module


__all__ = ["ServeError", "serve"]


def _shared_metrics_dir(settings: Settings) -> SharedMetricsDir | None:
    """With metrics and several processes: their shared directory, made before
    any of them imports prometheus_client (see sharedmetrics.py)."""
    if not settings.metrics.listen or settings.milter.processes == 1:
        return None
    try:
        return SharedMetricsDir.create()
    except (OSError, RuntimeError) as error:
        raise ServeError(f"metrics: cannot share them between processes: {error}",
                         EXIT_RUNTIME) from error


def _start_metrics(settings: Settings, shared: SharedMetricsDir | None) -> Metrics:
    """This process's metrics; with `shared`, only the parent serves them."""
    if not settings.metrics.listen:
        return NullMetrics()
    from trustmilter.daemon.prometheus import start_metrics  # optional dependency

    try:
        if shared is None:
            return start_metrics(settings.metrics)
        return start_metrics(settings.metrics, shared.path, serve=shared.owned)
    except OSError as error:  # taken since `_refuse_what_is_taken` looked
        raise listen_failure(f"metrics.listen {settings.metrics.listen}", error) from error


def _open_state(settings: Settings) -> StateStore:
    """The policy's state store, wrapped so an outage follows `state.on_error`."""
    from trustmilter.state.open import ResilientStore, open_store

    try:
        store = open_store(settings.state)
    except StateError as error:
        raise ServeError(f"state: {error}", EXIT_RUNTIME) from error
    resilient: StateStore = ResilientStore(store, settings.state.on_error, log)
    return resilient


def _listen_for_reloads(holder: AppHolder, keeper: Keeper | None, status: MilterStatus) -> None:
    """Read commands from the supervisor (or the worker keeper); pass them on
    to the worker keeper; stop the milter when the sender goes away."""
    for line in sys.stdin:
        if line.strip() == "reload":
            if keeper is not None:
                keeper.send("reload")
            holder.reload()
            status.send("reloaded")  # the supervisor sends the next one only now
    log.info("control input ended (supervisor or worker keeper gone); stopping")
    # Stop the way SIGTERM does: libmilter's own signal thread takes it (the
    # only thread that does not block it), so shutdown follows one path.
    os.kill(os.getpid(), signal.SIGTERM)


def serve(policy_path: Path | None, socket_spec: str | None, foreground_log: bool,
          status_fd: int | None = None) -> int:
    """Run the milter until libmilter stops; returns the exit status.

    Raises ServeError (one line, and whether it is the configuration's fault)
    when it cannot start. `status_fd` is the supervisor's status pipe.
    """
    # Block the signals libmilter handles before any thread exists, so every
    # thread inherits the block and only libmilter's sigwait thread sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
    status = MilterStatus(status_fd)
    try:
        settings = load_policy(policy_path) if policy_path else Settings()
    except PolicyUnusable as error:
        raise ServeError(str(error)) from error
    where = setup_logging(settings.logging, force_stderr=foreground_log)
    spec = socket_spec or settings.milter.socket
    try:
        parsed = parse_socket(spec)
    except ValueError as error:
        raise ServeError(f"--socket {spec}: {error}") from error

    claim = _refuse_what_is_taken(parsed, "--socket" if socket_spec else "milter.socket",
                                  settings)
    try:
        # libmilter listens at the claim's private name; `install` puts it at the path.
        callbacks.register(f"unix:{claim.private_path}" if claim is not None else spec)
        old_umask = os.umask(0o117)  # the socket: owner and group (postfix) only, 0660
        try:
            libmilter.opensocket(True)
        except libmilter.error as error:
            raise listen_failure(f"socket {parsed}", error) from error
        finally:
            os.umask(old_umask)
        if claim is not None:
            claim.install()
            _tune_listener(SocketSpec("unix", path=claim.private_path))
        else:
            _tune_listener(parsed)
        shared = _shared_metrics_dir(settings)
        try:
            return _run_processes(settings, policy_path, shared, parsed, where, status)
        finally:
            if shared is not None:
                shared.remove()  # in the parent; a worker leaves it alone
    finally:
        if claim is not None:
            claim.release()  # only if it is still ours, and only in the first process


def _refuse_what_is_taken(
    listening: SocketSpec, where_set: str, settings: Settings
) -> UnixSocketClaim | None:
    """Before anything is bound: ServeError if the socket or the metrics port
    is another process's. The unix socket's claim (a stale file is removed).
    `where_set` names the socket's setting in messages."""
    claim = None
    if listening.family == "unix":
        claim = UnixSocketClaim.take(listening.path, where_set)
    else:
        refuse_if_taken(f"{where_set} {listening}", listening.host, listening.port)
    if settings.metrics.listen:
        host, _, port = settings.metrics.listen.rpartition(":")
        refuse_if_taken(f"metrics.listen {settings.metrics.listen}", host, int(port))
    return claim


def _run_processes(
    settings: Settings,
    policy_path: Path | None,
    shared: SharedMetricsDir | None,
    listening: SocketSpec,
    where_logging: str,
    status: MilterStatus,
) -> int:
    """Start the other processes, then run this process's milter until libmilter stops."""
    keeper: Keeper | None = None
    worker = False
    if settings.milter.processes > 1:
        # Python runs one thread at a time: more processes on the one listening
        # socket use more cores (the kernel spreads the connections). Forked
        # here, before this process has any thread, the keeper starts the
        # workers clean and replaces any that dies (workers.py).
        started = start_keeper(
            settings.milter.processes - 1, shared, ServingPolicy(settings, policy_path),
            listening.path if listening.family == "unix" else None,
        )
        if isinstance(started, Keeper):
            keeper = started
        else:  # we are a worker: a replacement runs what its siblings run now
            settings = started.settings
            worker = True
            status.close()  # the first process reports for all
    try:
        app, holder, executor, metrics = _start_services(settings, policy_path, shared)
    except ServeError:
        if keeper is not None:
            keeper.stop()
        raise
    if keeper is not None:
        keeper.watch()
    if not worker:
        _log_metrics_endpoint(settings, shared)
    threading.Thread(target=_listen_for_reloads, args=(holder, keeper, status), daemon=True).start()
    log.info(
        "listening on %s (policy %s, authserv-id %s, logging to %s, process %d)",
        listening, policy_path or "built-in defaults", app.authserv_id, where_logging,
        os.getpid(),
    )
    if not worker:
        _warn_unless_fully_qualified(settings, app.authserv_id)
        # The socket listens; libmilter accepts from here on. The supervisor
        # keeps the address to wake libmilter's listener when it stops us.
        status.send(f"ready {listening}")
    try:
        libmilter.main()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        if keeper is not None:
            keeper.stop()  # it stops the workers first
        if shared is not None:
            metrics.close()  # no scrape reads the files while serve() removes them
    log.info("stopped (process %d)", os.getpid())
    return 1 if keeper is not None and keeper.failed else 0


def _log_metrics_endpoint(settings: Settings, shared: SharedMetricsDir | None) -> None:
    """Where /metrics is served (nothing when metrics are off)."""
    if not settings.metrics.listen:
        return
    url = f"http://{settings.metrics.listen}/metrics"
    if shared is None:
        log.info("metrics served by process %d on %s", os.getpid(), url)
    else:
        log.info("metrics of %d processes recorded in %s, served by process %d on %s",
                 settings.milter.processes, shared.path, os.getpid(), url)


def _warn_unless_fully_qualified(settings: Settings, authserv_id: str) -> None:
    """authserv_id left to the host name, and that name is no mail server's name."""
    if settings.authserv_id or fully_qualified(authserv_id):
        return
    log.warning("authserv_id is not set and this host's name %r is not fully qualified:"
                " set authserv_id in the policy to this mail server's name"
                " (e.g. mx.example.org); Authentication-Results and the loop marker carry it",
                authserv_id)


def fully_qualified(name: str) -> bool:
    """Whether `name` looks like a host's name in the DNS (RFC 8601 §2.5: the
    authserv-id names the receiving domain), not ``localhost`` or a bare label."""
    labels = name.lower().rstrip(".").split(".")
    return len(labels) > 1 and "localhost" not in labels and labels[-1] != "localdomain"


def _start_services(
    settings: Settings, policy_path: Path | None, shared: SharedMetricsDir | None
) -> tuple[App, AppHolder, Executor, Metrics]:
    """This process's thread pool, metrics, state store and App, wired to pymilter."""
    executor = ThreadPoolExecutor(settings.milter.check_threads, "trustmilter-check")
    metrics = _start_metrics(settings, shared)
    state = _open_state(settings)
    try:
        app = build_app(settings, executor, metrics, state)
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
