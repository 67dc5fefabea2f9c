"""DMARC (RFC 7489): the From domain's policy and SPF/DKIM alignment."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
