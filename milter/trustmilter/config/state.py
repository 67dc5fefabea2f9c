"""The `state:` section of policy.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trustmilter.config.errors import InvalidField


@dataclass(frozen=True, slots=True)
class StateConfig:
    # sqlite: one file, shared by the trustmilter processes of one host (the
    # default, no service needed); redis: one view for a fleet of MTAs;
    # memory: this process only, forgotten on restart (tests, trials).
    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    # The SQLite database file; its directory is created (mode 0700) if missing.
    sqlite_path: str = "/var/lib/trustmilter/state.sqlite3"
    # redis://[:password@]host:port/db or unix:///path/redis.sock?db=0
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every Redis key starts with this, so several deployments can share a server.
    key_prefix: str = "trustmilter:"
    # Seconds one state operation may take before it counts as "backend down".
    timeout: float = field(default=0.5, metadata={"min": 0.01, "max": 30})
    # Backend down: tempfail (451 4.3.0, the sender retries) or memory (count in
    # this process until the backend is back, then merge what was written in
    # memory into it: state/journal.py). Either way: one log line.
    on_error: Literal["tempfail", "memory"] = "tempfail"

    def __post_init__(self) -> None:
        if self.backend == "sqlite" and not self.sqlite_path.startswith("/"):
            raise InvalidField(("sqlite_path",), "an absolute path", self.sqlite_path)
        if self.backend == "redis" and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise InvalidField(
                ("redis_url",), "redis://host:port/db or unix:///path", self.redis_url
            )
