"""Typed results of the checks.

A check never tells the policy engine what to do; it reports what it saw as a
`CheckResult`: an RFC 8601 style outcome plus named findings. The policy
engine turns those into a verdict, and `authresults` turns the
authentication ones into an Authentication-Results header.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from trustmilter.state.base import StateStore


class Outcome(StrEnum):
    """Result values; the authentication ones are RFC 8601 §2.7 names."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    POLICY = "policy"
    SKIPPED = "skipped"  # the check did not apply (e.g. no signature, trusted client)


class AuthMethod(StrEnum):
    """The RFC 8601 methods trustmilter writes into Authentication-Results.

    The order of the members is the order of the header's clauses (RFC 8601
    leaves it open): the SMTP AUTH identity, then the connection (iprev),
    the envelope (spf), the message (dkim), dmarc after the spf and dkim it
    is built on, and arc last.
    """

    AUTH = "auth"
    IPREV = "iprev"
    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    ARC = "arc"


@dataclass(frozen=True, slots=True)
class Finding:
    """One named observation, e.g. ``iprev.ptr_generic``.

    `score` is a weight the check's own configuration attached (a DNSBL's
    weight); the policy's score table adds to it.
    """

    name: str
    detail: str = ""
    score: float = 0.0
    # A finding that vouches for the sender only as far as these signals go
    # (``reputation.learned``: what its released mail was held for). The
    # policy lets it exempt from rules and points of those signals only.
    vouches_for: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class HeaderRequest:
    """A header field a check asks to be added to delivered mail.

    `when` is "delivered" (every delivered message: the bounce summary for
    the help desk) or "suppressed" (delivered mail the policy marks as
    automated or looping, after its RFC 3834 fields: our loop marker).
    The policy decides whether the message is delivered or suppressed;
    the check says only what it wants written then.
    """

    name: str
    value: str
    when: Literal["delivered", "suppressed"] = "delivered"


class Effect(Protocol):
    """A write to the state store a check asks for (state/effects.py); the
    engine applies it once the message is decided, to delivered mail only."""

    def apply(self, store: StateStore) -> None:
        """Write it; raises StateError when the store cannot."""
        ...

    def describe(self) -> str:
        """What it writes, in a few words, for a log line."""
        ...


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check (or one identity of it) concluded.

    `check` is the dotted result name the policy refers to: ``iprev``,
    ``spf.mailfrom``, ``spf.helo``, ``dkim`` (one result per signature),
    ``dmarc``... `method` is the RFC 8601 method for the A-R header, or
    None when the result does not belong there. `props` are RFC 8601
    ptype.property pairs (``smtp.mailfrom``, ``header.d``...), in order.
    """

    check: str
    outcome: Outcome
    reason: str = ""
    findings: tuple[Finding, ...] = ()
    method: str | None = None
    props: tuple[tuple[str, str], ...] = ()
    # One printable line for the verdict line (``<check>_summary=``).
    summary: str = ""
    # Header fields it wants on delivered mail (see HeaderRequest).
    headers: tuple[HeaderRequest, ...] = ()
    # Writes to the state store it wants once the message is delivered.
    effects: tuple[Effect, ...] = ()
    # What the check learnt that a later check needs, as a frozen dataclass
    # of the producing module (e.g. checks.spf.SpfEvidence: the domain SPF
    # evaluated, which DMARC aligns); read back with that module's functions.
    evidence: object | None = None
    # Local signals (patterns, a trailing "*" allowed) this result explains:
    # a pass recorded by someone the operator trusts (an ARC sealer, a
    # gateway, the hop before a trusted forwarder) that shows why a local
    # check failed (forwarding). The policy neither scores those signals nor
    # matches rules on them; they stay in the results and the logs.
    explains: frozenset[str] = frozenset()

    def prop(self, key: str) -> str | None:
        """The value of one ptype.property, or None."""
        for name, value in self.props:
            if name == key:
                return value
        return None

    def signals(self) -> Iterator[str]:
        """The names the policy can match: ``<check>.<outcome>`` and each finding."""
        # A StrEnum formats as its value, without the enum property `.value` costs.
        yield f"{self.check}.{self.outcome}"
        for finding in self.findings:
            yield finding.name


class Results(Mapping[str, tuple[CheckResult, ...]]):
    """Immutable map from result name to the results that carry it.

    What the evaluator asks of every Results (its signals, the scored, vouching
    and explaining findings, the header requests) is indexed once, in one pass
    over the results as they are added: a transaction adds a few results at a
    time and asks after each addition.
    """

    __slots__ = ("_by_check", "_explains", "_ordered", "_requests", "_scored", "_signals",
                 "_vouchers")

    def __init__(self, results: Iterable[CheckResult] = ()) -> None:
        self._ordered: tuple[CheckResult, ...] = ()
        self._by_check: dict[str, tuple[CheckResult, ...]] = {}
        self._signals: frozenset[str] = frozenset()
        self._scored: tuple[Finding, ...] = ()
        self._requests: tuple[HeaderRequest, ...] = ()
        self._vouchers: tuple[Finding, ...] = ()
        self._explains: frozenset[str] = frozenset()
        self._add(tuple(results))

    def _add(self, added: tuple[CheckResult, ...]) -> None:
        """Append `added` and index it (only while this Results is being built)."""
        grouped: dict[str, list[CheckResult]] = {}
        signals: list[str] = []
        scored: list[Finding] = []
        requests: list[HeaderRequest] = []
        vouchers: list[Finding] = []
        explains: list[frozenset[str]] = []
        for result in added:
            grouped.setdefault(result.check, []).append(result)
            signals.extend(result.signals())
            requests.extend(result.headers)
            if result.explains:
                explains.append(result.explains)
            for finding in result.findings:
                if finding.score and math.isfinite(finding.score):
                    scored.append(finding)
                if finding.vouches_for is not None:
                    vouchers.append(finding)
        by_check = self._by_check
        for name, items in grouped.items():
            by_check[name] = (*by_check.get(name, ()), *items)
        self._ordered += added
        self._signals = self._signals.union(signals)
        self._scored += tuple(scored)
        self._requests += tuple(requests)
        self._vouchers += tuple(vouchers)
        self._explains = self._explains.union(*explains)

    def __getitem__(self, check: str) -> tuple[CheckResult, ...]:
        return self._by_check[check]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_check)

    def __len__(self) -> int:
        return len(self._by_check)

    def __repr__(self) -> str:
        return f"Results({list(self._ordered)!r})"

    def first(self, check: str) -> CheckResult | None:
        """The first result named `check`, or None if the check did not run."""
        items = self._by_check.get(check)
        return items[0] if items else None

    def all(self) -> tuple[CheckResult, ...]:
        """Every result, in the order the checks produced them."""
        return self._ordered

    def plus(self, more: Iterable[CheckResult]) -> Results:
        """A new Results with `more` appended.

        Built on this one's index, not from scratch: a transaction adds a few
        results per recipient to all the earlier ones, and rebuilding them made
        each RCPT cost as much as all before it (1000: 0.7 s).
        """
        added = tuple(more)
        if not added:
            return self
        combined = Results.__new__(Results)
        combined._ordered = self._ordered
        combined._by_check = dict(self._by_check)
        combined._signals = self._signals
        combined._scored = self._scored
        combined._requests = self._requests
        combined._vouchers = self._vouchers
        combined._explains = self._explains
        combined._add(added)
        return combined

    def signals(self) -> frozenset[str]:
        """Every signal name any result carries."""
        return self._signals

    def header_requests(self) -> tuple[HeaderRequest, ...]:
        """Every header field the checks asked for, in order."""
        return self._requests

    def vouchers(self) -> tuple[Finding, ...]:
        """The findings that vouch only so far (`Finding.vouches_for`), in order."""
        return self._vouchers

    def explanations(self) -> frozenset[str]:
        """Every pattern some result explains (`CheckResult.explains`)."""
        return self._explains

    def explainers(self) -> frozenset[str]:
        """The signals of the results that explain something: never explained away
        themselves, so that no explanation can remove another."""
        return frozenset(s for r in self._ordered if r.explains for s in r.signals())

    def scored_findings(self) -> tuple[Finding, ...]:
        """The findings that carry a (finite, non-zero) weight of their own, in order."""
        return self._scored
