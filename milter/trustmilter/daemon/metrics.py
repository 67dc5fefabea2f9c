"""What the daemon counts, behind one small interface.

The adapter reports events to a `Metrics`; `NullMetrics` ignores them
(the default, when `metrics.listen` is empty) and `PrometheusMetrics`
(prometheus.py) exports them. Implementations must be thread-safe: every
SMTP session reports from its own thread.
"""

from __future__ import annotations

from typing import Protocol


class Metrics(Protocol):
    def message(self, action: str) -> None:
        """A message got its final action (accept, low-trust, quarantine, tempfail, ...)."""

    def check_result(self, method: str, result: str) -> None:
        """One check result (result name, outcome) for a decided message."""

    def rule_hit(self, rule: str, shadow: bool) -> None:
        """A policy rule matched; `shadow` ones only "would have" acted."""

    def dns_query(self, rdtype: str, seconds: float, status: str) -> None:
        """One DNS lookup that went to the network: its latency and outcome."""

    def callback_error(self, stage: str) -> None:
        """A milter callback raised and was answered with on_error."""

    def policy_reload(self, ok: bool) -> None:
        """A SIGHUP reload succeeded or was refused (old policy kept)."""

    def in_flight(self, delta: int) -> None:
        """Transactions in progress went up (+1) or down (-1)."""

    def close(self) -> None:
        """Stop exporting (at shutdown); events after this may be ignored."""


class NullMetrics:
    """Counts nothing (metrics are off)."""

    def message(self, action: str) -> None:
        pass

    def check_result(self, method: str, result: str) -> None:
        pass

    def rule_hit(self, rule: str, shadow: bool) -> None:
        pass

    def dns_query(self, rdtype: str, seconds: float, status: str) -> None:
        pass

    def callback_error(self, stage: str) -> None:
        pass

    def policy_reload(self, ok: bool) -> None:
        pass

    def in_flight(self, delta: int) -> None:
        pass

    def close(self) -> None:
        pass
