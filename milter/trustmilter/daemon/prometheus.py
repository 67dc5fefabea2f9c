"""The daemon's counters as a Prometheus endpoint (issue 3, item 6).

`PrometheusMetrics` implements the `Metrics` protocol with
`prometheus_client` on a registry of its own, never the library's global
default one: two daemons (or two tests) in one process must not share or
collide on metric names. Every name starts with ``trustmilter_``.

`start_metrics(config)` serves ``/metrics`` over HTTP on `metrics.listen`
from a daemon thread, or returns `NullMetrics` when that is empty. With
several milter processes (sharedmetrics.py) each process records into a
shared directory in prometheus_client's multiprocess mode, and only the
parent serves, summing all of them with a `MultiProcessCollector`. The
endpoint has no authentication: listen on loopback (or a management
network) and let Prometheus scrape it there.

Label values come from the policy (rule names), the check registry
(methods, results) and fixed sets (actions, stages, record types), never
from the mail itself, so the number of series stays bounded.

DIAGNOSTICS: `start_metrics` raises OSError when the address cannot be
bound (in use, not local); the daemon reports that at start-up.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from trustmilter.daemon.metrics import Metrics, NullMetrics

if TYPE_CHECKING:
    from pathlib import Path
    from wsgiref.simple_server import WSGIServer

    from trustmilter.config.daemon import MetricsConfig

PREFIX = "trustmilter"
# DNS latency buckets: a warm recursive resolver answers in about a millisecond,
# a cold one in tens to hundreds; the top buckets hold lookups near the
# resolver's lifetime (a few seconds), which are the ones that hurt.
DNS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The resolver observer's statuses that count as failures (see lookup/resolver.py).
DNS_TIMEOUT = "timeout"
DNS_ERROR = "temperror"
# How long close() waits for the HTTP thread; it only finishes a scrape in progress.
CLOSE_TIMEOUT = 5.0


class PrometheusMetrics:
    """Counters, one histogram and one gauge on a private `CollectorRegistry`.

    With `multiprocess_dir` (prometheus_client's multiprocess mode, set up by
    sharedmetrics.py) they record into this process's files there instead,
    and `registry` reads the files of every process.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocess_dir: Path | None = None
    ) -> None:
        if registry is None:
            registry = CollectorRegistry(auto_describe=multiprocess_dir is None)
        self.registry = registry
        r: CollectorRegistry | None = registry
        if multiprocess_dir is not None:
            MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
            # Not registered: the collector already reads this process's files,
            # and prometheus_client's docs warn that both would export them twice.
            r = None
        self._messages = Counter(
            f"{PREFIX}_messages", "Messages by final action.", ["action"], registry=r
        )
        self._checks = Counter(
            f"{PREFIX}_check_results",
            "Check results of decided messages, by method and result.",
            ["method", "result"],
            registry=r,
        )
        self._rules = Counter(
            f"{PREFIX}_rule_hits",
            "Policy rule matches; mode=shadow counts what a shadow rule would have done.",
            ["rule", "mode"],
            registry=r,
        )
        self._dns_seconds = Histogram(
            f"{PREFIX}_dns_query_seconds",
            "Latency of DNS lookups that went to the network (cache hits excluded).",
            ["rdtype"],
            buckets=DNS_BUCKETS,
            registry=r,
        )
        self._dns_timeouts = Counter(
            f"{PREFIX}_dns_timeouts", "DNS lookups that timed out.", ["rdtype"], registry=r
        )
        self._dns_errors = Counter(
            f"{PREFIX}_dns_errors",
            "DNS lookups that failed otherwise (SERVFAIL, REFUSED, unreachable).",
            ["rdtype"],
            registry=r,
        )
        self._callback_errors = Counter(
            f"{PREFIX}_callback_errors",
            "Milter callbacks that raised and were answered with on_error, by stage.",
            ["stage"],
            registry=r,
        )
        self._reloads = Counter(
            f"{PREFIX}_policy_reloads",
            "SIGHUP policy reloads by outcome (failed: the old policy was kept).",
            ["outcome"],
            registry=r,
        )
        self._in_flight = Gauge(
            f"{PREFIX}_transactions_in_flight",
            "Transactions in progress.",
            registry=r,
            # With several processes: the sum over the live ones (ignored otherwise).
            multiprocess_mode="livesum",
        )
        # Series that exist from the start, so a dashboard can tell "none yet"
        # from "not exported"; rule and check labels appear with their first hit.
        for outcome in ("ok", "failed"):
            self._reloads.labels(outcome)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- the Metrics protocol (prometheus_client's metrics are thread-safe) --

    def message(self, action: str) -> None:
        self._messages.labels(action).inc()

    def check_result(self, method: str, result: str) -> None:
        self._checks.labels(method, result).inc()

    def rule_hit(self, rule: str, shadow: bool) -> None:
        self._rules.labels(rule, "shadow" if shadow else "enforce").inc()

    def dns_query(self, rdtype: str, seconds: float, status: str) -> None:
        self._dns_seconds.labels(rdtype).observe(seconds)
        if status == DNS_TIMEOUT:
            self._dns_timeouts.labels(rdtype).inc()
        elif status == DNS_ERROR:
            self._dns_errors.labels(rdtype).inc()

    def callback_error(self, stage: str) -> None:
        self._callback_errors.labels(stage).inc()

    def policy_reload(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "failed").inc()

    def in_flight(self, delta: int) -> None:
        self._in_flight.inc(delta)

    # -- the HTTP endpoint --

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics on host:port from a daemon thread; returns the bound address."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        """Stop the endpoint (at shutdown, and in tests); counting goes on."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(CLOSE_TIMEOUT)


def split_listen(listen: str) -> tuple[str, int]:
    """ "HOST:PORT" or "[IPv6]:PORT" as (host, port); MetricsConfig has validated it."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def start_metrics(
    config: MetricsConfig, multiprocess_dir: Path | None = None, *, serve: bool = True
) -> Metrics:
    """The daemon's metrics: served on `config.listen`, or NullMetrics when it is empty.

    With `multiprocess_dir` they are shared by several processes, and only the
    one that passes `serve` (the parent) serves them; the others only record.
    """
    if not config.listen:
        return NullMetrics()
    metrics = PrometheusMetrics(multiprocess_dir=multiprocess_dir)
    if serve:
        metrics.serve(*split_listen(config.listen))
    return metrics
