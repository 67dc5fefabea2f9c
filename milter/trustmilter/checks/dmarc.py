"""DMARC (RFC 9989, or RFC 7489 behind a switch): the From domain's policy and alignment.

The check reads the results of ``spf.mailfrom`` and ``dkim`` through their
modules' evidence (`spf.evaluated_domains`, `dkim.signing_domains`) and the
DMARC record that applies to the RFC5322.From domain, and reports one
result ``dmarc`` (method dmarc, props header.from and policy.dmarc):

- pass: an SPF or DKIM pass whose domain is aligned with the From domain
  (RFC 9989 §4.4: relaxed = same Organizational Domain, strict = equal);
- fail: a record applies and nothing aligned passed; the finding
  ``dmarc.policy.<none|quarantine|reject>`` names the disposition to apply;
- none: no record applies (§4.10.1: DMARC does not apply);
- temperror: a lookup the verdict needs failed transiently, or nothing
  aligned passed while an SPF/DKIM result that could have aligned was
  temperror (§5.3.6: neither pass nor fail can be concluded);
- permerror: a record with an invalid p=, sp= or np= and no valid rua=
  (§4.10.1: no DMARC processing), or no single RFC5322.From field (§5.3.1).

``standard: rfc9989`` (the default) discovers the record and the
Organizational Domains by the DNS Tree Walk (`dmarc_tree`): the Author
Domain's own record, else its Organizational Domain's, else its Public
Suffix Domain's (psd=y, finding ``dmarc.psd_record``). An inherited record
gives sp=, or np= when the Author Domain does not exist (NXDOMAIN, §3.2.13).
t=y asks for the policy one level milder (``dmarc.testing``); pct= is gone,
read only as Appendix A.6 relates it to t= (`dmarc_record.asks_for_testing`).

``standard: rfc7489`` keeps the old behaviour: the From domain and its
organisational domain from the public suffix list (RFC 7489 §6.6.3, several
records end discovery), alignment by that list (§3.1), and pct sampling
(§6.6.4, ``dmarc.pct_sampled_out``), deterministic here: a SHA-256 hash of
the From domain and Message-ID picks the same bucket for the same message
every time. np=, psd= and t= are not read.

``dmarc.spf_aligned`` / ``dmarc.dkim_aligned`` say which method produced the
pass; ``dmarc.org_domain_record`` that the record came from a parent
domain. `policy.dmarc` is the applied disposition: ``none`` on pass.

The SPF identity DMARC uses is the MAIL FROM one (RFC 9989 §4.4.2). For the
null sender RFC 7208 §2.4 already makes that identity postmaster@<HELO>,
which ``spf.mailfrom`` evaluates, so ``spf.helo`` is not consulted.

Record parsing (`dmarc_record`), the walk's reading (`dmarc_tree`),
alignment and sampling are pure functions; only `DmarcCheck.run` and
`discover` query, through `ctx.dns`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from trustmilter.checks import dkim, spf
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.checks.dmarc_record import (
    MEMO_RECORD_CHARS,
    Policy,
    Record,
    asks_for_testing,
    dmarc_txts,
    is_dmarc_record,
    parse_record,
    requested_policy,
    usable_rfc7489,
    usable_rfc9989,
)
from trustmilter.checks.dmarc_tree import PolicyRecord, TreeWalks, policy_record
from trustmilter.domains import DomainTools, normalise
from trustmilter.lookup import Resolver
from trustmilter.lookup.answer import DnsStatus
from trustmilter.model import Message
from trustmilter.results import AuthMethod, CheckResult, Finding, Outcome

__all__ = [
    "MEMO_RECORD_CHARS", "Config", "DmarcCheck", "DmarcEvidence", "Policy", "PolicyRecord",
    "Record", "aligned", "author_domains", "discover", "dmarc_txts", "is_dmarc_record",
    "parse_record", "sampled_in",
]

# RFC 9989 §5.3.1 lets a receiver go on with several From domains (§11.5);
# bound the number of lookups that can cost.
MAX_AUTHOR_DOMAINS = 5

Standard = Literal["rfc9989", "rfc7489"]


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # rfc9989: DNS Tree Walk, psd=, np=, t=, no pct. rfc7489: public suffix
    # list and pct sampling, for operators who must match an RFC 7489 peer.
    standard: Standard = "rfc9989"


@dataclass(frozen=True, slots=True)
class DmarcEvidence:
    """What DMARC decided for one Author Domain: the disposition applied (none
    on pass) and the record it came from, when one was found."""

    author: str
    disposition: Policy = Policy.NONE
    record_domain: str = ""
    record: Record | None = None


def aligned(
    identifier: str, author: str, mode: str, org_domain: Callable[[str], str | None]
) -> bool:
    """RFC 7489 §3.1: strict = identical names, relaxed = same organisational domain.

    `org_domain` None means "no organisational domain" (a bare suffix): not aligned."""
    return alignment(identifier, author, mode, org_domain) is True


def alignment(
    identifier: str, author: str, mode: str, org_domain: Callable[[str], str | None]
) -> bool | None:
    """Strict = identical names, relaxed = the same Organizational Domain (RFC 9989
    §3.2.10); None when `org_domain` could not tell (None) for a relaxed comparison."""
    identifier, author = normalise(identifier), normalise(author)
    if not identifier or not author:
        return False
    if identifier == author:
        return True
    if mode == "s":
        return False
    org_author = org_domain(author)
    org_identifier = org_domain(identifier) if org_author is not None else None
    if org_author is None or org_identifier is None:
        return None
    return org_author == org_identifier


def sampled_in(pct: int, author: str, message_id: str) -> bool:
    """Whether the message falls inside the pct% the policy applies to (RFC 7489 §6.6.4)."""
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


def discover_rfc7489(dns: Resolver, domains: DomainTools, author: str) -> PolicyRecord:
    """Policy discovery, RFC 7489 §6.6.3: the From domain, then its organisational
    domain by the public suffix list (§3.2)."""
    candidates = [author]
    org = domains.org_domain(author)
    if org and org != author:
        candidates.append(org)
    for level, domain in enumerate(candidates):
        answer = dns.query(f"_dmarc.{domain}", "TXT")
        if answer.status is DnsStatus.TEMPERROR:
            return PolicyRecord(temperror=answer.error or "temporary DNS error", failed_at=domain)
        records = dmarc_txts(answer)
        if len(records) > 1:
            # Step 5: several records end discovery; DMARC does not apply.
            return PolicyRecord(domain=domain, several=True)
        if records:
            return PolicyRecord(parse_record(records[0]), domain, inherited=level > 0,
                                org_domain=org)
    return PolicyRecord(org_domain=org)


def discover(dns: Resolver, domains: DomainTools, author: str,
             standard: Standard = "rfc9989") -> PolicyRecord:
    """The record that applies to `author` under `standard` (the doctor asks this too)."""
    if standard == "rfc7489":
        return discover_rfc7489(dns, domains, author)
    return policy_record(TreeWalks(dns).walk(author))


def _identifiers(ctx: CheckContext, outcomes: tuple[Outcome, ...]) -> list[str]:
    """The SPF and DKIM domains whose results have one of `outcomes`."""
    spf_results = ctx.results.get("spf.mailfrom", ())
    dkim_results = ctx.results.get("dkim", ())
    found = [d for o in outcomes for d in spf.evaluated_domains(spf_results, o)]
    found += [d for o in outcomes for d in dkim.signing_domains(dkim_results, o)]
    return list(dict.fromkeys(normalise(d) for d in found if d))


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
            "dmarc.org_domain_record":
                "the DMARC record came from a parent domain (Organizational or Public Suffix)",
            "dmarc.psd_record": "the DMARC record came from a Public Suffix Domain (psd=y)",
            "dmarc.testing": "the record asks for testing (t=y, or a legacy pct=0): "
                             "the policy was applied one level milder",
            "dmarc.pct_sampled_out": "pct= sampling let this failure off with a lighter policy",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """One result for the message (several From domains: the strictest)."""
        message = ctx.message
        if message is None:
            return [CheckResult(self.name, Outcome.SKIPPED, "no message", method="dmarc")]
        domains = author_domains(message)
        if isinstance(domains, str):
            # RFC 9989 §5.3.1: without exactly one From field there is no
            # Author Domain; such mail is invalid (RFC 5322 §3.6).
            return [CheckResult(self.name, Outcome.PERMERROR, domains, method="dmarc")]
        message_id = message.header("Message-ID") or ""
        # One set of walks per message: several From domains and the SPF/DKIM
        # domains share parents, and each name is asked once.
        walks = TreeWalks(ctx.dns)
        results = [self._evaluate(ctx, walks, d, message_id) for d in domains[:MAX_AUTHOR_DOMAINS]]
        return [max(results, key=_severity)]

    def _discover(self, ctx: CheckContext, walks: TreeWalks, author: str) -> PolicyRecord:
        """Policy discovery under the configured standard.

        RFC 9989 §4.10.1 asks the Author Domain first; its parents only when
        it has no record. The walks of the SPF/DKIM domains are needed only
        when a record applies and relaxed alignment must compare names that
        differ from the Author Domain (§4.10.2); all their names are then
        asked at once, concurrently, before alignment reads them. Mail from
        a domain without DMARC costs no walk of its senders' domains."""
        if self.config.standard == "rfc7489":
            return discover_rfc7489(ctx.dns, ctx.domains, author)
        name = normalise(author)
        own = walks.answer(name)
        records = dmarc_txts(own) if own.status is not DnsStatus.TEMPERROR else []
        if len(records) == 1:
            found = PolicyRecord(parse_record(records[0]), author)
        else:
            found = policy_record(walks.walk(name))
        record = found.record
        if record is None or (record.adkim == "s" and record.aspf == "s"):
            return found  # no alignment, or strict alignment only: no Organizational Domain
        others = [d for d in _identifiers(ctx, (Outcome.PASS, Outcome.TEMPERROR)) if d != name]
        if others:
            # §4.10.2 note: identical names need no walk; different ones do,
            # and so does the Author Domain's own Organizational Domain.
            walks.ask([name, *others])
        return found

    def _evaluate(self, ctx: CheckContext, walks: TreeWalks, author: str,
                  message_id: str) -> CheckResult:
        """The DMARC result for one Author Domain."""
        props: tuple[tuple[str, str], ...] = (("header.from", author),)
        evidence = DmarcEvidence(author)
        found = self._discover(ctx, walks, author)
        if found.temperror:
            return CheckResult(self.name, Outcome.TEMPERROR,
                               f"DMARC record lookup for {found.failed_at}: {found.temperror}",
                               method="dmarc", props=props, evidence=evidence)
        if found.record is None:
            reason = "several DMARC records" if found.several else "no DMARC record"
            return CheckResult(self.name, Outcome.NONE, reason, method="dmarc", props=props,
                               evidence=evidence)
        rfc7489 = self.config.standard == "rfc7489"
        record = (usable_rfc7489 if rfc7489 else usable_rfc9989)(found.record)
        if record is None:
            # RFC 9989 §4.10.1 (RFC 7489 §6.6.3 step 6.2): an invalid policy tag
            # and no rua=: no DMARC processing; the record is improperly
            # formatted, which RFC 8601 §2.7.1 / RFC 9989 §9.2 call permerror.
            return CheckResult(self.name, Outcome.PERMERROR,
                               f"DMARC record at {found.domain} has no valid p=, sp= or np=",
                               method="dmarc", props=props, evidence=evidence)
        if rfc7489:
            # A bare public suffix has no organisational domain and aligns
            # with nothing but itself: give it a name no other domain has.
            return self._judge(ctx, author, message_id, record, found, props,
                               lambda d: ctx.domains.org_domain(d) or f"(suffix) {d}")
        return self._judge(ctx, author, message_id, record, found, props, walks.org_domain)

    def _judge(
        self,
        ctx: CheckContext,
        author: str,
        message_id: str,
        record: Record,
        found: PolicyRecord,
        props: tuple[tuple[str, str], ...],
        org_domain: Callable[[str], str | None],
    ) -> CheckResult:
        """Alignment, the temperror rule of RFC 9989 §5.3.6, and the disposition.

        `org_domain` is the Tree Walk's (None: the DNS left it open) or, for
        RFC 7489, the public suffix list's (a bare suffix is its own,
        unalignable, name)."""
        assert record.p is not None
        findings: list[Finding] = []
        if found.inherited:
            findings.append(Finding("dmarc.org_domain_record", found.domain))
        if found.from_psd:
            findings.append(Finding("dmarc.psd_record", found.domain))

        def judged(outcome: Outcome) -> dict[str, bool | None]:
            spf_domains = spf.evaluated_domains(ctx.results.get("spf.mailfrom", ()), outcome)
            dkim_domains = dkim.signing_domains(ctx.results.get("dkim", ()), outcome)
            by = {f"spf:{d}": alignment(d, author, record.aspf, org_domain) for d in spf_domains}
            by.update({f"dkim:{d}": alignment(d, author, record.adkim, org_domain)
                       for d in dkim_domains})
            return by

        passes = judged(Outcome.PASS)
        spf_ok = [k[4:] for k, v in passes.items() if v and k.startswith("spf:")]
        dkim_ok = [k[5:] for k, v in passes.items() if v and k.startswith("dkim:")]
        if spf_ok:
            findings.append(Finding("dmarc.spf_aligned", spf_ok[0]))
        if dkim_ok:
            findings.append(Finding("dmarc.dkim_aligned", dkim_ok[0]))
        evidence = DmarcEvidence(author, Policy.NONE, found.domain, record)
        if spf_ok or dkim_ok:
            how = " and ".join(m for m, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
            return CheckResult(self.name, Outcome.PASS, f"aligned {how} pass",
                               tuple(findings), "dmarc", (*props, ("policy.dmarc", "none")),
                               evidence=evidence)
        # RFC 9989 §5.3.6 (RFC 7489 §6.6.2): when a result that could have
        # aligned failed temporarily, or a pass's alignment could not be
        # determined (a Tree Walk query failed), neither pass nor fail holds.
        could_align = [k for k, v in judged(Outcome.TEMPERROR).items() if v is not False]
        undetermined = [k for k, v in passes.items() if v is None]
        if could_align or undetermined:
            return CheckResult(self.name, Outcome.TEMPERROR,
                               "an aligned identifier could not be checked (temporary error)",
                               tuple(findings), "dmarc", props, evidence=evidence)
        published = self._published(ctx, author, record, found)
        if published is None:
            return CheckResult(self.name, Outcome.TEMPERROR,
                               f"could not tell whether {author} exists (np= applies if not)",
                               tuple(findings), "dmarc", props, evidence=evidence)
        disposition, why = published
        if disposition is not Policy.NONE:
            if self.config.standard == "rfc7489":
                if not sampled_in(record.pct, author, message_id):
                    disposition = disposition.milder
                    findings.append(Finding("dmarc.pct_sampled_out", f"pct={record.pct}"))
            elif asks_for_testing(record):
                # RFC 9989 §4.7 "t": t=y asks for the policy one level below.
                disposition = disposition.milder
                tag = "t=y" if record.testing else "pct=0 read as t=y (RFC 9989 A.6)"
                findings.append(Finding("dmarc.testing", tag))
        findings.append(Finding(f"dmarc.policy.{disposition.value}", f"{found.domain} {why}"
                                if why else found.domain))
        return CheckResult(self.name, Outcome.FAIL, f"no aligned pass; policy {disposition.value}",
                           tuple(findings), "dmarc",
                           (*props, ("policy.dmarc", disposition.value)),
                           evidence=DmarcEvidence(author, disposition, found.domain, record))

    def _published(self, ctx: CheckContext, author: str, record: Record,
                   found: PolicyRecord) -> tuple[Policy, str] | None:
        """The requested policy and the tag it came from; None when it depends on
        the Author Domain's existence and the DNS did not answer."""
        assert record.p is not None
        if not found.inherited:
            return record.p, ""
        if self.config.standard == "rfc7489":
            # RFC 7489 §6.3: sp= for a subdomain covered by the org domain's record.
            return (record.sp, "(sp)") if record.sp is not None else (record.p, "")
        exists: bool | None = True
        if record.np is not None and record.np is not (record.sp or record.p):
            # RFC 9989 §3.2.13 / Appendix A.4: NXDOMAIN for the name itself
            # means it does not exist (any record type would do; A shares the
            # cache with the names check's lookup of the From domain).
            exists = ctx.dns.query(author, "A").exists
        policy = requested_policy(record, True, exists)
        if policy is None:
            return None
        if exists is False:
            return policy, "(np: the From domain does not exist)"
        return policy, ""


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
