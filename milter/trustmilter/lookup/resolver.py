"""The network resolver: dnspython behind the `Resolver` seam, with a shared cache.

`NetworkResolver` asks the configured nameservers (or the system's, from
/etc/resolv.conf, when none are configured) and turns every DNS condition
into a `DnsAnswer`: NXDOMAIN, NODATA (dnspython's NoAnswer), and TEMPERROR
for timeouts, SERVFAIL, REFUSED and unreachable servers. CNAME chains are
followed by dnspython and flattened: the answer carries the final records
under the name that was asked, with the smallest TTL of the chain.

Answers are kept in one bounded, thread-safe LRU cache (dnspython's own
`LRUCache`) that honours TTLs, negative answers included: NXDOMAIN and
NODATA live for min(SOA TTL, SOA MINIMUM) of the authority section
(RFC 2308 §5). Temporary errors are never cached.

Names that cannot exist in the DNS (an empty label, a label over 63 octets,
a name over 255 octets: RFC 1035 §2.3.4, or a name that fails IDNA) are
answered NXDOMAIN without asking anyone: no server could hold them, and
sending them would only leak garbage from mail headers to the network.

An optional observer (the daemon's metrics) hears of every lookup that
went to the network, with its record type, latency and outcome; cache hits
and names refused locally are not reported, since they cost no network time.

It does not validate DNSSEC, apply per-transaction budgets, or search
domains (every name is absolute).

DIAGNOSTICS: `NetworkResolver(config)` raises ValueError for a nameserver
that is not "IP", "IP:port", "[IPv6]:port" or a bare IPv6 address, and
dnspython's NoResolverConfiguration when no nameservers are configured and
the system has none. `query` never raises for DNS conditions; it raises
ValueError for an unknown or meta record type (a programming error).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.resolver

from trustmilter.lookup.answer import DnsAnswer, DnsStatus, Resolver
from trustmilter.lookup.config import parse_nameserver

if TYPE_CHECKING:
    from trustmilter.lookup.config import DnsConfig

# Told of each network lookup: (record type, seconds, status). The status is the
# DnsStatus value ("answer", "nxdomain", "nodata", "temperror"), except that a
# temperror from a timeout is reported as "timeout", so timeouts can be counted
# apart from servers that answered SERVFAIL or REFUSED.
DnsObserver = Callable[[str, float, str], None]
TIMEOUT_STATUS = "timeout"

# EDNS0 buffer size from DNS Flag Day 2020: big enough for most answers,
# small enough not to fragment; larger answers come back truncated and
# dnspython retries them over TCP (RFC 7766 §5).
EDNS_PAYLOAD = 1232


def to_name(text: str) -> dns.name.Name | None:
    """`text` as an absolute DNS name, or None when no such name can exist."""
    if text in ("", "."):
        return None  # the root is never a mail domain; an empty name is a parsing slip
    try:
        return dns.name.from_text(text, origin=dns.name.root)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        # EmptyLabel, LabelTooLong, NameTooLong, BadEscape, IDNA failures
        return None


def name_key(name: dns.name.Name) -> str:
    """The answer-name form: lower-case, escaped, no trailing dot."""
    return name.canonicalize().to_text(omit_final_dot=True)


def plain_name(text: str) -> str:
    """A best-effort answer name for text that is not a valid DNS name."""
    return text.lower().rstrip(".")


def type_text(rdtype: str) -> str:
    """The canonical mnemonic of a record type ("txt" -> "TXT"); ValueError if unknown."""
    try:
        value = dns.rdatatype.from_text(rdtype.strip().upper())
    except dns.exception.DNSException as error:
        raise ValueError(f"unknown DNS record type {rdtype!r}") from error
    if dns.rdatatype.is_metatype(value):
        raise ValueError(f"{rdtype!r} is a meta type, not a record type")
    return dns.rdatatype.to_text(value)


def _dnspython_resolver(config: DnsConfig) -> dns.resolver.Resolver:
    """A dnspython resolver configured from the policy's `dns:` section."""
    if config.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(*parse_nameserver(spec)) for spec in config.nameservers
        ]
    else:
        resolver = dns.resolver.Resolver(configure=True)  # /etc/resolv.conf
    resolver.timeout = config.timeout
    resolver.lifetime = config.lifetime
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    # LRUCache is locked internally, expires by TTL, and caches NXDOMAIN and
    # NoAnswer with the SOA-derived negative TTL; dnspython never caches
    # SERVFAIL or timeouts. Verified by tests/test_lookup_resolver.py.
    resolver.cache = dns.resolver.LRUCache(config.cache_size) if config.cache_size > 0 else None
    return resolver


def negative_ttl(response: dns.message.Message | None) -> int:
    """How long a negative answer may be cached: min(SOA TTL, MINIMUM) (RFC 2308 §5)."""
    if response is None:
        return 0
    for rrset in response.authority:
        for rdata in rrset:
            if isinstance(rdata, dns.rdtypes.ANY.SOA.SOA):
                return int(min(rrset.ttl, rdata.minimum))
    return 0  # no SOA: RFC 2308 §5 says do not cache


def _why(error: dns.resolver.NoNameservers) -> str:
    """The last server's complaint: an rcode name ("SERVFAIL") or an error class."""
    errors = error.kwargs.get("errors") or []
    if not errors:
        return "no nameserver answered"
    complaint = errors[-1][3]
    if isinstance(complaint, str):
        return complaint
    if isinstance(complaint, dns.exception.Timeout):
        return "timeout"
    return type(complaint).__name__


class NetworkResolver:
    """The production resolver: dnspython, typed answers, shared TTL cache."""

    __slots__ = ("_observer", "_resolver")

    def __init__(self, config: DnsConfig, observer: DnsObserver | None = None) -> None:
        self._resolver = _dnspython_resolver(config)
        self._observer = observer

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Look up `rdtype` records of `name`; never raises for DNS conditions."""
        kind = type_text(rdtype)
        qname = to_name(name)
        if qname is None:
            # RFC 1035 §2.3.4: such a name cannot exist anywhere.
            return DnsAnswer(plain_name(name), kind, DnsStatus.NXDOMAIN, error="invalid name")
        if self._observer is None or self._cached(qname, kind):
            return self._lookup(qname, kind)
        started = time.monotonic()
        result = self._lookup(qname, kind)
        status = TIMEOUT_STATUS if result.error == TIMEOUT_STATUS else result.status.value
        self._observer(kind, time.monotonic() - started, status)
        return result

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        """True for a cache hit (and for a name that cannot exist)."""
        qname = to_name(name)
        return qname is None or self._cached(qname, type_text(rdtype))

    def _cached(self, qname: dns.name.Name, kind: str) -> bool:
        """Whether dnspython will answer from its cache (the keys it looks up first)."""
        cache = self._resolver.cache
        if cache is None:
            return False
        rdtype = dns.rdatatype.from_text(kind)
        if cache.get((qname, rdtype, dns.rdataclass.IN)) is not None:
            return True
        # dnspython also keeps a whole-name NXDOMAIN under the ANY type.
        nx = cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        return nx is not None and nx.response.rcode() == dns.rcode.NXDOMAIN

    def _lookup(self, qname: dns.name.Name, kind: str) -> DnsAnswer:
        """Ask dnspython (its cache, then the network) and type the outcome."""
        key = name_key(qname)
        try:
            answer = self._resolver.resolve(qname, kind, search=False)
        except dns.resolver.NXDOMAIN as error:
            responses = list(error.kwargs.get("responses", {}).values())
            ttl = negative_ttl(responses[0] if responses else None)
            return DnsAnswer(key, kind, DnsStatus.NXDOMAIN, ttl=ttl)
        except dns.resolver.NoAnswer as error:
            ttl = negative_ttl(error.kwargs.get("response"))
            return DnsAnswer(key, kind, DnsStatus.NODATA, ttl=ttl)
        except dns.exception.Timeout:
            return DnsAnswer(key, kind, DnsStatus.TEMPERROR, error="timeout")
        except dns.resolver.NoNameservers as error:
            return DnsAnswer(key, kind, DnsStatus.TEMPERROR, error=_why(error))
        except dns.resolver.YXDOMAIN:
            # RFC 6672 §2.2: the DNAME substitution overflows, so the name cannot exist.
            return DnsAnswer(key, kind, DnsStatus.NXDOMAIN, error="YXDOMAIN")
        except dns.exception.DNSException as error:
            return DnsAnswer(key, kind, DnsStatus.TEMPERROR, error=type(error).__name__)
        rrset = answer.rrset
        if rrset is None:  # not reached with raise_on_no_answer, kept for the type checker
            return DnsAnswer(key, kind, DnsStatus.NODATA)
        # A cached answer has aged: report what is left of the chain's TTL.
        chain_ttl = int(answer.chaining_result.minimum_ttl)
        left = math.ceil(answer.expiration - time.time())
        return DnsAnswer(key, kind, DnsStatus.ANSWER, tuple(rrset), max(0, min(chain_ttl, left)))


def build_resolver(
    config: DnsConfig,
    *,
    fixture_path: Path | None = None,
    record_to: Path | None = None,
    observer: DnsObserver | None = None,
) -> Resolver:
    """The resolver the CLI asked for: replay a fixture, record, or plain network.

    `observer` (the daemon's metrics) hears of each network lookup; a
    replayed fixture makes none.
    """
    # Imported here because the fixture module uses this module's name helpers.
    from trustmilter.lookup.fixture import Fixture, FixtureResolver, RecordingResolver

    if fixture_path is not None:
        return FixtureResolver(Fixture.load(fixture_path))
    network = NetworkResolver(config, observer)
    return RecordingResolver(network, record_to) if record_to is not None else network
