"""The App in force, swappable on SIGHUP without dropping a transaction.

A transaction takes the App current at its MAIL FROM and keeps it to the
end, so one message is never judged half by the old policy and half by
the new. A reload that fails keeps the old App and says why.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor
from pathlib import Path

from trustmilter.app import App
from trustmilter.checks import StartupError
from trustmilter.config.settings import Settings
from trustmilter.daemon.metrics import Metrics
from trustmilter.daemon.policyfile import PolicyUnusable, load_policy_off_path
from trustmilter.daemon.reloadreport import compare
from trustmilter.domains import DomainTools
from trustmilter.lookup.resolver import build_resolver
from trustmilter.pipeline import PipelineError
from trustmilter.state.base import StateStore

log = logging.getLogger(__name__)


class AppHolder:
    """Holds the current App; `reload()` replaces it only with a valid one."""

    def __init__(
        self,
        app: App,
        policy_path: Path | None,
        executor: Executor,
        metrics: Metrics | None = None,
        state: StateStore | None = None,
    ) -> None:
        self._app = app
        self._path = policy_path
        self._executor = executor
        self._metrics = metrics
        self._state = state
        # What this process was started with: the settings a reload cannot change.
        self._running = app.settings
        self._lock = threading.Lock()
        # Fixed at start-up (see MilterConfig.large_message_slots): held by the
        # sessions checking a message that spooled to disk.
        self.large_messages = threading.BoundedSemaphore(app.settings.milter.large_message_slots)

    def current(self) -> App:
        with self._lock:
            return self._app

    def reload(self) -> bool:
        """Re-read the policy file; on any error keep the old policy and log why.

        The file is parsed in a child process (policyfile.py), so a large one
        does not starve the threads answering the MTA, and a FIFO or a file
        too large is refused unread.
        """
        if self._path is None:
            log.info("reload: no policy file (built-in defaults); nothing to re-read")
            return True
        try:
            settings = load_policy_off_path(self._path)
            app = build_app(settings, self._executor, self._metrics, self._state)
        except (PolicyUnusable, StartupError, PipelineError) as error:
            log.error("policy reload refused, keeping the old policy: %s", error)
            self._count(ok=False)
            return False
        except Exception:  # anything else: keep serving with the old policy
            log.exception("policy reload failed, keeping the old policy")
            self._count(ok=False)
            return False
        with self._lock:
            old, self._app = self._app, app
        report = compare(self._running, old.settings, settings)
        if report.needs_restart:
            log.warning("%s", report.line(str(self._path)))
        else:
            log.info("%s", report.line(str(self._path)))
        self._count(ok=True)
        return True

    def _count(self, ok: bool) -> None:
        if self._metrics is not None:
            self._metrics.policy_reload(ok)


def build_app(
    settings: Settings,
    executor: Executor,
    metrics: Metrics | None = None,
    state: StateStore | None = None,
) -> App:
    """An App for the daemon: the check executor and the state store survive
    reloads, and every network DNS lookup is reported to `metrics`."""
    observer = metrics.dns_query if metrics is not None else None
    domains = DomainTools()
    resolver = build_resolver(settings.dns, observer=observer, domains=domains)
    return App.build(settings, resolver=resolver, executor=executor, state=state, domains=domains)
