"""One Prometheus endpoint for several milter processes (milter.processes > 1).

With `metrics.listen` set and more than one process, serve.py uses
prometheus_client's multiprocess mode: every process (the parent `_serve`
and its forked workers) records its metrics into memory-mapped files of its
own in one private directory, and the parent alone serves ``/metrics`` with
a `MultiProcessCollector`, which sums the files of all processes. Counters
and the DNS histogram add up over every process, dead ones included; the
in-flight gauge is ``livesum``, so a worker that exited drops out once
`process_exited` has removed its file.

`SharedMetricsDir.create()` makes the directory (``tempfile.mkdtemp``: fresh,
mode 0700) and sets PROMETHEUS_MULTIPROC_DIR in the environment. That
variable is the one piece of process-global state here, and
prometheus_client's multiprocess mode requires it: the library picks its
value class (memory-mapped or in-memory) when ``prometheus_client.values``
is first imported, and names each process's files from it at every metric
creation. So `create()` must run before this process imports
prometheus_client and before the workers are forked (they inherit the
environment and import it after the fork). Only the process that created
the directory removes it, at shutdown.

This module does not import prometheus_client at import time.

DIAGNOSTICS: `create()` raises RuntimeError when prometheus_client is
already imported (its metrics would silently stay in memory, and the
endpoint would show zeros), and OSError when the directory cannot be made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class SharedMetricsDir:
    """The directory every milter process records its metrics into."""

    path: Path
    # The creating process: the one that serves /metrics and removes the directory.
    owner: int = field(default_factory=os.getpid)

    @classmethod
    def create(cls) -> SharedMetricsDir:
        """A fresh private directory, set as PROMETHEUS_MULTIPROC_DIR for this
        process and the ones it forks from now on."""
        if "prometheus_client" in sys.modules:
            raise RuntimeError(
                f"prometheus_client was imported before {ENV} was set: "
                "its metrics would not be shared between processes"
            )
        path = Path(tempfile.mkdtemp(prefix="trustmilter-metrics-"))
        os.environ[ENV] = str(path)
        return cls(path)

    @property
    def owned(self) -> bool:
        """Whether this process created the directory (and so serves and removes it)."""
        return os.getpid() == self.owner

    def process_exited(self, pid: int) -> None:
        """Drop the live gauges of process `pid`, which has exited; its counters stay."""
        from prometheus_client import multiprocess

        # At shutdown `remove()` may already be deleting the same files.
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        """Delete the directory, in the creating process only (at its exit).

        The variable stays set: prometheus_client reads it for every new
        label combination, and without it would fail rather than skip."""
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
