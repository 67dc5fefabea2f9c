"""SPF (RFC 7208) via pyspf for the MAIL FROM and HELO identities."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Also evaluate the HELO identity (RFC 7208 §2.3), reported as smtp.helo.
    check_helo: bool = True
