"""HELO/EHLO name sanity (RFC 5321 §2.3.5, §4.1.1.1, §4.1.4).

The sender-trust rules: the HELO name must be resolvable, should belong to
the sender's domain and should match one of its MX records; ``HELO
mail.otherdomain.com``, ``HELO localhost``, ``HELO 1.2.3.4``, ``HELO
invalid.tld`` and ``HELO not.existing.domain.com`` earn low trust. One
result named ``helo`` (no RFC 8601 method): pass without findings, fail
with any, temperror when a lookup failed temporarily and nothing else was
found.

`judge` is the one judgement of a HELO name: the milter's check turns it
into findings, and ``trustmilter doctor`` into its HELO diagnoses, so the
two cannot disagree about the same name and the same DNS.

Findings:
- ``helo.missing``: no HELO/EHLO name at all;
- ``helo.ip_literal``: an address, bracketed (RFC 5321 §4.1.3) or bare;
  ``helo.ip_literal_mismatch`` when it is not the client's address;
- ``helo.localhost``: localhost, localhost.localdomain, ``*.localhost``
  (RFC 6761 §6.3) or a loopback address literal;
- ``helo.single_label``: no dot (§2.3.5 asks for a fully qualified name);
- ``helo.nxdomain``: the A and AAAA lookups say the name does not exist,
  or it is no valid host name at all (nothing could resolve it);
- ``helo.unknown_tld``: the name does not exist and neither does its
  top-level domain (RFC 8020: nothing exists below an NXDOMAIN);
- ``helo.no_address``: the name exists but has no A or AAAA record;
- ``helo.not_client_ip``: the name has addresses, none is the client IP
  (§4.1.4 says not to reject for this alone; it is a finding);
- ``helo.not_sender_domain``: the name shares no organisational domain with
  the envelope sender's domain, nor with any of that domain's MX hosts (an
  outbound host of the domain's mail provider is accepted);
- ``helo.not_sender_mx``: the name is not one of the sender domain's MX
  hosts (the implicit MX of RFC 5321 §5.1 when it publishes none).
The last two are reported only for a name with addresses (a name that
cannot be resolved is judged by that alone) and never for the null sender.

Address literals, localhost names and invalid names are never looked up:
no public DNS could answer them (RFC 6761 §6.3 keeps localhost queries off
the DNS). Every other name is, single labels included. The A, AAAA and the
sender's MX lookups run concurrently; the top-level domain is asked only
after an NXDOMAIN, and only when the public suffix list does not know it.
Nothing here raises for DNS conditions or odd input.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.domains import (
    ascii_name,
    client_address,
    domain_of,
    is_host_name,
    is_ip_literal,
    is_single_label,
    normalise,
    parse_ip_literal,
)
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.parallel import query_many
from trustmilter.results import CheckResult, Finding, Outcome

if TYPE_CHECKING:
    from trustmilter.domains import DomainTools
    from trustmilter.lookup.answer import DnsAnswer, Resolver
    from trustmilter.model import IPAddress

# RFC 6761 §6.3 reserves "localhost." and everything under it.
_LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain"})
# A HELO name is client input: keep what reaches logs short and printable.
MAX_SHOWN = 100
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


# The findings that mean the name cannot be resolved (RFC 5321 §2.3.5).
UNRESOLVABLE = frozenset({"helo.missing", "helo.ip_literal", "helo.localhost",
                          "helo.single_label", "helo.nxdomain", "helo.unknown_tld",
                          "helo.no_address"})


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True


class Resolution(StrEnum):
    """What the DNS says of the HELO name's addresses."""

    RESOLVES = "resolves"  # at least one A or AAAA record
    NO_ADDRESS = "no_address"  # the name exists, without A or AAAA
    NXDOMAIN = "nxdomain"  # the name does not exist (or cannot, being invalid)
    UNKNOWN_TLD = "unknown_tld"  # neither the name nor its top-level domain exists
    NOT_A_NAME = "not_a_name"  # missing, an address literal or localhost: never asked
    UNDECIDED = "undecided"  # a lookup failed temporarily


@dataclass(frozen=True, slots=True)
class HeloJudgement:
    """Everything known about one HELO name; `findings` are what the milter scores.

    `in_sender_org`, `sender_mx` and `to_client` are None when they could not
    be decided (null sender, no name, a temporary DNS failure).
    """

    helo: str  # as shown in logs: clipped, printable
    resolution: Resolution
    findings: tuple[Finding, ...] = ()
    undecided: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()
    in_sender_org: bool | None = None
    sender_mx: bool | None = None
    to_client: bool | None = None

    @property
    def resolvable(self) -> bool | None:
        """RFC 5321 §2.3.5: True if the name resolves, None if that is undecided."""
        if self.resolution is Resolution.UNDECIDED:
            return None
        return self.resolution is Resolution.RESOLVES


def shown(text: str) -> str:
    """`text` clipped to MAX_SHOWN printable ASCII characters."""
    clipped = _UNPRINTABLE.sub("?", text[:MAX_SHOWN])
    return clipped + "..." if len(text) > MAX_SHOWN else clipped


def is_localhost(name: str) -> bool:
    """True for the names RFC 6761 §6.3 reserves for loopback."""
    return name in _LOCALHOST_NAMES or name.endswith(".localhost")


def literal_findings(literal: IPAddress, client: IPAddress) -> list[Finding]:
    """What an address literal HELO says (RFC 5321 §4.1.3)."""
    literal = client_address(literal)
    findings = [Finding("helo.ip_literal", str(literal))]
    if literal.is_loopback:
        findings.append(Finding("helo.localhost", str(literal)))
    if literal != client:
        findings.append(Finding("helo.ip_literal_mismatch", f"{literal}, client is {client}"))
    return findings


def _matches(answers: tuple[DnsAnswer, ...], ip: IPAddress) -> bool:
    """True if any address record in `answers` is `ip`."""
    for answer in answers:
        for text in answer.addresses():
            try:
                if ipaddress.ip_address(text) == ip:
                    return True
            except ValueError:
                continue
    return False


def _tld_exists(resolver: Resolver, domains: DomainTools, name: str) -> bool:
    """False only when the DNS says the top-level domain of `name` does not exist.

    The public suffix list answers for the TLDs it knows; for others (a TLD
    newer than our copy of the list, or an operator's private one) the DNS
    is asked. A temporary failure counts as existing: the name's own
    NXDOMAIN is then the finding, which weighs the same.
    """
    if domains.has_known_tld(name):
        return True
    tld = name.rsplit(".", 1)[-1]
    return resolver.query(tld, "NS").status is not DnsStatus.NXDOMAIN


def judge(ctx: CheckContext) -> HeloJudgement:
    """The HELO name judged by its form, then by what the DNS says of it."""
    raw = (ctx.connection.helo or "").strip()
    helo = shown(raw)
    if not helo:
        return HeloJudgement(helo, Resolution.NOT_A_NAME, (Finding("helo.missing"),))
    client = client_address(ctx.connection.ip)
    literal = parse_ip_literal(raw)
    if literal is not None:
        return HeloJudgement(helo, Resolution.NOT_A_NAME,
                             tuple(literal_findings(literal, client)), in_sender_org=False,
                             sender_mx=False, to_client=client_address(literal) == client)
    name = ascii_name(normalise(raw))
    sender = domain_of(ctx.envelope.mail_from)
    if name is None or not (is_host_name(name) or is_single_label(name)):
        # RFC 5321 §2.3.5: only a valid domain name can resolve.
        return HeloJudgement(helo, Resolution.NXDOMAIN,
                             (Finding("helo.nxdomain", f"{helo} is not a host name"),),
                             in_sender_org=False, sender_mx=False, to_client=False)
    if is_localhost(name):
        return HeloJudgement(helo, Resolution.NOT_A_NAME, (Finding("helo.localhost", shown(name)),),
                             in_sender_org=False, sender_mx=False, to_client=False)
    return _looked_up(ctx, helo, name, sender, client)


def _looked_up(ctx: CheckContext, helo: str, name: str, sender: str,
               client: IPAddress) -> HeloJudgement:
    """Ask A, AAAA and the sender's MX at once; judge the name by the answers."""
    findings: list[Finding] = []
    undecided: list[str] = []
    if "." not in name:
        findings.append(Finding("helo.single_label", shown(name)))
    judge_sender = bool(sender) and not is_ip_literal(sender)
    queries = [(name, "A"), (name, "AAAA")]
    if judge_sender:
        queries.append((sender, "MX"))
    answers = query_many(ctx.dns, queries)
    addresses = (answers[0], answers[1])
    found = tuple(t for a in addresses for t in a.addresses())
    resolution = _resolution(ctx, name, addresses)
    to_client: bool | None = _matches(addresses, client)
    if resolution is Resolution.NXDOMAIN:
        findings.append(Finding("helo.nxdomain", name))
    elif resolution is Resolution.UNKNOWN_TLD:
        findings.append(Finding("helo.unknown_tld", f"{name}: no such top-level domain"))
    elif resolution is Resolution.NO_ADDRESS:
        findings.append(Finding("helo.no_address", f"{name} has no A/AAAA records"))
    elif resolution is Resolution.UNDECIDED:
        temp = next(a for a in addresses if a.status is DnsStatus.TEMPERROR)
        undecided.append(f"{temp.rdtype} lookup: {temp.error or 'temporary error'}")
        to_client = None
    elif not to_client:
        findings.append(Finding("helo.not_client_ip",
                                f"{name} -> {', '.join(found[:4])}, client is {client}"))
    if not judge_sender:
        return HeloJudgement(helo, resolution, tuple(findings), tuple(undecided), found,
                             to_client=to_client)
    mx = answers[2]
    hosts = tuple(host for _, host in mx.mx_hosts() if host not in ("", "."))
    in_org, is_mx, mx_undecided = _sender_relation(ctx.domains, name, sender, mx, hosts)
    if resolution is Resolution.RESOLVES:
        # A name that cannot be resolved is judged by that alone: its
        # domain or MX status would count the same weakness twice.
        if in_org is False:
            findings.append(Finding("helo.not_sender_domain", f"{name} vs {sender}"))
        if is_mx is False:
            listed = ", ".join(hosts[:4]) or f"{sender} (implicit MX)"
            findings.append(Finding("helo.not_sender_mx", f"{name}, MX: {listed}"))
        if mx_undecided and in_org is None:
            undecided.append(f"MX lookup of {sender}: {mx.error or 'temporary error'}")
    return HeloJudgement(helo, resolution, tuple(findings), tuple(undecided), found, hosts,
                         in_org, is_mx, to_client)


def _resolution(ctx: CheckContext, name: str,
                addresses: tuple[DnsAnswer, DnsAnswer]) -> Resolution:
    """RESOLVES, NO_ADDRESS, NXDOMAIN, UNKNOWN_TLD or UNDECIDED, from the A and AAAA answers."""
    if any(a.ok for a in addresses):
        return Resolution.RESOLVES
    if any(a.status is DnsStatus.NXDOMAIN for a in addresses):
        # A single label is a top-level domain itself: its NXDOMAIN is the answer.
        if "." in name and not _tld_exists(ctx.dns, ctx.domains, name):
            return Resolution.UNKNOWN_TLD
        return Resolution.NXDOMAIN
    if any(a.status is DnsStatus.TEMPERROR for a in addresses):
        return Resolution.UNDECIDED
    return Resolution.NO_ADDRESS


def _sender_relation(domains: DomainTools, name: str, sender: str, mx: DnsAnswer,
                     hosts: tuple[str, ...]) -> tuple[bool | None, bool | None, bool]:
    """(in the sender's organisation, one of its MX hosts, MX lookup undecided)."""
    if mx.status is DnsStatus.TEMPERROR:
        # Without the MX hosts only the HELO name's own organisation is known.
        return (True if domains.same_org(name, sender) else None), None, True
    # RFC 5321 §5.1: a domain without MX records is its own (implicit) MX.
    exchanges = hosts or ((sender,) if mx.exists and not mx.mx_hosts() else ())
    is_mx = name in exchanges
    in_org = is_mx or domains.same_org(name, sender) or any(
        domains.same_org(name, host) for host in exchanges
    )
    return in_org, is_mx, False


class HeloCheck(BaseCheck[Config]):
    """Is the HELO name a real, resolvable name of this client and sender?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "helo", result="helo", stage=Stage.MAIL, waits_on="dns",
        findings={
            "helo.missing": "the client sent no HELO/EHLO name",
            "helo.ip_literal": "the HELO name is an IP address literal",
            "helo.ip_literal_mismatch": "the HELO address literal is not the client IP",
            "helo.localhost": "the HELO name is localhost or a loopback address",
            "helo.single_label": "the HELO name has no dot",
            "helo.unknown_tld": "the HELO name's top-level domain does not exist",
            "helo.nxdomain": "the HELO name does not exist in the DNS",
            "helo.no_address": "the HELO name exists but has no A/AAAA record",
            "helo.not_client_ip": "the HELO name does not resolve to the client IP",
            "helo.not_sender_domain": "the HELO name is not in the envelope sender's domain",
            "helo.not_sender_mx": "the HELO name is not an MX host of the sender's domain",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Fail on any finding, temperror on an undecided lookup, else pass."""
        judgement = judge(ctx)
        helo, findings = judgement.helo, list(judgement.findings)
        if not helo:
            return [self._result(Outcome.FAIL, "no HELO", helo, findings)]
        if findings:
            what = ", ".join(f.name.removeprefix("helo.") for f in findings)
            return [self._result(Outcome.FAIL, f"HELO {helo}: {what}", helo, findings)]
        if judgement.undecided:
            return [self._result(Outcome.TEMPERROR, f"HELO {helo}: {judgement.undecided[0]}",
                                 helo, [])]
        return [self._result(Outcome.PASS, f"HELO {helo}", helo, [])]

    def _result(self, outcome: Outcome, reason: str, helo: str,
                findings: list[Finding]) -> CheckResult:
        """One helo result; `smtp.helo` names the identity for logs."""
        props = (("smtp.helo", helo),) if helo else ()
        return CheckResult(self.name, outcome, reason, tuple(findings), props=props)
