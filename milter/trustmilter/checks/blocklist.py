"""Configuration shared by the IP (DNSBL) and domain (URI) blocklist checks."""

from __future__ import annotations

from dataclasses import dataclass, field

# Return codes the big list operators use to say "your query was refused or
# is misconfigured", not "listed" (e.g. Spamhaus 127.255.255.252/254/255).
DEFAULT_ERROR_CODES: tuple[str, ...] = ("127.255.255.252", "127.255.255.254", "127.255.255.255")


@dataclass(frozen=True, slots=True)
class BlocklistConfig:
    """One DNS blocklist zone and how to read its answers."""

    zone: str
    # Score points a listing adds to the message (the list's weight).
    weight: float = field(default=1.0, metadata={"min": 0})
    # Answer address -> meaning, e.g. {"127.0.0.2": "spam source"}. An answer
    # inside 127.0.0.0/8 that is not mapped still counts as a listing.
    codes: dict[str, str] = field(default_factory=dict)
    # Answers meaning "query refused / error": logged and ignored, never a listing.
    error_codes: tuple[str, ...] = DEFAULT_ERROR_CODES
    # Short name for logs and findings; defaults to the zone.
    name: str = ""
