"""RFC 5322 header sanity (SEED-RULES §4: mail from web forms and scripts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
