"""DKIM (RFC 6376, RFC 8463) via dkimpy: every signature, each its own result."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # RSA keys shorter than this fail (RFC 8301 §3.2: at least 1024 bits).
    min_key_bits: int = field(default=1024, metadata={"min": 512, "max": 16384})
    # Signatures beyond this many are not verified (a cost bound), only counted.
    max_signatures: int = field(default=10, metadata={"min": 1, "max": 100})
