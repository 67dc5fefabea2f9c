"""Bridges that make pyspf and dkimpy ask their DNS questions through a `Resolver`.

pyspf looks up the module global ``spf.DNSLookup(name, qtype, strict,
timeout)`` at call time. `install_spf_hook()` replaces it, once per process,
with a dispatcher that asks whichever resolver `spf_resolver(resolver)` has
bound for the current thread (a ContextVar: each SPF evaluation runs in one
worker thread). With none bound it raises spf.TempError: pyspf must never
fall back to its own lookups. pyspf's `timeout` argument is ignored; the
resolver's own timeout and lifetime apply.

dkimpy takes a ``dnsfunc(name, timeout=5)`` argument; `DkimDns(resolver)`
is one, and it remembers whether a key lookup hit a temporary error, since
dkimpy itself cannot tell "no key" from "could not ask".

Raises nothing of its own beyond spf.TempError inside pyspf.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.txtbase
import spf

from trustmilter.lookup.answer import DnsAnswer, DnsStatus, Resolver

# pyspf's record of one answer: ((name, qtype), value).
SpfRecord = tuple[tuple[str, str], Any]

_spf_resolver: ContextVar[Resolver | None] = ContextVar("trustmilter_spf_resolver", default=None)
_install_lock = threading.Lock()


def install_spf_hook() -> None:
    """Point pyspf's process-global DNSLookup at `spf_dns_lookup` (idempotent)."""
    with _install_lock:
        spf.DNSLookup = spf_dns_lookup


@contextmanager
def spf_resolver(resolver: Resolver) -> Iterator[Resolver]:
    """Let pyspf calls in this thread ask `resolver` until the block ends."""
    token = _spf_resolver.set(resolver)
    try:
        yield resolver
    finally:
        _spf_resolver.reset(token)


def spf_dns_lookup(
    name: str, qtype: str, strict: Any = True, timeout: Any = None
) -> list[SpfRecord]:
    """pyspf's DNSLookup contract, answered by the bound resolver."""
    resolver = _spf_resolver.get()
    if resolver is None:
        raise spf.TempError("DNS no resolver bound for this SPF evaluation")
    answer = resolver.query(name, qtype)
    if answer.status is DnsStatus.TEMPERROR:
        # RFC 7208 §5: a DNS error other than NXDOMAIN is a temperror.
        raise spf.TempError(f"DNS {answer.error or 'temporary error'}")
    return [((name, qtype), value) for value in spf_values(answer)]


def spf_values(answer: DnsAnswer) -> list[Any]:
    """Record values in the shapes pyspf's DNSLookup_dnspython returns."""
    values: list[Any] = []
    for rdata in answer.rdatas:
        if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
            values.append(str(rdata.address))
        elif isinstance(rdata, dns.rdtypes.ANY.MX.MX):
            values.append((int(rdata.preference), rdata.exchange))
        elif isinstance(rdata, dns.rdtypes.ANY.PTR.PTR):
            values.append(rdata.target.to_text(omit_final_dot=True))
        elif isinstance(rdata, dns.rdtypes.txtbase.TXTBase):  # TXT and SPF (type 99)
            values.append(tuple(rdata.strings))
    return values


class DkimDns:
    """dkimpy's dnsfunc over a Resolver; `.temperror` says a lookup could not be answered."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._lock = threading.Lock()
        self.temperror = False
        self.statuses: dict[str, DnsStatus] = {}

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """The TXT record at `name` as bytes (strings of one record joined), or None."""
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                return None  # dkimpy's get_txt does the same
        answer = self._resolver.query(name, "TXT")
        with self._lock:
            self.statuses[answer.name] = answer.status
            if answer.status is DnsStatus.TEMPERROR:
                self.temperror = True
        # Like dkimpy's get_txt: the first record, its character-strings joined
        # (RFC 6376 §3.6.2.2); several key records are the signer's problem.
        for rdata in answer.rdatas:
            if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
                return b"".join(rdata.strings)
        return None
