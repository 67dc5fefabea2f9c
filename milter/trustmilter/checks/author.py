"""Is the From domain authenticated by anything at all?

Mail whose sender is spoofed where the domain's owner publishes no SPF
record is not trusted. DMARC cannot say so: without a DMARC record it
reports ``none`` and stops, and an SPF pass for the envelope domain
(a provider's, or the spoofer's own) says nothing about the From domain.
This check reports ``author.unauthenticated`` when, for a From domain,
ALL of these hold:

- no aligned pass: neither an SPF pass (``spf.evaluated_domains``) nor a
  DKIM pass (``dkim.signing_domains``) for a domain with the From domain's
  organisational domain (RFC 7489 §3.1 relaxed alignment, DMARC's
  default and the most lenient reading);
- no DMARC record: the ``dmarc`` result is ``none`` (no record at the From
  domain or its organisational domain; several records count as none,
  as DMARC then does not apply, RFC 7489 §6.6.3 step 5);
- no SPF record of its own: the From domain's TXT holds no ``v=spf1``
  record (RFC 7208 §4.5; several records still count as published).

So it is distinct from ``dmarc.fail`` (the owner published a policy and
the message failed it), and a small business with SPF but no DMARC is not
caught. The TXT lookup goes through the shared cache: when the envelope
domain is the From domain, SPF has already asked it.

Outcomes (result ``author``, not in Authentication-Results: no RFC 8601
method says this): pass with an aligned pass; none when the owner
publishes DMARC or SPF (DMARC and SPF judge the rest); fail with the
finding; temperror when the TXT lookup failed temporarily or DMARC could
not tell (a temporary failure never counts as "no record"); skipped
without a From domain or without a DMARC result to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trustmilter.checks import dkim, dmarc, spf
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage, skipped
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.parallel import query_many
from trustmilter.mail.text import clip
from trustmilter.results import CheckResult, Finding, Outcome

RESULT = "author"
# From domains judged per message (as DMARC's own bound, RFC 7489 §6.6.1).
MAX_AUTHORS = dmarc.MAX_AUTHOR_DOMAINS


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True


def is_spf_record(txt: str) -> bool:
    """RFC 7208 §4.5: "v=spf1" followed by a space or the end, case-insensitive."""
    head = txt[:7].lower()
    return head == "v=spf1" or (head.startswith("v=spf1") and head[6] == " ")


class AuthorCheck(BaseCheck[Config]):
    """Is each From domain authenticated by an aligned pass, DMARC or its own SPF?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "author", result=RESULT, stage=Stage.DATA,
        requires=("spf.mailfrom", "dkim", "dmarc"), waits_on="dns",
        findings={
            "author.unauthenticated":
                "nothing authenticates the From domain: no aligned SPF or DKIM pass, "
                "no DMARC record, no SPF record of its own",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Judge each From domain; one result for the message."""
        message = ctx.message
        if message is None:
            return [skipped(RESULT, "no message yet")]
        verdict = ctx.results.first("dmarc")
        if verdict is None or verdict.outcome is Outcome.SKIPPED:
            return [skipped(RESULT, "DMARC was not checked")]
        authors = dmarc.author_domains(message)
        if isinstance(authors, str) or verdict.outcome is Outcome.PERMERROR:
            # No single From (the headers check reports it), or a broken DMARC
            # record: the owner published one.
            return [skipped(RESULT, authors if isinstance(authors, str)
                            else "the From domain publishes a DMARC record")]
        authors = [a for a in authors if not a.startswith("[")][:MAX_AUTHORS]
        if not authors:
            return [skipped(RESULT, "only address-literal From domains")]
        unaligned = [a for a in authors if not self._aligned_pass(ctx, a)]
        if not unaligned:
            return [CheckResult(RESULT, Outcome.PASS, "aligned SPF or DKIM pass")]
        if verdict.outcome is Outcome.TEMPERROR:
            return [CheckResult(RESULT, Outcome.TEMPERROR, "DMARC record lookup failed")]
        if verdict.outcome is not Outcome.NONE:
            return [CheckResult(RESULT, Outcome.NONE, "the From domain publishes DMARC")]
        return [self._own_spf(ctx, unaligned)]

    @staticmethod
    def _aligned_pass(ctx: CheckContext, author: str) -> bool:
        """An SPF or DKIM pass for a domain in the From domain's organisation."""
        passed = [
            *spf.evaluated_domains(ctx.results.get("spf.mailfrom", ()), Outcome.PASS),
            *dkim.signing_domains(ctx.results.get("dkim", ()), Outcome.PASS),
        ]
        org_domain = ctx.domains.org_domain
        return any(dmarc.aligned(domain, author, "r", org_domain) for domain in passed)

    @staticmethod
    def _own_spf(ctx: CheckContext, authors: list[str]) -> CheckResult:
        """The finding for each From domain without an SPF record of its own."""
        names = {a: spf.spf_domain(a) for a in authors}
        queries = [(n, "TXT") for n in dict.fromkeys(n for n in names.values() if n)]
        answers = dict(zip(queries, query_many(ctx.dns, queries), strict=True))
        findings: list[Finding] = []
        undecided: list[str] = []
        for author, name in names.items():
            answer = answers.get((name, "TXT")) if name else None
            if answer is not None and answer.status is DnsStatus.TEMPERROR:
                undecided.append(f"{clip(author)}: TXT lookup: "
                                 f"{answer.error or 'temporary error'}")
                continue
            texts = answer.txt_strings() if answer is not None and answer.ok else []
            if not any(is_spf_record(t.decode("utf-8", "replace")) for t in texts):
                findings.append(Finding("author.unauthenticated",
                                        f"{clip(author)}: no aligned pass, no DMARC, no SPF"))
        if findings:
            return CheckResult(RESULT, Outcome.FAIL, "; ".join(f.detail for f in findings),
                               tuple(findings))
        if undecided:
            return CheckResult(RESULT, Outcome.TEMPERROR, undecided[0])
        return CheckResult(RESULT, Outcome.NONE, "the From domain publishes SPF")
