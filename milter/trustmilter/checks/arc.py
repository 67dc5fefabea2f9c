"""ARC (RFC 8617) via dkimpy: chain validation and trusted sealers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Sealing domains (ARC-Seal d=) whose arc=pass lets a forwarded message keep
    # the authentication results they recorded before forwarding.
    trusted_sealers: tuple[str, ...] = ()
