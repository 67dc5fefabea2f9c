"""The milter process: builds the App, runs libmilter, reloads on request.

libmilter owns SIGHUP, SIGTERM and SIGINT in this process (its signal
thread stops the milter on any of them), so a reload cannot arrive as a
signal here. The supervising `trustmilter run` process (supervisor.py)
takes SIGHUP and writes ``reload`` on our standard input instead; end of
input means the supervisor is gone, and we stop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import Milter

from trustmilter.checks import StartupError
from trustmilter.daemon.adapter import ACTIONS, TrustMilter
from trustmilter.daemon.apps import AppHolder, build_app
from trustmilter.daemon.logsetup import setup_logging
from trustmilter.daemon.metrics import Metrics, NullMetrics
from trustmilter.daemon.session import SmtpSession
from trustmilter.daemon.socketspec import parse_socket
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


def _start_metrics(policy: Policy) -> Metrics:
    if not policy.metrics.listen:
        return NullMetrics()
    from trustmilter.daemon.prometheus import start_metrics  # optional dependency

    return start_metrics(policy.metrics)


def _open_state(policy: Policy) -> StateStore:
    """The policy's state store, wrapped so an outage follows `state.on_error`."""
    from trustmilter.state.open import ResilientStore, open_store

    try:
        store = open_store(policy.state)
    except StateError as error:
        raise ServeError(f"state: {error}") from error
    resilient: StateStore = ResilientStore(store, policy.state.on_error, log)
    return resilient


def _listen_for_reloads(holder: AppHolder) -> None:
    """Read commands from the supervisor; stop the milter when it goes away."""
    for line in sys.stdin:
        if line.strip() == "reload":
            holder.reload()
    log.info("supervisor gone; stopping")
    libmilter.stop()


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
    executor = ThreadPoolExecutor(policy.milter.check_threads, "trustmilter-check")
    metrics = _start_metrics(policy)
    state = _open_state(policy)
    try:
        app = build_app(policy, executor, metrics, state)
    except (StartupError, PipelineError) as error:
        raise ServeError(str(error)) from error
    holder = AppHolder(app, policy_path, executor, metrics, state)
    Milter.factory = lambda: TrustMilter(SmtpSession(holder, metrics), metrics)
    threading.Thread(target=_listen_for_reloads, args=(holder,), daemon=True).start()

    _register(spec)
    old_umask = os.umask(0o117)  # the socket: owner and group (postfix) only, 0660
    try:
        libmilter.opensocket(True)
    finally:
        os.umask(old_umask)
    if parsed.family != "unix":
        _disable_nagle(parsed.port)
    log.info(
        "listening on %s (policy %s, authserv-id %s, logging to %s)",
        parsed, policy_path or "built-in defaults", app.authserv_id, where,
    )
    try:
        libmilter.main()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    log.info("stopped")
    return 0


def _disable_nagle(port: int) -> None:
    """TCP_NODELAY on libmilter's listening socket (Linux passes it on to each
    accepted connection). libmilter writes each end-of-message edit and the
    reply separately; with Nagle on, the second small write waits for an ACK
    the MTA delays ~40 ms. libmilter offers no hook, so find its socket by port.
    """
    for entry in os.listdir("/proc/self/fd"):
        try:
            fd = int(entry)
            if not os.readlink(f"/proc/self/fd/{entry}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.type == socket.SOCK_STREAM and sock.getsockname()[1] == port:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return
        except (OSError, ValueError, IndexError, TypeError):
            continue
    log.warning("could not set TCP_NODELAY on port %d; end-of-message replies may lag", port)


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
