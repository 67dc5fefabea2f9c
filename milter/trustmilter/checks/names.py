"""Do the domains of the sender and of every recipient exist?

Mail with "invalid, nonexistent or unresolvable domain names in the sender
and recipient headers" is not trusted. Three checks, all reporting results
named ``names``:
- `EnvelopeNamesCheck` (``names.envelope``, at MAIL): the MAIL FROM
  domain, decided at MAIL so a nonexistent sender can be refused there
  (550 5.1.8, RFC 3463).
- `RecipientNamesCheck` (``names.rcpt``, at RCPT): with `check_recipients`,
  the RCPT TO domain of each recipient, so a recipient whose domain does
  not exist can be refused alone (550 5.1.2). Off by default: the MTA
  chose to accept the recipient, and the recipient fields of the header
  are checked in any case.
- `HeaderNamesCheck` (``names.header``, at end of message): the domains of
  the From, Sender, Reply-To, To and Cc fields, with a finding per field,
  so a policy can weigh a nonexistent Reply-To (where replies would go)
  apart from a nonexistent Cc (often a typing error).

A domain is looked up for A, AAAA and MX at once and judged:
- exists: an A, AAAA or (non-null) MX record (RFC 5321 §5.1: an address
  record serves as an implicit MX);
- nonexistent: NXDOMAIN, or a name that cannot be a public domain at all
  (one label, invalid syntax, or an address the RFC 5322 parser dropped
  for its domain: RFC 5321 §2.3.5 wants an FQDN);
- no address: the name exists with none of the three, or publishes a
  null MX (RFC 7505 §3: "0 ." says the domain takes no mail, so §4.2
  lets receivers treat it as an invalid sender);
- undecided: a lookup failed temporarily (SERVFAIL, timeout) and nothing
  else decided it. A temporary failure never counts as nonexistent.
Findings: ``names.sender_*`` (MAIL FROM), ``names.rcpt_nonexistent``
(RCPT TO; a recipient domain without addresses is for the MTA to bounce),
and ``names.<field>_nonexistent`` / ``names.<field>_no_address`` for the
fields (``from``, ``sender_field``, ``reply_to``, ``to``, ``cc``). Outcome
fail with any finding, else temperror if undecided, else pass; skipped for
the null sender, a sender without a domain, recipients not configured or
absent, or a message without any address in those fields.
Address-literal domains (``user@[192.0.2.1]``) are not looked up.

Bounds: all lookups of one check run concurrently (`query_many`) through
the shared, caching resolver, so a domain named in the envelope and in
To is asked once per message. A message looks up at most
`MAX_HEADER_DOMAINS` distinct domains in its fields (From, Sender and
Reply-To first, so the cap never hides the sender's side) and at most
`MAX_RECIPIENT_DOMAINS` distinct recipient domains in its envelope; the
rest are named in the reason and not looked up. Nothing here raises for
DNS conditions or odd input.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    from trustmilter.model import Message

RESULT = "names"
_RDTYPES = ("A", "AAAA", "MX")
# Distinct domains of one message's address fields that are looked up (three
# queries each, concurrently): enough for a message to a few dozen
# organisations, few enough that a Cc of thousands costs no more.
MAX_HEADER_DOMAINS = 64
# Distinct RCPT TO domains looked up per message (counted over the
# accepted recipients); on an MX they are the MTA's own few domains.
MAX_RECIPIENT_DOMAINS = 64
# Domains named in one finding's detail; the rest are counted.
_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Also check each RCPT TO domain. Off by default: the MTA has already
    # accepted the recipient, so it can deliver there, and a resolver that
    # does not see one of its domains (internal, split DNS) would refuse it all.
    check_recipients: bool = False


@dataclass(frozen=True, slots=True)
class AddressField:
    """A header field whose domains are judged, and its findings' stem."""

    name: str
    stem: str  # names.<stem>_nonexistent, names.<stem>_no_address


# In the order the cap takes them: the author and the sender agent (RFC
# 5322 §3.6.2), where replies go, then the recipients (§3.6.3).
ADDRESS_FIELDS = (
    AddressField("From", "from"),
    AddressField("Sender", "sender_field"),
    AddressField("Reply-To", "reply_to"),
    AddressField("To", "to"),
    AddressField("Cc", "cc"),
)


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


@dataclass(frozen=True, slots=True)
class RecipientDomains:
    """Evidence on a ``names.rcpt`` result: the distinct recipient domains
    looked up so far in this message, this recipient's included (the cap)."""

    domains: tuple[str, ...]


def recipient_domains_so_far(results: Iterable[CheckResult]) -> tuple[str, ...]:
    """The recipient domains the accepted recipients' checks looked up."""
    for result in reversed(tuple(results)):
        if isinstance(result.evidence, RecipientDomains):
            return result.evidence.domains
    return ()


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


def invalid(domain: str) -> DomainState:
    """RFC 5321 §2.3.5: a mail domain is a fully qualified domain name."""
    return DomainState(domain, Existence.NONEXISTENT, "not a valid domain name")


def judge_all(resolver: Resolver, domains: Iterable[str]) -> dict[str, DomainState]:
    """Look up every distinct domain's A, AAAA and MX concurrently and judge each.

    Address literals are left out; callers bound how many domains they pass."""
    names = {d: lookup_name(d) for d in dict.fromkeys(domains) if not d.startswith("[")}
    queries = [(n, t) for n in dict.fromkeys(n for n in names.values() if n) for t in _RDTYPES]
    answers = dict(zip(queries, query_many(resolver, queries), strict=True))
    return {
        domain: invalid(domain) if name is None
        else judge(domain, {t: answers[(name, t)] for t in _RDTYPES})
        for domain, name in names.items()
    }


def report(states: Iterable[DomainState], nonexistent: str, no_address: str = "") -> CheckResult:
    """One ``names`` result: `nonexistent` / `no_address` name the findings to use."""
    states = list(states)
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
    shown = ", ".join(clip(state.domain) for state in states[:_SHOWN])
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
        return [report(states.values(), "names.sender_nonexistent", "names.sender_no_address")]


class RecipientNamesCheck(BaseCheck[Config]):
    """With `check_recipients`, the RCPT TO domains exist."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "names.rcpt", result=RESULT, stage=Stage.RCPT, waits_on="dns",
        findings={"names.rcpt_nonexistent": "a recipient domain does not exist"},
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Judge the recipient domains of this RCPT (the engine gives one at a time)."""
        if not self.config.check_recipients:
            return [skipped(RESULT, "recipient domains not checked")]
        # RFC 5321 §4.1.1.3: RCPT TO:<postmaster> has no domain; it is skipped.
        wanted = dict.fromkeys(d for d in (domain_of(r) for r in ctx.envelope.rcpt_to)
                               if d and not d.startswith("["))
        if not wanted:
            return [skipped(RESULT, "no recipient domain to look up")]
        known = recipient_domains_so_far(ctx.results.get(RESULT, ()))
        room = MAX_RECIPIENT_DOMAINS - len(known)
        new = [d for d in wanted if d not in known]
        looked_up = [d for d in wanted if d in known] + new[:max(0, room)]
        if not looked_up:
            return [skipped(RESULT, f"more than {MAX_RECIPIENT_DOMAINS} recipient domains: "
                                    f"{clip(new[0])} not looked up")]
        evidence = RecipientDomains((*known, *new[:max(0, room)]))
        # A recipient domain without addresses is for the MTA to bounce: no finding.
        result = report(judge_all(ctx.dns, looked_up).values(), "names.rcpt_nonexistent")
        return [CheckResult(result.check, result.outcome, result.reason, result.findings,
                            evidence=evidence)]


def field_domains(message: Message) -> tuple[dict[str, list[str]], dict[str, list[str]], int]:
    """Per field stem, its (lower-case) domains and its invalid domain texts,
    within the cap; and how many addresses the cap left out. Linear in the fields."""
    looked_up: dict[str, list[str]] = {}
    bad: dict[str, list[str]] = {}
    seen: set[str] = set()
    left_out = 0
    for address_field in ADDRESS_FIELDS:
        for parsed in message.address_lists(address_field.name):
            named = [(m.domain_name, looked_up) for m in parsed.mailboxes
                     if m.domain_name and not m.domain_name.startswith("[")]
            named += [(text, bad) for text in parsed.bad_domains]
            for domain, where in named:
                if domain not in seen and len(seen) >= MAX_HEADER_DOMAINS:
                    left_out += 1
                    continue
                seen.add(domain)
                where.setdefault(address_field.stem, []).append(domain)
    return looked_up, bad, left_out


def _listed(domains: list[str]) -> str:
    shown = ", ".join(clip(d) or '""' for d in domains[:_SHOWN])
    return shown + (f" (+{len(domains) - _SHOWN} more)" if len(domains) > _SHOWN else "")


def field_findings(address_field: AddressField, states: list[DomainState]) -> list[Finding]:
    """One finding per kind of trouble in one field, naming its domains."""
    findings = []
    for existence in (Existence.NONEXISTENT, Existence.NO_ADDRESS):
        hit = [state for state in states if state.existence is existence]
        if hit:
            why = "; ".join(dict.fromkeys(state.why for state in hit))
            detail = f"{address_field.name}: {_listed([s.domain for s in hit])}: {why}"
            findings.append(Finding(f"names.{address_field.stem}_{existence.value}", detail))
    return findings


class HeaderNamesCheck(BaseCheck[Config]):
    """The domains of From, Sender, Reply-To, To and Cc exist and take mail."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "names.header", result=RESULT, stage=Stage.DATA, waits_on="dns",
        findings={
            "names.from_nonexistent": "the From header's domain does not exist",
            "names.from_no_address": "the From header's domain has no A/AAAA/MX, or a null MX",
            "names.sender_field_nonexistent": "the Sender header's domain does not exist",
            "names.sender_field_no_address":
                "the Sender header's domain has no A/AAAA/MX, or a null MX",
            "names.reply_to_nonexistent": "a Reply-To domain does not exist",
            "names.reply_to_no_address": "a Reply-To domain has no A/AAAA/MX, or a null MX",
            "names.to_nonexistent": "a To domain does not exist",
            "names.to_no_address": "a To domain has no A/AAAA/MX, or a null MX",
            "names.cc_nonexistent": "a Cc domain does not exist",
            "names.cc_no_address": "a Cc domain has no A/AAAA/MX, or a null MX",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Judge every domain of the address fields, concurrently, and report per field."""
        message = ctx.message
        if message is None:
            return [skipped(RESULT, "no message yet")]
        looked_up, bad, left_out = field_domains(message)
        if not looked_up and not bad:
            return [skipped(RESULT, "no address with a domain in From, Sender, Reply-To, "
                                    "To or Cc")]
        states = judge_all(ctx.dns, (d for domains in looked_up.values() for d in domains))
        findings: list[Finding] = []
        undecided: list[str] = []
        for address_field in ADDRESS_FIELDS:
            stem = address_field.stem
            field_states = [invalid(text) for text in bad.get(stem, ())]
            field_states += [states[d] for d in dict.fromkeys(looked_up.get(stem, ()))]
            findings += field_findings(address_field, field_states)
            undecided += [f"{address_field.name}: {clip(s.domain)}: {s.why}"
                          for s in field_states if s.existence is Existence.UNDECIDED]
        capped = f"; {left_out} more addresses not looked up" if left_out else ""
        if findings:
            reason = "; ".join(f.detail for f in findings)
            return [CheckResult(RESULT, Outcome.FAIL, reason + capped, tuple(findings))]
        if undecided:
            return [CheckResult(RESULT, Outcome.TEMPERROR, undecided[0] + capped)]
        return [CheckResult(RESULT, Outcome.PASS, f"{_listed(list(states))}: exist{capped}")]
