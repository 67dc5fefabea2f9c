"""iprev (RFC 8601 §3): does the client IP's PTR name resolve back to it?"""

from __future__ import annotations

from dataclasses import dataclass, field

# Words that mark a consumer or dynamically addressed line in a PTR name
# (SEED-RULES §1: "4-3-2-1-cable-subscribers.isp.com").
DEFAULT_GENERIC_WORDS: tuple[str, ...] = (
    "dynamic", "dyn", "dhcp", "pool", "cable", "dsl", "adsl", "vdsl", "ppp", "pppoe",
    "client", "clients", "subscriber", "subscribers", "customer", "customers",
    "dialup", "dial", "broadband", "residential", "home", "user", "users",
)


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    generic_words: tuple[str, ...] = DEFAULT_GENERIC_WORDS
    # RFC 7208 §4.6.4 caps PTR names examined at 10; iprev follows suit.
    max_ptr_names: int = field(default=10, metadata={"min": 1, "max": 50})
