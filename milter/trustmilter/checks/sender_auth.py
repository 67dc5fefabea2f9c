"""Is a sender identity authenticated as itself? Read from the results of SPF, DKIM, DMARC.

Anyone can write any envelope sender or From. What the rate tiers count
and what the allow-list lifts must therefore rest on an identity the
message proves: otherwise a forger spends a real sender's allowance
(41 forged messages, and her genuine mail is refused for the hour) or
borrows an allow-listed sender's exemptions.

An identity is authenticated when a domain that passed is aligned with
its domain (RFC 7489 §3.1 relaxed alignment: the same organisational
domain, DMARC's default and the reading the author check uses):

- the envelope identity (MAIL FROM undressed: SRS, BATV, sub-address):
  an SPF pass for MAIL FROM (RFC 7208 §2.4) or a DKIM pass (RFC 6376
  §6.3). An SRS address's SPF pass is the forwarder's own, so it proves
  nothing about the original sender the address names: only a DKIM pass
  (or SPF of that sender's own domain) does;
- the From identity: a DMARC pass for its domain (RFC 7489 §4.2; RFC 9989
  §4.4), or an aligned SPF or DKIM pass as above.

What a party the operator trusts recorded counts the same way: a trusted
gateway's ``upstream.spf``/``upstream.dkim``/``upstream.dmarc`` pass (by
the properties it recorded), the hop before a trusted forwarder passing
SPF (``forwarded.spf.mailfrom``), a trusted ARC sealer's
``arc.trusted_pass`` (it saw DMARC pass for this message's author).

Only the domain is proven, never the local part: the sending domain
answers for its users (as DMARC does). Pure: reads results, no DNS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trustmilter.checks import dkim, dmarc, spf
from trustmilter.mail.identity import SenderIdentity
from trustmilter.results import Outcome, Results

# The checks whose results say what passed; a check reading this module
# requires them (those not built are simply absent).
AUTHENTICATING_CHECKS = ("spf.mailfrom", "dkim", "dmarc", "arc", "upstream", "forwarded")
# The finding of a trusted ARC sealer that saw DMARC pass (checks/arc.py).
ARC_TRUSTED_PASS = "arc.trusted_pass"
OrgDomain = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Passed:
    """The domains authentication passed for, by method, as the results give them."""

    spf: tuple[str, ...] = ()  # MAIL FROM domains with an SPF pass
    dkim: tuple[str, ...] = ()  # d= of the valid signatures
    dmarc: tuple[str, ...] = ()  # From domains DMARC passed for
    author_vouched: bool = False  # a trusted ARC sealer saw DMARC pass

    def envelope(self, identity: SenderIdentity, org_domain: OrgDomain) -> bool:
        """Whether the envelope identity is authenticated (SPF or DKIM, aligned)."""
        return _aligned_any((*self.spf, *self.dkim), identity.domain, org_domain)

    def author(self, identity: SenderIdentity, org_domain: OrgDomain) -> bool:
        """Whether the From identity is authenticated (DMARC, or SPF or DKIM aligned)."""
        domain = identity.domain.rstrip(".")
        if not domain:
            return False
        return (self.author_vouched or domain in self.dmarc
                or _aligned_any((*self.spf, *self.dkim), domain, org_domain))


def passed(results: Results) -> Passed:
    """What passed, from the results of `AUTHENTICATING_CHECKS` present in `results`."""
    spf_domains = [
        *spf.evaluated_domains(results.get("spf.mailfrom", ()), Outcome.PASS),
        *spf.evaluated_domains(results.get("forwarded.spf.mailfrom", ()), Outcome.PASS),
        *_recorded(results, "upstream.spf", "smtp.mailfrom"),
    ]
    dkim_domains = [
        *dkim.signing_domains(results.get("dkim", ()), Outcome.PASS),
        *_recorded(results, "upstream.dkim", "header.d"),
    ]
    authors = [
        evidence.author for r in results.get("dmarc", ())
        if r.outcome is Outcome.PASS and isinstance(evidence := r.evidence, dmarc.DmarcEvidence)
    ]
    authors += _recorded(results, "upstream.dmarc", "header.from")
    vouched = any(f.name == ARC_TRUSTED_PASS for r in results.get("arc", ()) for f in r.findings)
    return Passed(tuple(spf_domains), tuple(dkim_domains),
                  tuple(a.rstrip(".").lower() for a in authors if a), vouched)


def spf_passed(results: Results) -> Passed:
    """What passed before end of message: the local SPF result for MAIL FROM alone
    (DKIM and DMARC need the message)."""
    return Passed(tuple(spf.evaluated_domains(results.get("spf.mailfrom", ()), Outcome.PASS)))


def _recorded(results: Results, check: str, prop: str) -> list[str]:
    """The domains a trusted gateway recorded a pass for (an address's domain part)."""
    found = []
    for result in results.get(check, ()):
        value = result.prop(prop) if result.outcome is Outcome.PASS else None
        if value:
            found.append(value.rpartition("@")[2].rstrip(".").lower())
    return found


def _aligned_any(domains: tuple[str, ...], domain: str, org_domain: OrgDomain) -> bool:
    if not domain:
        return False
    return any(dmarc.aligned(candidate, domain, "r", org_domain) for candidate in domains)
