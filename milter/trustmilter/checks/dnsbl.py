"""The client IP against DNS blocklists (RFC 5782)."""

from __future__ import annotations

from dataclasses import dataclass

from trustmilter.checks.blocklist import BlocklistConfig


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    lists: tuple[BlocklistConfig, ...] = ()
