"""pyspf's DNS, asked through trustmilter's `Resolver`.

pyspf looks up the module global ``spf.DNSLookup(name, qtype, strict,
timeout)`` at call time. The registry (compat/pyspf/__init__.py) replaces
it with `spf_dns_lookup`, a dispatcher that asks whichever resolver
`spf_resolver(resolver)` has bound for the current thread (a ContextVar:
each SPF evaluation runs in one worker thread). With none bound it raises
spf.TempError: pyspf must never fall back to its own lookups. pyspf's
`timeout` argument is ignored; the resolver's own timeout and lifetime
apply.

Raises nothing of its own beyond spf.TempError inside pyspf.
"""

from __future__ import annotations

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
