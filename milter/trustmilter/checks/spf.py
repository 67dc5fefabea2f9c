"""SPF (RFC 7208) via pyspf for the MAIL FROM and HELO identities.

Two checks share this module: `SpfHeloCheck` evaluates the HELO identity
(RFC 7208 §2.3) once HELO is known, `SpfMailFromCheck` the MAIL FROM identity
(§2.4) once MAIL FROM is known; for the null sender that identity is
``postmaster@<helo>``. Each reports one result with the seven RFC 7208 §2.6
results (pass, fail, softfail, neutral, none, temperror, permerror), the
explanation pyspf gives as the reason, and the domain SPF evaluated as
`SpfEvidence` (DMARC's SPF-authenticated identifier, RFC 7489 §4.1), read
back with `evaluated_domains`.

pyspf does the evaluation, in its default strict (RFC 7208) mode, including
the limits of §4.6.4 (10 DNS-querying terms, 2 void lookups -> permerror).
All its DNS goes through the project's resolver via `lookup.shims`: pyspf
looks up the process-global ``spf.DNSLookup`` at call time, the shim
installs a dispatcher there once and `spf_resolver()` binds `ctx.dns` for
the current thread only, so concurrent evaluations do not mix resolvers.

This module does not decide anything: a softfail is reported, not punished.
It raises nothing for bad input; a name that cannot be an SPF domain gives
`none` without asking DNS (§4.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import spf

from trustmilter import compat
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.compat.pyspf import spf_resolver
from trustmilter.domains import is_ip_literal, normalise
from trustmilter.results import AuthMethod, CheckResult, Outcome

# RFC 7208 §4.6.4: an SPF implementation MAY limit the total time of one
# evaluation; it SHOULD be at least 20 seconds. pyspf turns overruns into
# temperror.
MAX_EVALUATION_SECONDS = 20

# Explanations come from the sender's DNS (exp=); keep them short and tame
# before they reach logs and the A-R comment.
MAX_REASON_CHARS = 200
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")

_OUTCOMES: dict[str, Outcome] = {
    "pass": Outcome.PASS,
    "fail": Outcome.FAIL,
    "softfail": Outcome.SOFTFAIL,
    "neutral": Outcome.NEUTRAL,
    "none": Outcome.NONE,
    "temperror": Outcome.TEMPERROR,
    "permerror": Outcome.PERMERROR,
}


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Also evaluate the HELO identity (RFC 7208 §2.3), reported as smtp.helo.
    check_helo: bool = True


@dataclass(frozen=True, slots=True)
class SpfEvidence:
    """The domain check_host() evaluated, and for which identity (RFC 7208 §2.3, §2.4)."""

    domain: str
    identity: Literal["mailfrom", "helo"]


def evaluated_domains(results: Iterable[CheckResult], outcome: Outcome) -> list[str]:
    """The domains SPF evaluated with `outcome`, in order: for DMARC, the
    SPF-authenticated identifiers (RFC 7489 §4.1) when `outcome` is pass."""
    return [
        r.evidence.domain for r in results
        if r.outcome is outcome and isinstance(r.evidence, SpfEvidence) and r.evidence.domain
    ]


def spf_domain(name: str) -> str | None:
    """The A-label form of `name` if it can be an SPF <domain>, else None.

    RFC 7208 §4.3: a malformed name, or one that is not multi-label, makes
    check_host() return "none" at once.
    """
    name = normalise(name)
    if not name or is_ip_literal(name) or "." not in name:
        return None
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        return None
    return ascii_name


def _clean(text: str) -> str:
    """`text` as one printable ASCII line of bounded length."""
    return _UNPRINTABLE.sub(" ", text).strip()[:MAX_REASON_CHARS]


def evaluate(ctx: CheckContext, sender: str, domain: str, helo: str) -> tuple[Outcome, str]:
    """Run check_host() (RFC 7208 §4) for `sender` and return (outcome, explanation)."""
    query = spf.query(
        i=str(ctx.connection.ip),
        s=sender,
        h=helo,
        querytime=MAX_EVALUATION_SECONDS,
    )
    with spf_resolver(ctx.dns):
        result, _code, explanation = query.check()
    outcome = _OUTCOMES.get(str(result), Outcome.PERMERROR)
    reason = _clean(str(explanation)) or (
        f"no SPF record for {domain}" if outcome is Outcome.NONE else str(result)
    )
    return outcome, reason


def _result(
    check: str,
    prop: str,
    identity: str,
    outcome: Outcome,
    reason: str,
    evidence: SpfEvidence | None = None,
) -> CheckResult:
    """One SPF result with its RFC 8601 §2.7.2 property."""
    props = ((prop, identity),) if identity else ()
    return CheckResult(check, outcome, reason, method=AuthMethod.SPF, props=props,
                       evidence=evidence)


class SpfHeloCheck(BaseCheck[Config]):
    """SPF for the HELO identity (RFC 7208 §2.3)."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "spf.helo", result="spf.helo", stage=Stage.HELO, waits_on="dns", method=AuthMethod.SPF,
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        compat.install(compat.pyspf.PATCHES)  # pyspf's DNS hook and patterns, when built alone

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Evaluate the HELO name, or say why it was not evaluated."""
        helo = (ctx.connection.helo or "").strip()
        if not self.config.check_helo:
            return [_result(self.name, "smtp.helo", helo, Outcome.SKIPPED, "disabled")]
        if not helo:
            return [_result(self.name, "smtp.helo", "", Outcome.SKIPPED, "no HELO")]
        if is_ip_literal(helo):
            # §2.3: an address literal is not a domain; there is nothing to check.
            return [_result(self.name, "smtp.helo", helo, Outcome.SKIPPED,
                            "HELO is an address literal")]
        domain = spf_domain(helo)
        if domain is None:
            return [_result(self.name, "smtp.helo", helo, Outcome.NONE,
                            "HELO is not a multi-label domain name (RFC 7208 §4.3)")]
        # §2.3: the HELO identity is checked as "postmaster@<helo>".
        outcome, reason = evaluate(ctx, f"postmaster@{domain}", domain, domain)
        return [_result(self.name, "smtp.helo", helo, outcome, reason,
                        SpfEvidence(domain, "helo"))]


class SpfMailFromCheck(BaseCheck[Config]):
    """SPF for the MAIL FROM identity (RFC 7208 §2.4)."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "spf.mailfrom", result="spf.mailfrom", stage=Stage.MAIL, waits_on="dns",
        method=AuthMethod.SPF,
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        compat.install(compat.pyspf.PATCHES)  # pyspf's DNS hook and patterns, when built alone

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Evaluate the envelope sender (postmaster@HELO for the null sender)."""
        sender = ctx.envelope.mail_from
        helo = (ctx.connection.helo or "").strip()
        if sender:
            local, _, domain_part = sender.rpartition("@")
            # §4.3: a sender without a local-part is checked as postmaster@domain.
            identity = sender if local else f"postmaster@{domain_part}"
        else:
            # §2.4: for the null reverse-path the MAIL FROM identity is
            # postmaster@<HELO identity>.
            if not helo:
                return [_result(self.name, "smtp.mailfrom", "", Outcome.NONE,
                                "null sender and no HELO: no identity to check")]
            domain_part = helo
            identity = f"postmaster@{normalise(helo)}"
        domain = spf_domain(domain_part)
        if domain is None:
            return [_result(self.name, "smtp.mailfrom", identity, Outcome.NONE,
                            "sender domain is not a multi-label domain name (RFC 7208 §4.3)")]
        local = identity.rpartition("@")[0] or "postmaster"
        outcome, reason = evaluate(ctx, f"{local}@{domain}", domain, normalise(helo))
        return [_result(self.name, "smtp.mailfrom", identity, outcome, reason,
                        SpfEvidence(domain, "mailfrom"))]
