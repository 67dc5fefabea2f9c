"""pyspf, as trustmilter uses it: its DNS through our resolver, linear patterns.

pyspf 2.0.14 (sdgathman/pyspf) has no DNS argument: `spf.DNSLookup` is
replaced by a dispatcher to the resolver bound for the evaluation
(dns.py); that one is required, since without it pyspf would ask DNS on
its own, outside the milter's timeouts, limits and test fixtures. Three of
its domain-spec patterns are quadratic in a sender's SPF record
(patterns.py); docs/upstream/pyspf.md describes them for upstream.
"""

from __future__ import annotations

import spf

from trustmilter.compat.patches import Patch
from trustmilter.compat.pyspf import patterns
from trustmilter.compat.pyspf.dns import spf_dns_lookup, spf_resolver

__all__ = ["PATCHES", "spf_resolver"]

DIST = "pyspf"
VERSIONS = frozenset({"2.0.14"})

PATCHES: tuple[Patch, ...] = (
    # query.dns is the one caller; the answer shapes of spf_values follow
    # DNSLookup_dnspython's.
    Patch(
        spf, "DNSLookup", spf_dns_lookup, DIST, VERSIONS,
        fingerprint="f3ab5bcf4502a4932ece042e61a6841e9a79fd7e408eafa13cad4152944464ff",
        guards=("query.dns",), required=True,
    ),
    Patch(
        spf, "RE_TOPLAB", patterns.RE_TOPLAB, DIST, VERSIONS,
        fingerprint="00fd66f016f4d2c62cb97d892f84be02d58bb70d60748dcafdab789534622876",
        guards=("query.best_guess", "query.expand_domain"),
    ),
    Patch(
        spf, "RE_CHAR", patterns.RE_CHAR, DIST, VERSIONS,
        fingerprint="c87789fd4726bf7f3f93c909b7fe26ac14e5c080ef10666e956aed7690652cef",
        guards=("query.expand",),
    ),
    Patch(
        spf, "RE_INVALID_MACRO", patterns.RE_INVALID_MACRO, DIST, VERSIONS,
        fingerprint="44ce18db53d6a702e1d30e538b78a59bf9674af2834a172945329877e2e0bd0a",
        guards=("query.expand",),
    ),
)
