"""Typed DNS outcomes and the resolver interface the checks depend on.

A lookup never raises for a DNS condition: it returns a `DnsAnswer` whose
`status` says what happened, because each check maps those conditions to
its own RFC result (NXDOMAIN is `none` for SPF but `fail` for iprev; a
timeout is `temperror` everywhere).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import dns.rdata
import dns.rdtypes.mxbase
import dns.reversename


class DnsStatus(StrEnum):
    """What a query came back with."""

    ANSWER = "answer"  # at least one record of the asked type
    NXDOMAIN = "nxdomain"  # the name does not exist
    NODATA = "nodata"  # the name exists, but has no record of this type
    TEMPERROR = "temperror"  # SERVFAIL, REFUSED, timeout, no server reachable


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One query's outcome. `name` is lower-case without the trailing dot."""

    name: str
    rdtype: str
    status: DnsStatus
    rdatas: tuple[dns.rdata.Rdata, ...] = ()
    ttl: int = 0
    error: str = ""  # why, for TEMPERROR: "timeout", "SERVFAIL", "REFUSED"...

    @property
    def ok(self) -> bool:
        """True when records of the asked type came back."""
        return self.status is DnsStatus.ANSWER

    @property
    def exists(self) -> bool | None:
        """True if the name exists, False on NXDOMAIN, None when unknown (temperror)."""
        if self.status is DnsStatus.TEMPERROR:
            return None
        return self.status is not DnsStatus.NXDOMAIN

    def addresses(self) -> list[str]:
        """A/AAAA records as address strings."""
        return [str(r.address) for r in self.rdatas if hasattr(r, "address")]

    def targets(self) -> list[str]:
        """PTR/CNAME/NS targets, lower-case, no trailing dot."""
        return [
            r.target.to_text(omit_final_dot=True).lower()
            for r in self.rdatas
            if hasattr(r, "target")
        ]

    def mx_hosts(self) -> list[tuple[int, str]]:
        """MX records as (preference, host) sorted by preference."""
        found = [
            (int(r.preference), r.exchange.to_text(omit_final_dot=True).lower())
            for r in self.rdatas
            if isinstance(r, dns.rdtypes.mxbase.MXBase)
        ]
        return sorted(found)

    def txt_strings(self) -> list[bytes]:
        """TXT records, each record's character-strings joined (RFC 7208 §3.3)."""
        return [b"".join(r.strings) for r in self.rdatas if hasattr(r, "strings")]


class Resolver(Protocol):
    """The DNS seam. Implementations must be safe to call from many threads."""

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Look up `rdtype` records of `name`; never raises for DNS conditions."""
        ...

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        """True when `query` would answer without waiting on the network (a cache hit)."""
        ...

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        """`query`'s answer when it needs no wait on the network (a cache hit), else
        None: `answers_at_once` and `query` in one step, for callers that ask
        every lookup of every message this way (the pipeline's first run)."""
        ...


@functools.lru_cache(maxsize=4096)  # every check that looks up the client asks
def reverse_name(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, zone: str = "") -> str:
    """The reverse-lookup name of `ip`: reversed octets (IPv4) or nibbles (IPv6).

    With `zone` it is the DNSBL query name, e.g. ``2.0.0.127.zen.example.org``.
    """
    labels = dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True)
    if zone:
        labels = labels.rsplit(".", 2)[0] + "." + zone.rstrip(".")
    return labels.lower()
