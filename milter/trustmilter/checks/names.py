"""Do the envelope sender, From and (optionally) recipient domains exist?

SEED-RULES §3: mail with "invalid, nonexistent or unresolvable domain
names in the sender and recipient headers" is not trusted. Three checks,
all reporting results named ``names``:
- `EnvelopeNamesCheck` (``names.envelope``, at MAIL): the MAIL FROM
  domain, decided at MAIL so a nonexistent sender can be refused there
  (550 5.1.8, RFC 3463).
- `RecipientNamesCheck` (``names.rcpt``, at RCPT): with `check_recipients`,
  the RCPT TO domains known so far (they do not exist yet at MAIL).
- `HeaderNamesCheck` (``names.header``, at end of message): the domains
  of the From header's mailboxes.

A domain is looked up for A, AAAA and MX at once and judged:
- exists: an A, AAAA or (non-null) MX record (RFC 5321 §5.1: an address
  record serves as an implicit MX);
- nonexistent: NXDOMAIN, or a name that cannot be a public domain at all
  (one label, invalid syntax: RFC 5321 §2.3.5 wants an FQDN);
- no address: the name exists with none of the three, or publishes a
  null MX (RFC 7505 §3: "0 ." says the domain takes no mail, so §4.2
  lets receivers treat it as an invalid sender);
- undecided: a lookup failed temporarily and nothing else decided it.
Findings ``names.sender_nonexistent``, ``names.sender_no_address``,
``names.rcpt_nonexistent``, ``names.from_nonexistent``,
``names.from_no_address``. Outcome fail with any finding, else temperror
if undecided, else pass; skipped for the null sender, a sender without a
domain, recipients not configured or absent, or a message without From
mailboxes (the headers check reports those). Address-literal domains
(``user@[192.0.2.1]``) are not looked up. Nothing here raises for DNS
conditions or odd input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage, skipped
from trustmilter.domains import ascii_name, domain_of, is_host_name, normalise
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.parallel import query_many
from trustmilter.mail.text import clip
from trustmilter.results import CheckResult, Finding, Outcome

if TYPE_CHECKING:
    from trustmilter.lookup.answer import DnsAnswer, Resolver

RESULT = "names"
_RDTYPES = ("A", "AAAA", "MX")
# Distinct recipient / From domains looked up per message; the rest are skipped.
MAX_DOMAINS = 20


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Also check the recipient domains (useful on a relay; pointless for own domains).
    check_recipients: bool = False


class Existence(StrEnum):
    """What the DNS says about one mail domain."""

    EXISTS = "exists"
    NONEXISTENT = "nonexistent"
    NO_ADDRESS = "no_address"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class DomainState:
    """One domain's existence and why."""

    domain: str
    existence: Existence
    why: str = ""


def is_null_mx(answer: DnsAnswer) -> bool:
    """True for RFC 7505 §3 null MX: a single MX whose exchange is the root."""
    hosts = answer.mx_hosts()
    return answer.ok and len(hosts) == 1 and hosts[0][1] in ("", ".")


def judge(domain: str, answers: dict[str, DnsAnswer]) -> DomainState:
    """Decide one domain from its A, AAAA and MX answers (module docstring order)."""
    mx = answers["MX"]
    if is_null_mx(mx):
        return DomainState(domain, Existence.NO_ADDRESS, "null MX (RFC 7505)")
    if any(answer.ok for answer in answers.values()):
        return DomainState(domain, Existence.EXISTS)
    if any(answer.status is DnsStatus.NXDOMAIN for answer in answers.values()):
        return DomainState(domain, Existence.NONEXISTENT, "NXDOMAIN")
    temp = [a for a in answers.values() if a.status is DnsStatus.TEMPERROR]
    if temp:
        return DomainState(domain, Existence.UNDECIDED,
                       f"{temp[0].rdtype} lookup: {temp[0].error or 'temporary error'}")
    return DomainState(domain, Existence.NO_ADDRESS, "no A, AAAA or MX records")


def lookup_name(domain: str) -> str | None:
    """The A-label name to look up for a mail domain, or None if it cannot exist."""
    name = ascii_name(normalise(domain))
    if name is None or not is_host_name(name):
        return None
    return name


def judge_all(resolver: Resolver, domains: list[str]) -> list[DomainState]:
    """Look up every domain's A, AAAA and MX concurrently and judge each."""
    domains = [d for d in dict.fromkeys(domains) if not d.startswith("[")][:MAX_DOMAINS]
    names = {d: lookup_name(d) for d in domains}
    queries = [(n, t) for n in dict.fromkeys(n for n in names.values() if n) for t in _RDTYPES]
    answers = dict(zip(queries, query_many(resolver, queries), strict=True))
    states = []
    for domain, name in names.items():
        if name is None:
            # RFC 5321 §2.3.5: a mail domain is a fully qualified domain name.
            states.append(DomainState(domain, Existence.NONEXISTENT, "not a valid domain name"))
        else:
            states.append(judge(domain, {t: answers[(name, t)] for t in _RDTYPES}))
    return states


def report(states: list[DomainState], nonexistent: str, no_address: str = "") -> CheckResult:
    """One ``names`` result: `nonexistent` / `no_address` name the findings to use."""
    findings: list[Finding] = []
    undecided: list[str] = []
    for state in states:
        detail = f"{clip(state.domain)}: {state.why}"
        if state.existence is Existence.NONEXISTENT:
            findings.append(Finding(nonexistent, detail))
        elif state.existence is Existence.NO_ADDRESS and no_address:
            findings.append(Finding(no_address, detail))
        elif state.existence is Existence.UNDECIDED:
            undecided.append(detail)
    if findings:
        reason = "; ".join(f.detail for f in findings)
        return CheckResult(RESULT, Outcome.FAIL, reason, tuple(findings))
    if undecided:
        return CheckResult(RESULT, Outcome.TEMPERROR, undecided[0])
    shown = ", ".join(clip(state.domain) for state in states[:5])
    return CheckResult(RESULT, Outcome.PASS, f"{shown}: exists")


class EnvelopeNamesCheck(BaseCheck[Config]):
    """The MAIL FROM domain exists and takes mail."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "names.envelope", result=RESULT, stage=Stage.MAIL, waits_on="dns",
        findings={
            "names.sender_nonexistent": "the envelope sender's domain does not exist",
            "names.sender_no_address":
                "the envelope sender's domain has no A/AAAA/MX, or a null MX",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Judge the sender's domain."""
        if ctx.envelope.null_sender:
            return [skipped(RESULT, "null sender")]
        domain = domain_of(ctx.envelope.mail_from)
        if not domain:
            return [skipped(RESULT, "the sender address has no domain")]
        states = judge_all(ctx.dns, [domain])
        if not states:
            return [skipped(RESULT, "address-literal domain")]
        return [report(states, "names.sender_nonexistent", "names.sender_no_address")]


class RecipientNamesCheck(BaseCheck[Config]):
    """With `check_recipients`, the RCPT TO domains exist."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "names.rcpt", result=RESULT, stage=Stage.RCPT, waits_on="dns",
        findings={"names.rcpt_nonexistent": "a recipient domain does not exist"},
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Judge every recipient domain known so far."""
        if not self.config.check_recipients:
            return [skipped(RESULT, "recipient domains not checked")]
        # RFC 5321 §4.1.1.3: RCPT TO:<postmaster> has no domain; it is skipped.
        domains = [d for d in (domain_of(r) for r in ctx.envelope.rcpt_to) if d]
        states = judge_all(ctx.dns, domains)
        if not states:
            return [skipped(RESULT, "no recipient domain to look up")]
        # A recipient domain without addresses is for the MTA to bounce: no finding.
        return [report(states, "names.rcpt_nonexistent")]


class HeaderNamesCheck(BaseCheck[Config]):
    """The From header's domains exist and take mail."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "names.header", result=RESULT, stage=Stage.DATA, waits_on="dns",
        findings={
            "names.from_nonexistent": "the From header's domain does not exist",
            "names.from_no_address": "the From header's domain has no A/AAAA/MX, or a null MX",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Judge the domain of every From mailbox."""
        message = ctx.message
        if message is None:
            return [skipped(RESULT, "no message yet")]
        domains = [mailbox.domain_name for mailbox in message.from_mailboxes]
        if not domains:
            return [skipped(RESULT, "no From mailbox with a domain")]
        states = judge_all(ctx.dns, domains)
        if not states:
            return [skipped(RESULT, "only address-literal domains")]
        return [report(states, "names.from_nonexistent", "names.from_no_address")]
