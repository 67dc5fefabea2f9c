"""DMARC (RFC 7489): the From domain's policy and SPF/DKIM alignment.

The check reads the results of ``spf.mailfrom`` and ``dkim`` through their
modules' evidence (`spf.evaluated_domains`, `dkim.signing_domains`) and the
DMARC record of the RFC5322.From domain, and reports one result ``dmarc``
(method dmarc, props header.from and policy.dmarc):

- pass: an SPF or DKIM pass whose domain is aligned with the From domain
  (RFC 7489 §3.1; relaxed = same organisational domain, strict = equal);
- fail: a record exists and nothing aligned passed; the finding
  ``dmarc.policy.<none|quarantine|reject>`` names the disposition to apply
  (``sp`` for a subdomain covered by the organisational domain's record,
  else ``p``; one step milder when pct sampling leaves the message out,
  ``dmarc.pct_sampled_out``, §6.6.4);
- none: no (single, valid-version) record at the From domain or its
  organisational domain (§6.6.3);
- temperror: the record lookup failed transiently, or nothing aligned passed
  while an SPF/DKIM result that could have aligned was temperror (§6.6.2);
- permerror: a record without a valid p= (and no rua= to fall back on,
  §6.6.3 step 6), or no single RFC5322.From field (§6.6.1).
``dmarc.spf_aligned`` / ``dmarc.dkim_aligned`` say which method produced the
pass; ``dmarc.org_domain_record`` that the record came from the
organisational domain. `policy.dmarc` is the applied disposition: ``none``
on pass, the policy (after sp and pct) on fail.

The SPF identity DMARC uses is the MAIL FROM one (§4.1). For the null
sender RFC 7208 §2.4 already makes that identity postmaster@<HELO>, which
``spf.mailfrom`` evaluates, so ``spf.helo`` is not consulted.

pct sampling (§6.6.4) is deterministic here: a SHA-256 hash of the From
domain and Message-ID picks the same bucket for the same message every time,
so results can be reproduced and the check has no random state.

Record parsing, alignment and sampling are pure functions (no DNS) at the
top of the module; only `DmarcCheck.run` queries, through `ctx.dns`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from trustmilter.checks import dkim, spf
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.domains import DomainTools, normalise
from trustmilter.lookup import DnsAnswer, DnsStatus, Resolver
from trustmilter.memo import remembered_when
from trustmilter.model import Message
from trustmilter.results import AuthMethod, CheckResult, Finding, Outcome

# RFC 7489 §6.6.1: a From field with several addresses is checked once per
# domain; bound the number of lookups that can cost.
MAX_AUTHOR_DOMAINS = 5

# §6.4: dmarc-record = dmarc-version dmarc-sep [dmarc-request] ...;
# "v" is case-insensitive, the value "DMARC1" is not (%x44 %x4d ...).
_VERSION = re.compile(r"^[ \t]*[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)")


class Policy(StrEnum):
    """Requested Mail Receiver policy (RFC 7489 §6.3 p=/sp=)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    @property
    def milder(self) -> Policy:
        """The next lower policy, for messages pct sampling leaves out (§6.6.4)."""
        return {Policy.REJECT: Policy.QUARANTINE}.get(self, Policy.NONE)

    @property
    def strictness(self) -> int:
        return (Policy.NONE, Policy.QUARANTINE, Policy.REJECT).index(self)


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed DMARC record (RFC 7489 §6.3). `p` is None if missing or invalid."""

    p: Policy | None
    sp: Policy | None = None
    sp_invalid: bool = False
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    has_rua: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DmarcEvidence:
    """What DMARC decided for one Author Domain: the disposition applied (§6.6.4:
    none on pass) and the record it came from, when one was found."""

    author: str
    disposition: Policy = Policy.NONE
    record_domain: str = ""
    record: Record | None = None


def is_dmarc_record(txt: str) -> bool:
    """True when a TXT string starts with v=DMARC1 (§6.6.3 step 4 discards the others)."""
    return bool(_VERSION.match(txt))


def _policy(value: str) -> Policy | None:
    try:
        return Policy(value.strip().lower())
    except ValueError:
        return None


# Records up to this long are remembered (a domain's record serves all its
# mail); a sender can publish far longer ones, parsed each time.
MEMO_RECORD_CHARS = 2048


@remembered_when(lambda txt: len(txt) <= MEMO_RECORD_CHARS)
def parse_record(txt: str) -> Record:
    """Parse a record that `is_dmarc_record`; bad optional tags fall back to defaults (§6.3)."""
    tags: dict[str, str] = {}
    for part in txt.split(";")[1:]:
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if sep and name and name not in tags:
            tags[name] = value.strip()
    sp = _policy(tags["sp"]) if "sp" in tags else None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    rua = [uri.strip() for uri in tags.get("rua", "").split(",") if uri.strip()]
    return Record(
        p=_policy(tags["p"]) if "p" in tags else None,
        sp=sp,
        sp_invalid="sp" in tags and sp is None,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=pct,
        # §6.6.3 step 6 only needs "at least one syntactically valid URI".
        has_rua=any(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$", uri) for uri in rua),
    )


def aligned(
    identifier: str, author: str, mode: str, org_domain: Callable[[str], str | None]
) -> bool:
    """RFC 7489 §3.1: strict = identical names, relaxed = same organisational domain."""
    identifier, author = normalise(identifier), normalise(author)
    if not identifier or not author:
        return False
    if identifier == author:
        return True
    if mode == "s":
        return False
    org = org_domain(author)
    return org is not None and org == org_domain(identifier)


def sampled_in(pct: int, author: str, message_id: str) -> bool:
    """Whether the message falls inside the pct% the policy applies to (§6.6.4)."""
    if pct >= 100:
        return True
    digest = hashlib.sha256(f"{normalise(author)}\n{message_id.strip()}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < pct


def author_domains(message: Message) -> list[str] | str:
    """The RFC5322.From domains (§6.6.1), or the reason there is no usable one.

    The mailboxes are the message's one parse of its From, the same the
    loop, names and automation checks read: DMARC cannot judge an author
    other than the one they see."""
    fields = message.from_lists
    if len(fields) != 1:
        return "no From field" if not fields else f"{len(fields)} From fields"
    # Distinct domains in order of appearance: a dict, not `in` on a list, which
    # was quadratic in a From of thousands of domains (100 KB: 0.24 s).
    domains = dict.fromkeys(m.domain_name for m in message.from_mailboxes if m.domain_name)
    return list(domains) or "From field has no address with a domain"


@dataclass(frozen=True, slots=True)
class Discovery:
    """Where policy discovery (§6.6.3) ended."""

    record: Record | None = None
    domain: str = ""  # where the record was found
    from_org: bool = False
    temperror: str = ""


def dmarc_txts(answer: DnsAnswer) -> list[str]:
    """The v=DMARC1 records in one TXT answer."""
    texts = [t.decode("utf-8", "replace") for t in answer.txt_strings()]
    return [t for t in texts if is_dmarc_record(t)]


def discover(dns: Resolver, domains: DomainTools, author: str) -> Discovery:
    """Policy discovery, RFC 7489 §6.6.3: the From domain, then its org domain."""
    candidates = [author]
    org = domains.org_domain(author)
    if org and org != author:
        candidates.append(org)
    for level, domain in enumerate(candidates):
        answer = dns.query(f"_dmarc.{domain}", "TXT")
        if answer.status is DnsStatus.TEMPERROR:
            return Discovery(domain=domain, temperror=answer.error or "temporary DNS error")
        records = dmarc_txts(answer)
        if len(records) > 1:
            # Step 5: several records end discovery; DMARC does not apply.
            return Discovery(domain=domain)
        if records:
            return Discovery(parse_record(records[0]), domain, from_org=level > 0)
    return Discovery()


class DmarcCheck(BaseCheck[Config]):
    """The From domain's DMARC verdict from SPF and DKIM results."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "dmarc", result="dmarc", stage=Stage.DATA, requires=("spf.mailfrom", "dkim"),
        waits_on="dns", method=AuthMethod.DMARC,
        findings={
            "dmarc.policy.none": "the From domain's applicable DMARC policy is none",
            "dmarc.policy.quarantine":
                "the From domain's applicable DMARC policy is quarantine",
            "dmarc.policy.reject": "the From domain's applicable DMARC policy is reject",
            "dmarc.spf_aligned": "SPF passed for a domain aligned with From",
            "dmarc.dkim_aligned": "a DKIM signature aligned with From passed",
            "dmarc.org_domain_record": "the DMARC record came from the organizational domain",
            "dmarc.pct_sampled_out": "pct= sampling let this failure off with a lighter policy",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """One result for the message (several From domains: the strictest, §6.6.1)."""
        message = ctx.message
        if message is None:
            return [CheckResult(self.name, Outcome.SKIPPED, "no message", method="dmarc")]
        domains = author_domains(message)
        if isinstance(domains, str):
            # §6.6.1: without exactly one From field there is no Author Domain;
            # such mail is invalid (RFC 5322 §3.6) and DMARC cannot apply.
            return [CheckResult(self.name, Outcome.PERMERROR, domains, method="dmarc")]
        message_id = message.header("Message-ID") or ""
        results = [self._evaluate(ctx, d, message_id) for d in domains[:MAX_AUTHOR_DOMAINS]]
        return [max(results, key=_severity)]

    def _evaluate(self, ctx: CheckContext, author: str, message_id: str) -> CheckResult:
        """The DMARC result for one Author Domain."""
        props: tuple[tuple[str, str], ...] = (("header.from", author),)
        evidence = DmarcEvidence(author)
        found = discover(ctx.dns, ctx.domains, author)
        if found.temperror:
            return CheckResult(self.name, Outcome.TEMPERROR,
                               f"DMARC record lookup for {found.domain}: {found.temperror}",
                               method="dmarc", props=props, evidence=evidence)
        record = found.record
        if record is None:
            reason = "several DMARC records" if found.domain else "no DMARC record"
            return CheckResult(self.name, Outcome.NONE, reason, method="dmarc", props=props,
                               evidence=evidence)
        if record.p is None or record.sp_invalid:
            if not record.has_rua:
                # §6.6.3 step 6.2: no valid p=/sp= and no rua=: no DMARC
                # processing; §11.2 names this a permerror.
                return CheckResult(self.name, Outcome.PERMERROR,
                                   f"DMARC record at {found.domain} has no valid p=",
                                   method="dmarc", props=props, evidence=evidence)
            # Step 6.1: act as if p=none was published.
            record = Record(Policy.NONE, None, False, record.adkim, record.aspf, record.pct, True)
        return self._judge(ctx, author, message_id, record, found, props)

    def _judge(
        self,
        ctx: CheckContext,
        author: str,
        message_id: str,
        record: Record,
        found: Discovery,
        props: tuple[tuple[str, str], ...],
    ) -> CheckResult:
        """Alignment (§3.1), the §6.6.2 temperror rule, and the disposition."""
        assert record.p is not None
        org_domain = ctx.domains.org_domain
        findings: list[Finding] = []
        if found.from_org:
            findings.append(Finding("dmarc.org_domain_record", found.domain))
        spf_results = ctx.results.get("spf.mailfrom", ())
        dkim_results = ctx.results.get("dkim", ())

        def spf_aligned(outcome: Outcome) -> list[str]:
            return [d for d in spf.evaluated_domains(spf_results, outcome)
                    if aligned(d, author, record.aspf, org_domain)]

        def dkim_aligned(outcome: Outcome) -> list[str]:
            return [d for d in dkim.signing_domains(dkim_results, outcome)
                    if aligned(d, author, record.adkim, org_domain)]

        spf_ok, dkim_ok = spf_aligned(Outcome.PASS), dkim_aligned(Outcome.PASS)
        if spf_ok:
            findings.append(Finding("dmarc.spf_aligned", spf_ok[0]))
        if dkim_ok:
            findings.append(Finding("dmarc.dkim_aligned", dkim_ok[0]))
        # A subdomain covered by the org domain's record gets sp=, else p= (§6.3).
        published = record.sp if found.from_org and record.sp is not None else record.p
        evidence = DmarcEvidence(author, Policy.NONE, found.domain, record)
        if spf_ok or dkim_ok:
            how = " and ".join(m for m, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
            return CheckResult(self.name, Outcome.PASS, f"aligned {how} pass",
                               tuple(findings), "dmarc", (*props, ("policy.dmarc", "none")),
                               evidence=evidence)
        # §6.6.2: if neither passes and one that could have aligned failed
        # temporarily, the policy cannot be applied.
        if spf_aligned(Outcome.TEMPERROR) or dkim_aligned(Outcome.TEMPERROR):
            return CheckResult(self.name, Outcome.TEMPERROR,
                               "an aligned identifier could not be checked (temporary error)",
                               tuple(findings), "dmarc", props, evidence=evidence)
        disposition = published
        if published is not Policy.NONE and not sampled_in(record.pct, author, message_id):
            disposition = published.milder
            findings.append(Finding("dmarc.pct_sampled_out", f"pct={record.pct}"))
        findings.append(Finding(f"dmarc.policy.{disposition.value}", found.domain))
        return CheckResult(self.name, Outcome.FAIL, f"no aligned pass; policy {disposition.value}",
                           tuple(findings), "dmarc",
                           (*props, ("policy.dmarc", disposition.value)),
                           evidence=DmarcEvidence(author, disposition, found.domain, record))


# Which of several per-domain results speaks for the message (§6.6.1: the
# strictest policy among the failing checks).
_RANK = {
    Outcome.PASS: 0, Outcome.NONE: 1, Outcome.PERMERROR: 2, Outcome.TEMPERROR: 3, Outcome.FAIL: 4,
}


def _severity(result: CheckResult) -> tuple[int, int]:
    """Sort key: outcome rank, then strictness of the applied disposition."""
    evidence = result.evidence
    disposition = evidence.disposition if isinstance(evidence, DmarcEvidence) else Policy.NONE
    return _RANK.get(result.outcome, 1), disposition.strictness
