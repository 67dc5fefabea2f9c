"""The `dns:` section of policy.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DnsConfig:
    # "host" or "host:port" ("[::1]:5353" for IPv6 with a port); empty means
    # the system resolver from /etc/resolv.conf.
    nameservers: tuple[str, ...] = ()
    # Seconds to wait for one server's answer to one query.
    timeout: float = field(default=2.0, metadata={"min": 0.05, "max": 60})
    # Seconds one lookup may take in all (retries and servers included).
    lifetime: float = field(default=5.0, metadata={"min": 0.05, "max": 120})
    # Answers kept in the shared cache (TTL honoured, negative answers too).
    cache_size: int = field(default=20000, metadata={"min": 0, "max": 10_000_000})
