"""A fair share of the DNS per domain: a domain that does not answer costs only its own mail.

Why. Every check waits for its DNS answers on a thread of the process's
shared check pool (`milter.check_threads`). A lookup to a domain whose
servers never answer keeps its thread for the whole lookup lifetime (5 s
by default), longer than a message's budget. Enough concurrent sessions
for one such domain fill the pool, and other senders' checks queue behind
them until their own budget runs out: mail from healthy domains was
deferred because of somebody else's broken DNS.

What `FairShareResolver` does, in front of the network resolver:

- Cache hits are answered at once in the calling thread, as before.
- A question that needs the network is asked on a thread of its own (a
  "flight"), once however many callers ask it meanwhile (single flight:
  100 sessions for one dead domain send one query, not 100). Callers wait
  for the flight's answer on an event, so a caller can stop waiting while
  the lookup itself runs on to its lifetime and fills the cache.
- Callers are counted per *domain of the question*: the registrable
  domain (public suffix list), so `_dmarc.x.example`,
  `sel._domainkey.x.example` and made-up `a1.x.example` are all
  `x.example`; reverse names by the network a reverse zone is usually
  delegated for (an IPv4 /24, an IPv6 /48), not by `in-addr.arpa`.
- While a domain answers, nothing is limited: every caller waits for its
  answer, so mail is judged exactly as without this layer.
- A domain turns *slow* once one of its lookups has gone unanswered for
  `slow_after` (one server timeout, at most `SLOW_AFTER`), and stays slow
  for `hold` seconds after one of its lookups timed out (the hold of
  authentication_milter's Resolver.pm, made process-wide and short). Any
  answer of the domain (records, NXDOMAIN, NODATA) ends the hold.
- While a domain is slow, only its `share` longest-waiting callers keep
  waiting (they are its probes: they get its answer, or its timeout, as
  before). Every other caller for it is answered TEMPERROR at once
  (`NOT_ANSWERING`), and callers already waiting beyond the share are
  released with that TEMPERROR when the domain turns slow.

So a dead domain holds at most `share` check threads (after `slow_after`),
its own mail gets the temperror it would get anyway (a 451 within its
budget, RFC 7489 §6.6.2: never a 5xx), and nobody else waits for it. New
network questions of a slow domain come only from its `share` probes, so
its lookup threads are bounded too, apart from those it started before it
looked slow (each ends within the lifetime).

The price: a domain whose servers are merely slow (an answer after more
than `slow_after`) and that has more than `share` callers at once gives
those beyond the share a temperror, i.e. a 451 and a retry that will find
the answer cached. Temporary errors are never cached here (a flight's
answer is shared only by the callers it was asked for); the per-message
budget is the pipeline's, unchanged. Answers are the inner resolver's,
unchanged. It raises what the inner resolver raises (nothing for DNS
conditions).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trustmilter.lookup.answer import DnsAnswer, DnsStatus
from trustmilter.lookup.resolver import NetworkResolver, name_key, plain_name, to_name, type_text

# Callers of one slow domain that keep waiting for it: enough for its
# handful of different questions at once (TXT, MX, A, _dmarc, a DKIM key),
# a small part of the 64 check threads.
DOMAIN_SHARE = 4
# The longest a lookup may go unanswered before its domain counts as slow
# (with the shipped 2 s server timeout). Cold answers from a working
# resolver take milliseconds to a few hundred.
SLOW_AFTER = 1.0
# How long a timeout marks its domain slow. Longer than a lookup's lifetime,
# so that a dead domain is still known dead when its probes time out again.
HOLD = 60.0
# DnsAnswer.error of a lookup refused because its domain is not answering.
NOT_ANSWERING = "domain not answering"
# Labels of the reverse zone a question is counted under (RFC 1035 §3.5,
# RFC 3596 §2.5): an IPv4 /24 ("2.0.192.in-addr.arpa"), an IPv6 /48.
_REVERSE_LABELS = {"in-addr.arpa": 3 + 2, "ip6.arpa": 12 + 2}
# Idle domains remembered (for their hold) before the table is swept.
_SWEEP_AT = 1024

OrgDomain = Callable[[str], str | None]
Question = tuple[str, str]


def question_domain(name: str, org_domain: OrgDomain) -> str:
    """The domain whose fair share a lookup of `name` counts against."""
    key = name.lower().rstrip(".")
    for suffix, labels in _REVERSE_LABELS.items():
        if key.endswith("." + suffix):
            return ".".join(key.split(".")[-labels:])
    return org_domain(key) or key


@dataclass(eq=False, slots=True)
class _Flight:
    """One question on its way to the network, and its answer once back."""

    started: float
    done: threading.Event = field(default_factory=threading.Event)
    answer: DnsAnswer | None = None
    error: Exception | None = None

    def outcome(self) -> DnsAnswer:
        if self.error is not None:
            raise self.error
        assert self.answer is not None  # set before `done`
        return self.answer


@dataclass(eq=False, slots=True)
class _Domain:
    """What one domain has in flight, who waits for it, and how long it is held."""

    flights: dict[Question, _Flight] = field(default_factory=dict)
    waiters: dict[object, None] = field(default_factory=dict)  # in order of arrival
    held_until: float = 0.0

    def idle(self, now: float) -> bool:
        return not self.flights and not self.waiters and self.held_until <= now


class FairShareResolver:
    """`inner` with single-flight lookups and a bounded share per slow domain."""

    __slots__ = ("_clock", "_domains", "_hold", "_inner", "_lock", "_org_domain",
                 "_share", "_slow_after", "_sweep_at")

    def __init__(
        self,
        inner: NetworkResolver,
        org_domain: OrgDomain,
        *,
        share: int = DOMAIN_SHARE,
        slow_after: float = SLOW_AFTER,
        hold: float = HOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._org_domain = org_domain
        self._share = share
        self._slow_after = slow_after
        self._hold = hold
        self._clock = clock
        self._lock = threading.Lock()
        self._domains: dict[str, _Domain] = {}
        self._sweep_at = _SWEEP_AT

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        """True for a cache hit; a refusal is not promised, since it may not last."""
        return self._inner.answers_at_once(name, rdtype)

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        """A cache hit is answered by the inner resolver, as `query` answers it."""
        return self._inner.query_cached(name, rdtype)

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """The inner resolver's answer, or TEMPERROR at once for a slow domain's extra callers."""
        known = self._inner.recalled(name, rdtype)
        if known is not None:  # the common case, a remembered answer: one cache look
            return known
        if self._inner.answers_at_once(name, rdtype):
            return self._inner.query(name, rdtype)
        key = question_domain(name, self._org_domain)
        ticket = object()
        with self._lock:
            domain = self._domain(key)
            now = self._clock()
            if self._slow(domain, now) and len(domain.waiters) >= self._share:
                return _not_answering(name, rdtype)
            flight = domain.flights.get((name, rdtype)) or self._launch(
                key, domain, (name, rdtype), now)
            if flight is not None:
                domain.waiters[ticket] = None
        if flight is None:  # no thread to be had: ask here, as before this layer
            return self._inner.query(name, rdtype)
        try:
            if self._wait(domain, flight, ticket):
                return flight.outcome()
            return _not_answering(name, rdtype)
        finally:
            with self._lock:
                del domain.waiters[ticket]
                self._forget_if_idle(key, domain)

    def _wait(self, domain: _Domain, flight: _Flight, ticket: object) -> bool:
        """Wait for `flight`; False if released because its domain turned slow
        while this caller was beyond the domain's share."""
        while True:
            with self._lock:
                if flight.done.is_set():
                    return True
                now = self._clock()
                if self._slow(domain, now):
                    if ticket not in itertools.islice(domain.waiters, self._share):
                        return False
                    timeout = None  # a probe: its lookup ends within the lifetime
                else:
                    oldest = min(f.started for f in domain.flights.values())
                    timeout = max(0.0, oldest + self._slow_after - now)
            flight.done.wait(timeout)

    def _slow(self, domain: _Domain, now: float) -> bool:
        if now < domain.held_until:
            return True
        return any(now - f.started >= self._slow_after for f in domain.flights.values())

    def _launch(
        self, key: str, domain: _Domain, question: Question, now: float
    ) -> _Flight | None:
        """Start asking `question` on its own thread (the lock is held); None when
        the process cannot start one more thread."""
        flight = _Flight(started=now)
        thread = threading.Thread(
            target=self._fly, args=(key, domain, question, flight),
            name=f"dns {question[0]}/{question[1]}", daemon=True,
        )
        domain.flights[question] = flight
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread"
            del domain.flights[question]
            return None
        return flight

    def _fly(self, key: str, domain: _Domain, question: Question, flight: _Flight) -> None:
        """Ask the inner resolver; record what the answer says about the domain."""
        try:
            flight.answer = self._inner.query(*question)
        except Exception as error:  # a programming error: the callers raise it
            flight.error = error
        finally:
            # Always: a waiting probe has no timeout of its own.
            with self._lock:
                del domain.flights[question]
                self._judge(domain, flight.answer)
                flight.done.set()
                self._forget_if_idle(key, domain)

    def _judge(self, domain: _Domain, answer: DnsAnswer | None) -> None:
        """A timeout holds the domain (slow); any answer from it ends the hold."""
        if answer is None:
            return
        if answer.status is not DnsStatus.TEMPERROR:
            domain.held_until = 0.0
        elif answer.error == "timeout":
            domain.held_until = self._clock() + self._hold

    def _domain(self, key: str) -> _Domain:
        """The entry for `key`, made if new (the lock is held)."""
        domain = self._domains.get(key)
        if domain is None:
            if len(self._domains) >= self._sweep_at:
                now = self._clock()
                for old in [k for k, d in self._domains.items() if d.idle(now)]:
                    del self._domains[old]
                self._sweep_at = max(_SWEEP_AT, 2 * len(self._domains))
            domain = self._domains[key] = _Domain()
        return domain

    def _forget_if_idle(self, key: str, domain: _Domain) -> None:
        if domain.idle(self._clock()) and self._domains.get(key) is domain:
            del self._domains[key]


def _not_answering(name: str, rdtype: str) -> DnsAnswer:
    """The TEMPERROR of a caller turned away from a slow domain."""
    qname = to_name(name)
    shown = name_key(qname) if qname is not None else plain_name(name)
    return DnsAnswer(shown, type_text(rdtype), DnsStatus.TEMPERROR, error=NOT_ANSWERING)
