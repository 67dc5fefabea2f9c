"""The catalogue of signal names the checks emit and the policy may name.

A signal is either ``<result>.<outcome>`` (one per CheckResult, e.g.
``spf.mailfrom.fail``) or a finding name (e.g. ``iprev.ptr_missing``).
This module is the one list of them, derived from the checks' specs
(checks/registry.py): checks emit only names listed here, the policy loader
rejects any other name (so ``dmarc.fial`` is an error, not a rule that never
fires), and documentation is generated from it.

Results recorded by a trusted upstream gateway arrive as
``upstream.<method>.<outcome>`` for any RFC 8601 method, so those are
accepted by shape rather than listed one by one.

A policy may end a name with ``*`` to match every signal with that prefix
(``dnsbl.*``; policy/patterns.py). Nothing here does I/O; everything is
immutable.
"""

from __future__ import annotations

import difflib
import re

__all__ = ["FINDINGS", "KNOWN_SIGNALS", "RESULT_NAMES", "UPSTREAM_PREFIX", "WILDCARD",
           "is_known_pattern", "is_known_signal", "matches", "matching", "signal_prefixes",
           "suggestion"]

from trustmilter.checks import registry
from trustmilter.policy.patterns import WILDCARD, matches, matching
from trustmilter.results import Outcome

# Result names (CheckResult.check) of the checks; each yields one signal per
# outcome. A result name may differ from its findings' prefix (``loops``
# reports ``loop.*``), so a rule naming "loop.*" matches findings only,
# never "loops.pass".
RESULT_NAMES: tuple[str, ...] = registry.result_names()

# Finding name -> what it means, from the checks' specs. The text is for
# documentation and `policy show`.
FINDINGS: dict[str, str] = registry.findings()

# Signals every policy may name: each result's outcomes plus the findings.
KNOWN_SIGNALS: frozenset[str] = frozenset(
    {f"{name}.{outcome.value}" for name in RESULT_NAMES for outcome in Outcome} | set(FINDINGS)
)

# Result name -> the prefixes of its findings (``loops`` reports ``loop.*``).
_FINDING_PREFIXES: dict[str, tuple[str, ...]] = registry.finding_prefixes()


def signal_prefixes(result: str) -> tuple[str, ...]:
    """Prefixes of every signal a result of this name may carry: outcomes and findings.

    The daemon uses this to know which signals can still appear once some
    checks have run (a verdict is final only if nothing later can undo it).
    """
    # A result without findings of its own (spf.mailfrom) still covers its
    # family's (spf.*): what a policy may name for it later.
    findings = _FINDING_PREFIXES.get(result, (f"{result.split('.')[0]}.",))
    return (f"{result}.", *findings)


UPSTREAM_PREFIX = "upstream."
# upstream.<RFC 8601 method keyword>.<outcome>
_UPSTREAM = re.compile(
    r"upstream\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.(?:"
    + "|".join(re.escape(o.value) for o in Outcome)
    + r")\Z"
)


def is_known_signal(name: str) -> bool:
    """True if `name` is a signal some check or trusted gateway can produce."""
    return name in KNOWN_SIGNALS or _UPSTREAM.match(name) is not None


def is_known_pattern(pattern: str) -> bool:
    """True if `pattern` (a signal, or a prefix ending in ``*``) can ever match."""
    if not pattern.endswith(WILDCARD):
        return is_known_signal(pattern)
    prefix = pattern[: -len(WILDCARD)]
    if not prefix or WILDCARD in prefix:
        return False
    if prefix.startswith(UPSTREAM_PREFIX) or UPSTREAM_PREFIX.startswith(prefix):
        return True
    return any(signal.startswith(prefix) for signal in KNOWN_SIGNALS)


def suggestion(name: str) -> str | None:
    """The known signal closest to a misspelt `name`, for error messages."""
    close = difflib.get_close_matches(name, sorted(KNOWN_SIGNALS), n=1, cutoff=0.75)
    return close[0] if close else None
