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
(RFC 2308 §5). Temporary errors are never cached. In front of it a second
`LRUCache` of the same size keeps the typed answers by the (name, type)
text that was asked, each until dnspython's entry for it expires and no
longer: a warm lookup is one dictionary probe instead of name parsing,
dnspython's resolution loop and building the answer again.

Names that cannot exist in the DNS (an empty label, a label over 63 octets,
a name over 255 octets: RFC 1035 §2.3.4, a name that fails IDNA, or one
under the special-use ".invalid": RFC 6761 §6.4) are answered NXDOMAIN
without asking anyone: no server could hold them, and sending them would
only leak garbage from mail headers to the network (an authoritative-only
server even answers REFUSED, which would read as a temporary error).

An optional observer (the daemon's metrics) hears of every lookup that
went to the network, with its record type, latency and outcome; cache hits
and names refused locally are not reported, since they cost no network time.

It does not validate DNSSEC, apply per-transaction budgets, or search
domains (every name is absolute). `build_resolver` puts it behind
`FairShareResolver` (lookup/fairshare.py): one thread per question in
flight, and a bounded share for a domain that does not answer.

DIAGNOSTICS: `NetworkResolver(config)` raises ValueError for a nameserver
that is not "IP", "IP:port", "[IPv6]:port" or a bare IPv6 address, and
dnspython's NoResolverConfiguration when no nameservers are configured and
the system has none. `query` never raises for DNS conditions; it raises
ValueError for an unknown or meta record type (a programming error).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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

from trustmilter.config.dns import parse_nameserver
from trustmilter.domains import DomainTools
from trustmilter.lookup.answer import DnsAnswer, DnsStatus, Resolver

if TYPE_CHECKING:
    from trustmilter.config.dns import DnsConfig

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


# RFC 6761 §6.4: resolvers answer names under "invalid." negatively at once.
_INVALID_TLD = b"invalid"


def to_name(text: str) -> dns.name.Name | None:
    """`text` as an absolute DNS name, or None when no such name can exist."""
    if text in ("", "."):
        return None  # the root is never a mail domain; an empty name is a parsing slip
    try:
        name = dns.name.from_text(text, origin=dns.name.root)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        # EmptyLabel, LabelTooLong, NameTooLong, BadEscape, IDNA failures
        return None
    if len(name.labels) >= 2 and name.labels[-2].lower() == _INVALID_TLD:
        return None
    return name


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


@dataclass(frozen=True, slots=True)
class _Remembered:
    """A typed answer, kept as long as dnspython keeps the answer it came from."""

    answer: DnsAnswer
    expiration: float  # epoch seconds: dnspython's entry expires then
    chain_ttl: int | None  # positive answers age: their TTL is recomputed on each hit


class _TypedAnswers:
    """Bounded, thread-safe, least recently used first out; expired entries are misses."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()

    def get(self, key: tuple[str, str]) -> _Remembered | None:
        with self._lock:
            kept = self._entries.get(key)
            if kept is None:
                return None
            if kept.expiration <= time.time():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return kept

    def put(self, key: tuple[str, str], kept: _Remembered) -> None:
        with self._lock:
            self._entries[key] = kept
            self._entries.move_to_end(key)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)


class NetworkResolver:
    """The production resolver: dnspython, typed answers, shared TTL cache."""

    __slots__ = ("_observer", "_remembered", "_resolver")

    def __init__(self, config: DnsConfig, observer: DnsObserver | None = None) -> None:
        self._resolver = _dnspython_resolver(config)
        self._observer = observer
        size = config.cache_size
        self._remembered = _TypedAnswers(size) if size > 0 else None

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Look up `rdtype` records of `name`; never raises for DNS conditions."""
        known = self._recall(name, rdtype)
        if known is not None:
            return known
        kind = type_text(rdtype)
        qname = to_name(name)
        if qname is None:
            # RFC 1035 §2.3.4: such a name cannot exist anywhere.
            return DnsAnswer(plain_name(name), kind, DnsStatus.NXDOMAIN, error="invalid name")
        if self._observer is None or self._cached(qname, kind):
            return self._remember(name, rdtype, qname, *self._lookup(qname, kind))
        started = time.monotonic()
        result, keep = self._lookup(qname, kind)
        status = TIMEOUT_STATUS if result.error == TIMEOUT_STATUS else result.status.value
        self._observer(kind, time.monotonic() - started, status)
        return self._remember(name, rdtype, qname, result, keep)

    def recalled(self, name: str, rdtype: str) -> DnsAnswer | None:
        """The typed answer remembered for exactly this question, or None: a cache hit
        in one step, for layers in front of this one (lookup/fairshare.py)."""
        return self._recall(name, rdtype)

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        """The answer of a cache hit (or of a name that cannot exist), else None."""
        known = self._recall(name, rdtype)
        if known is not None:  # the common case: one look at the typed answers
            return known
        return self.query(name, rdtype) if self.answers_at_once(name, rdtype) else None

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        """True for a cache hit (and for a name that cannot exist)."""
        if self._remembered is not None and self._remembered.get((name, rdtype)) is not None:
            return True
        qname = to_name(name)
        return qname is None or self._cached(qname, type_text(rdtype))

    def _recall(self, name: str, rdtype: str) -> DnsAnswer | None:
        """The typed answer remembered for exactly this (name, type) text, or None."""
        if self._remembered is None:
            return None
        kept = self._remembered.get((name, rdtype))
        if kept is None:
            return None
        answer = kept.answer
        if kept.chain_ttl is None:
            return answer  # negative answers report the SOA's TTL unaged, as dnspython's do
        ttl = max(0, min(kept.chain_ttl, math.ceil(kept.expiration - time.time())))
        if ttl == answer.ttl:
            return answer
        return DnsAnswer(answer.name, answer.rdtype, answer.status, answer.rdatas, ttl)

    def _remember(
        self, name: str, rdtype: str, qname: dns.name.Name, answer: DnsAnswer,
        keep: _Remembered | None,
    ) -> DnsAnswer:
        """Keep `answer` for `_recall` as long as dnspython keeps its own; temperrors never."""
        if self._remembered is None or answer.status is DnsStatus.TEMPERROR:
            return answer
        if keep is None and answer.status is DnsStatus.NXDOMAIN and not answer.error:
            # dnspython keeps a whole-name NXDOMAIN under the ANY type.
            whole = self._resolver.cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
            keep = _Remembered(answer, whole.expiration, None) if whole is not None else None
        if keep is not None:
            self._remembered.put((name, rdtype), keep)
        return answer

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

    def _lookup(self, qname: dns.name.Name, kind: str) -> tuple[DnsAnswer, _Remembered | None]:
        """Ask dnspython (its cache, then the network) and type the outcome; with it,
        what to remember when dnspython's answer says how long it keeps it."""
        key = name_key(qname)
        try:
            answer = self._resolver.resolve(qname, kind, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as error:
            responses = list(error.kwargs.get("responses", {}).values())
            ttl = negative_ttl(responses[0] if responses else None)
            return DnsAnswer(key, kind, DnsStatus.NXDOMAIN, ttl=ttl), None
        except dns.exception.Timeout:
            return DnsAnswer(key, kind, DnsStatus.TEMPERROR, error="timeout"), None
        except dns.resolver.NoNameservers as error:
            return DnsAnswer(key, kind, DnsStatus.TEMPERROR, error=_why(error)), None
        except dns.resolver.YXDOMAIN:
            # RFC 6672 §2.2: the DNAME substitution overflows, so the name cannot exist.
            return DnsAnswer(key, kind, DnsStatus.NXDOMAIN, error="YXDOMAIN"), None
        except dns.exception.DNSException as error:
            return DnsAnswer(key, kind, DnsStatus.TEMPERROR, error=type(error).__name__), None
        rrset = answer.rrset
        if rrset is None:  # NODATA: the name exists, without records of this type
            nodata = DnsAnswer(key, kind, DnsStatus.NODATA, ttl=negative_ttl(answer.response))
            return nodata, _Remembered(nodata, answer.expiration, None)
        # A cached answer has aged: report what is left of the chain's TTL.
        chain_ttl = int(answer.chaining_result.minimum_ttl)
        left = math.ceil(answer.expiration - time.time())
        found = DnsAnswer(key, kind, DnsStatus.ANSWER, tuple(rrset), max(0, min(chain_ttl, left)))
        return found, _Remembered(found, answer.expiration, chain_ttl)


def build_resolver(
    config: DnsConfig,
    *,
    fixture_path: Path | None = None,
    record_to: Path | None = None,
    observer: DnsObserver | None = None,
    domains: DomainTools | None = None,
) -> Resolver:
    """The resolver the CLI asked for: replay a fixture, record, or plain network.

    `observer` (the daemon's metrics) hears of each network lookup; a
    replayed fixture makes none. Network lookups get a fair share per
    domain (lookup/fairshare.py), counted by `domains`' organisational
    domains (built here when not given).
    """
    # Imported here because these modules use this module's name helpers.
    from trustmilter.lookup.fairshare import SLOW_AFTER, FairShareResolver
    from trustmilter.lookup.fixture import Fixture, FixtureResolver, RecordingResolver

    if fixture_path is not None:
        return FixtureResolver(Fixture.load(fixture_path))
    org_domain = (domains if domains is not None else DomainTools()).org_domain
    # A lookup unanswered for one server timeout has already lost a try.
    slow_after = min(SLOW_AFTER, config.timeout)
    network = FairShareResolver(
        NetworkResolver(config, observer), org_domain, slow_after=slow_after)
    return RecordingResolver(network, record_to) if record_to is not None else network
