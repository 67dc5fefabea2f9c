"""How a signal pattern in the policy matches the signals of a message.

A pattern is a signal name (``dmarc.fail``), or a prefix ending in ``*``
that matches every signal starting with it (``dnsbl.*``). Pure; which
names exist is the signal catalogue's business (signals.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

WILDCARD = "*"


def matches(pattern: str, signal: str) -> bool:
    """True if `signal` is `pattern`, or starts with it when it ends in ``*``."""
    return bool(matching(pattern, frozenset((signal,))))


def present(pattern: str, signals: frozenset[str]) -> bool:
    """True if `pattern` matches any of `signals`: `matching` without building
    the set (most of the patterns the evaluator tries per message match nothing)."""
    if not pattern.endswith(WILDCARD):
        return pattern in signals
    prefix = pattern[: -len(WILDCARD)]
    return any(signal.startswith(prefix) for signal in signals)


def any_present(patterns: Iterable[str], signals: frozenset[str]) -> bool:
    """True if any of `patterns` matches any of `signals`. For a ``*`` pattern the
    signals are sorted once: those with a prefix sit together from where the
    prefix itself would, so each is one binary search, not a scan of them all."""
    ordered: list[str] | None = None
    for pattern in patterns:
        if not pattern.endswith(WILDCARD):
            if pattern in signals:
                return True
            continue
        if ordered is None:
            ordered = sorted(signals)
        prefix = pattern[: -len(WILDCARD)]
        first = bisect.bisect_left(ordered, prefix)
        if first < len(ordered) and ordered[first].startswith(prefix):
            return True
    return False


def matching(pattern: str, signals: frozenset[str]) -> frozenset[str]:
    """The signals of `signals` that `pattern` matches: itself, or with a
    trailing ``*`` every signal that starts with what comes before it.

    A pattern without ``*`` is one set lookup, not a scan of every signal.
    """
    if pattern.endswith(WILDCARD):
        prefix = pattern[: -len(WILDCARD)]
        return frozenset(s for s in signals if s.startswith(prefix))
    return frozenset((pattern,)) if pattern in signals else frozenset()
