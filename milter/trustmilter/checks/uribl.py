"""Domains of links in the message body against URI blocklists (RFC 5782 §2.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trustmilter.checks.blocklist import BlocklistConfig


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    lists: tuple[BlocklistConfig, ...] = ()
    # At most this many distinct registered domains are looked up per message.
    max_domains: int = field(default=20, metadata={"min": 1, "max": 500})
