"""Do the envelope sender, From and (optionally) recipient domains exist?"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Also check the recipient domains (useful on a relay; pointless for own domains).
    check_recipients: bool = False
