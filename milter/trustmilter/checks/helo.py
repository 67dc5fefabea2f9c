"""HELO/EHLO name sanity (RFC 5321 §2.3.5, §4.1.4; SEED-RULES §2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
