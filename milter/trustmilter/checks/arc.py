"""ARC (RFC 8617) via dkimpy: chain validation and trusted sealers.

The check validates the message's ARC chain (RFC 8617 §5.2) with dkimpy,
all key lookups going through `lookup.shims.DkimDns` over `ctx.dns`, and
reports one result ``arc`` (method arc):

- none: the message carries no ARC sets (§5.2 step 1);
- pass: every ARC-Seal and the newest ARC-Message-Signature verify and the
  cv= values are consistent (§5.2 steps 2-7); props ``header.oldest-pass``
  (§5.2 step 5: 0 when every AMS still verifies, else the lowest instance
  whose AMS does) and ``smtp.remote-ip``;
- fail: anything else, including a chain an earlier sealer marked cv=fail
  and more than 50 instances (§4.2.1);
- temperror: the chain did not pass and some key lookup failed transiently.

Trusted sealers (docs/rules.md §3, forwarded mail): when the chain passes and
the ARC-Seal of some instance was made by a domain in `trusted_sealers`,
that instance's ARC-Authentication-Results (parsed with `authres`) tell what
the sealer saw before it forwarded the message. If it recorded dmarc=pass
(for this From domain), or, recording no dmarc, a dkim=pass or spf=pass
aligned with this From domain, the result carries the finding
``arc.trusted_pass`` naming the sealer, and its `ArcEvidence` the sealer's
report.
Its result then explains (`CheckResult.explains`, checks/explained.py) the
local failures the sealer's passes account for: DMARC's always (the sealer
recorded dmarc=pass, or an aligned pass, which is what DMARC asks), SPF's
and DKIM's when the sealer recorded spf=pass or dkim=pass. Those signals
then neither score nor trigger rules (RFC 8617 §7: local policy decides;
the operator decided by listing the sealer). An untrusted sealer's results
are never read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import authres
import dkim

from trustmilter.authresults import parse_core_header_value
from trustmilter.checks import explained
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.checks.dmarc import aligned
from trustmilter.compat.dkimpy import DkimpyLog, rfc822_parse, verifier
from trustmilter.domains import domain_of, normalise
from trustmilter.lookup.shims import DkimDns
from trustmilter.model import Message
from trustmilter.results import AuthMethod, CheckResult, Finding, Outcome

log = logging.getLogger(__name__)

# RFC 8617 §4.2.1: instance values are 1..50; more sets make the chain fail.
MAX_INSTANCES = 50
_ARC_FIELDS = ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results")
_INSTANCE_TAG = re.compile(r"^\s*i\s*=\s*\d+\s*;", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Sealing domains (ARC-Seal d=) whose arc=pass lets a forwarded message keep
    # the authentication results they recorded before forwarding.
    trusted_sealers: tuple[str, ...] = ()
    # RSA keys shorter than this do not verify (RFC 8301 §3.2, as for DKIM).
    min_key_bits: int = field(default=1024, metadata={"min": 512, "max": 16384})


@dataclass(frozen=True, slots=True)
class SealerReport:
    """What a trusted sealer's ARC-Authentication-Results said."""

    sealer: str
    instance: int
    method: str  # the method whose pass counts: dmarc, dkim or spf
    text: str  # the A-R payload as recorded (without i=)
    results: Mapping[str, str]  # method -> first result recorded for it


@dataclass(frozen=True, slots=True)
class ArcEvidence:
    """A valid chain: the sealer of each ARC set, and a trusted sealer's recorded pass."""

    sealers: tuple[str, ...]
    trusted: SealerReport | None = None


def _first_prop(result: Any, ptype: str, pname: str) -> str:
    """The value of ptype.pname in one parsed resinfo, or ''."""
    for prop in getattr(result, "properties", None) or ():
        if str(prop.type).lower() == ptype and str(prop.name).lower() == pname:
            return str(prop.value)
    return ""


def read_sealer_results(
    sealer: str,
    instance: int,
    aar_value: str,
    author: str,
    org_domain: Callable[[str], str | None],
) -> SealerReport | None:
    """A report if this ARC-Authentication-Results shows a pass for `author`, else None."""
    payload = _INSTANCE_TAG.sub("", aar_value, count=1).strip()
    try:
        header = parse_core_header_value(payload)
    except authres.AuthResError:
        return None
    results = [r for r in header.results if getattr(r, "method", None)]
    summary: dict[str, str] = {}
    for r in results:
        summary.setdefault(str(r.method).lower(), str(r.result).lower())
    dmarc_results = [r for r in results if str(r.method).lower() == "dmarc"]
    if dmarc_results:
        # A recorded DMARC verdict is the sealer's answer, pass or not; it
        # must be about this From domain.
        for r in dmarc_results:
            from_domain = _first_prop(r, "header", "from")
            if str(r.result).lower() == "pass" and (
                not from_domain or normalise(from_domain) == normalise(author)
            ):
                return SealerReport(sealer, instance, "dmarc", payload, summary)
        return None
    for r in results:
        method, outcome = str(r.method).lower(), str(r.result).lower()
        if outcome != "pass":
            continue
        if method == "dkim":
            domain = _first_prop(r, "header", "d") or domain_of(_first_prop(r, "header", "i"))
        elif method == "spf":
            mailfrom = _first_prop(r, "smtp", "mailfrom")
            domain = domain_of(mailfrom) if "@" in mailfrom else normalise(mailfrom)
        else:
            continue
        # Relaxed alignment with the current From domain (RFC 7489 §3.1), by
        # the public suffix list: this reads a header, it spends no DNS
        # queries on a Tree Walk (RFC 9989 §4.10.2) for it.
        if domain and aligned(domain, author, "r", org_domain):
            return SealerReport(sealer, instance, method, payload, summary)
    return None


def sealer_explains(report: SealerReport) -> frozenset[str]:
    """The local failures a trusted sealer's report explains: DMARC's (its dmarc=pass,
    or the aligned pass that DMARC asks for), and those of each method it
    recorded as pass before forwarding."""
    passed = [method for method, outcome in report.results.items() if outcome == "pass"]
    return explained.explained_by(("dmarc", *passed))


def oldest_pass(ams_valid: Sequence[tuple[int, bool]]) -> int:
    """RFC 8617 §5.2 step 5: 0 if every AMS verifies, else the oldest one verifying.

    Checking proceeds from the newest instance down; the first failure at
    instance k makes k+1 the oldest pass.
    """
    for instance, valid in sorted(ams_valid, reverse=True):
        if not valid:
            return instance + 1
    return 0


def _author(message: Message) -> str:
    """The single From domain, or '' when there is none or several."""
    if len(message.from_lists) != 1:
        return ""
    domains = {m.domain_name for m in message.from_mailboxes} - {""}
    return domains.pop() if len(domains) == 1 else ""



def preflight(config: Config) -> None:
    """Stop start-up if dkimpy cannot verify ed25519 ARC seals: PyNaCl is missing."""
    import importlib

    importlib.import_module("nacl.signing")

class ArcCheck(BaseCheck[Config]):
    """Validate the ARC chain; surface a trusted sealer's recorded pass."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "arc", result="arc", stage=Stage.DATA, waits_on="dns", method=AuthMethod.ARC,
        findings={
            "arc.trusted_pass":
                "a valid ARC chain from a trusted sealer vouches for the original",
        },
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._trusted = frozenset(normalise(d) for d in config.trusted_sealers)

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """One `arc` result for the message."""
        message = ctx.message
        if message is None:
            return [CheckResult(self.name, Outcome.SKIPPED, "no message", method="arc")]
        if not any(message.header_values(h) for h in _ARC_FIELDS):
            # Most mail carries no ARC set: say so without dkimpy parsing it all.
            return [CheckResult(self.name, Outcome.NONE, "no ARC sets", method="arc")]
        remote = (("smtp.remote-ip", str(ctx.connection.ip)),)
        dns = DkimDns(ctx.dns)
        try:
            # The same linear split as DKIM's: dkimpy's own parser is quadratic
            # in a folded field (compat/dkimpy/parse.py).
            arc = verifier(dkim.ARC, message.raw, rfc822_parse(message.raw),
                           logger=DkimpyLog(log), minkey=self.config.min_key_bits)
            count, _headers = arc.sorted_arc_headers()
            if count == 0:
                return [CheckResult(self.name, Outcome.NONE, "no ARC sets", method="arc")]
            if count > MAX_INSTANCES:
                return [CheckResult(self.name, Outcome.FAIL, f"{count} ARC instances (limit 50)",
                                    method="arc", props=remote)]
            cv, sets, reason = arc.verify(dnsfunc=dns)
        except (dkim.DKIMException, ValueError, IndexError) as exc:
            # dkimpy lets some malformed sets escape as ValueError (bad base64)
            # or IndexError (an AMS it cannot find again by its i= tag).
            if not any(message.header_values(h) for h in _ARC_FIELDS):
                return [CheckResult(self.name, Outcome.NONE, "no ARC sets", method="arc")]
            cv, sets, reason = dkim.CV_Fail, [], str(exc)
        reason = str(reason)[:160]
        if cv == dkim.CV_None:
            return [CheckResult(self.name, Outcome.NONE, "no ARC sets", method="arc")]
        if cv != dkim.CV_Pass:
            # dkimpy returns None for a chain an earlier sealer marked cv=fail:
            # §5.2 step 2 makes that "fail" too.
            if dns.temperror:
                return [CheckResult(self.name, Outcome.TEMPERROR, f"key lookup failed: {reason}",
                                    method="arc", props=remote)]
            return [CheckResult(self.name, Outcome.FAIL, reason, method="arc", props=remote)]
        oldest = oldest_pass([(int(s["instance"]), bool(s["ams-valid"])) for s in sets])
        props = (*remote, ("header.oldest-pass", str(oldest)))
        sealers = tuple(_text(s["as-domain"]) for s in sets)
        report = self._trusted_report(ctx, message, sets)
        if report is None:
            return [CheckResult(self.name, Outcome.PASS, "chain valid", method="arc",
                                props=props, evidence=ArcEvidence(sealers))]
        finding = Finding("arc.trusted_pass",
                          f"{report.sealer} (i={report.instance}) recorded {report.method}=pass")
        return [CheckResult(self.name, Outcome.PASS, "chain valid", (finding,), "arc", props,
                            evidence=ArcEvidence(sealers, report),
                            explains=sealer_explains(report))]

    def explainable(self) -> tuple[str, ...]:
        """With trusted sealers, a chain may explain local SPF, DKIM and DMARC failures."""
        return explained.ALL if self._trusted else ()

    def _trusted_report(
        self, ctx: CheckContext, message: Message, sets: Sequence[Mapping[str, Any]]
    ) -> SealerReport | None:
        """The newest trusted sealer's recorded pass for the From domain, if any."""
        if not self._trusted:
            return None
        author = _author(message)
        if not author:
            return None
        for arc_set in sorted(sets, key=lambda s: int(s["instance"]), reverse=True):
            sealer = normalise(_text(arc_set["as-domain"]))
            if sealer not in self._trusted:
                continue
            report = read_sealer_results(sealer, int(arc_set["instance"]),
                                         _text(arc_set["aar-value"]), author,
                                         ctx.domains.org_domain)
            if report is not None:
                return report
        return None


def _text(value: bytes | str) -> str:
    """dkimpy's bytes as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
