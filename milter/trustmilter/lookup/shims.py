"""dkimpy's DNS, asked through a `Resolver`.

dkimpy takes a ``dnsfunc(name, timeout=5)`` argument; `DkimDns(resolver)`
is one, and it remembers whether a key lookup hit a temporary error, since
dkimpy itself cannot tell "no key" from "could not ask". (pyspf has no such
argument: its DNS hook replaces a module global, in compat/pyspf/dns.py.)
"""

from __future__ import annotations

import threading

import dns.rdtypes.txtbase

from trustmilter.lookup.answer import DnsStatus, Resolver


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
