"""A resolver that answers only from the cache, for running a check without waiting.

The pipeline first runs a check that waits on nothing but DNS in the
calling thread, through a `CacheOnlyResolver`: with a warm cache every
lookup is a hit and the check costs no thread hand-off. The first lookup
that would go to the network raises `WouldWait` instead, and the pipeline
runs the check again on its thread pool with the real resolver.

`WouldWait` derives from BaseException so that a check's own ``except
Exception`` (and pyspf's or dkimpy's) does not turn it into a result. Some
library code still swallows everything (pyspf's ``except: pass`` around an
``exp=`` lookup), so the resolver also remembers that it refused a lookup
(`missed`): a run that missed is thrown away whatever it returned.

An entry that expires between the cache check and the query is fetched
from the network after all: one lookup's wait in the calling thread, rare
and bounded by the resolver's lifetime. It raises nothing else of its own;
answers are the wrapped resolver's.
"""

from __future__ import annotations

from trustmilter.lookup.answer import DnsAnswer, Resolver


class WouldWait(BaseException):
    """A lookup was not in the cache; the check must run where it may wait."""


class CacheOnlyResolver:
    """Cache hits from `inner`; anything else raises WouldWait and sets `missed`."""

    __slots__ = ("_inner", "missed")

    def __init__(self, inner: Resolver) -> None:
        self._inner = inner
        self.missed = False

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """The cached answer; WouldWait when answering would take the network."""
        answer = self._inner.query_cached(name, rdtype)
        if answer is None:
            self.missed = True
            raise WouldWait(f"{name}/{rdtype}")
        return answer

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        return self._inner.answers_at_once(name, rdtype)

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        return self._inner.query_cached(name, rdtype)
