"""iprev (RFC 8601 §3; docs/rules.md §1): does the client IP's PTR name resolve back to it?

The client address is looked up in the reverse tree (PTR); then the A
(IPv4) or AAAA (IPv6) records of each PTR name, at most `max_ptr_names`
of them and all at once. RFC 8601 §3 results:
- pass: some PTR name has an address record equal to the client IP;
- fail: no PTR record (NXDOMAIN or NODATA), or no PTR name resolves back;
- temperror: the PTR lookup, or a forward lookup that could still have
  passed, failed temporarily;
- permerror: every PTR name is malformed (not a host name, or a single label).

Findings, whatever the outcome (docs/rules.md §1):
- ``iprev.ptr_missing``: no PTR record;
- ``iprev.ptr_generic``: the client's name embeds the IP address (1-2-3-4,
  1.2.3.4, reversed, zero-padded 001002003004, hex c0000201) or a
  `generic_words` token (split on digits, dots, dashes, underscores) in the
  part left of its registered domain, e.g. 4-3-2-1-cable-subscribers.isp.com;
- ``iprev.ptr_not_sender_domain``: no PTR name shares an organisational
  domain with the envelope sender's domain (the HELO name for the null
  sender); not reported when neither is known;
- ``iprev.forward_mismatch``: PTR names exist but none resolves back.
"The client's name" is the first name that resolved back, else the first
PTR name. The check runs at MAIL so the sender domain is known. It raises
nothing for DNS conditions or odd names.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.domains import client_address, domain_of, is_host_name, is_ip_literal, normalise
from trustmilter.lookup.answer import DnsStatus, reverse_name
from trustmilter.lookup.parallel import query_many
from trustmilter.results import AuthMethod, CheckResult, Finding, Outcome

if TYPE_CHECKING:
    from trustmilter.domains import DomainTools
    from trustmilter.model import IPAddress

# Words that mark a consumer or dynamically addressed line in a PTR name
# (docs/rules.md §1: "4-3-2-1-cable-subscribers.isp.com").
DEFAULT_GENERIC_WORDS: tuple[str, ...] = (
    "dynamic", "dyn", "dhcp", "pool", "cable", "dsl", "adsl", "vdsl", "ppp", "pppoe",
    "client", "clients", "subscriber", "subscribers", "customer", "customers",
    "dialup", "dial", "broadband", "residential", "home", "user", "users",
)

# RFC 1123 §2.1 host names; underscores are tolerated because real PTR
# zones carry them and they harm nothing here.
_TOKEN_SPLIT = re.compile(r"[-._\d]+")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    generic_words: tuple[str, ...] = DEFAULT_GENERIC_WORDS
    # RFC 7208 §4.6.4 caps PTR names examined at 10; iprev follows suit.
    max_ptr_names: int = field(default=10, metadata={"min": 1, "max": 50})


@functools.lru_cache(maxsize=4096)  # asked for every PTR name of every client
def ip_forms(ip: IPAddress) -> tuple[str, ...]:
    """The ways an address is commonly written into a generic PTR name."""
    if isinstance(ip, ipaddress.IPv4Address):
        octets = [str(b) for b in ip.packed]
        padded = [f"{b:03d}" for b in ip.packed]
        forms = [
            sep.join(order)
            for order in (octets, octets[::-1], padded, padded[::-1])
            for sep in ("-", ".", "_")
        ]
        forms += ["".join(padded), "".join(padded[::-1]), ip.packed.hex()]
        return tuple(forms)
    nibbles = ip.exploded.replace(":", "")
    return (nibbles, ip.exploded.replace(":", "-"), ip.compressed.replace(":", "-"))


def _embedded(name: str, form: str) -> bool:
    """True if `form` occurs in `name` not glued to more digits (or hex digits)."""
    glue = _HEX if any(c in "abcdef" for c in form) else _DIGITS
    start = name.find(form)
    while start != -1:
        end = start + len(form)
        if (start == 0 or name[start - 1] not in glue) and (
            end == len(name) or name[end] not in glue
        ):
            return True
        start = name.find(form, start + 1)
    return False


@functools.lru_cache(maxsize=4096)  # clients repeat; DNS names are at most 253 octets
def generic_reason(name: str, ip: IPAddress, words: frozenset[str], tools: DomainTools) -> str:
    """Why `name` looks like a consumer line ('' if it does not)."""
    for form in ip_forms(ip):
        if _embedded(name, form):
            return f"contains the address as {form}"
    org = tools.org_domain(name) or ""
    host_part = name[: -len(org)] if org and name.endswith(org) else name
    for token in _TOKEN_SPLIT.split(host_part):
        if token in words:
            return f"contains the word {token!r}"
    return ""


def sender_domain(ctx: CheckContext) -> str:
    """The envelope sender's domain, or the HELO name for the null sender ('' if neither).

    Only a plausible host name counts; the names and helo checks judge the rest.
    """
    domain = domain_of(ctx.envelope.mail_from)
    if not domain:
        domain = normalise(ctx.connection.helo or "")
    return domain if is_host_name(domain) and not is_ip_literal(domain) else ""


@dataclass(frozen=True, slots=True)
class IprevEvidence:
    """The client's name: the first PTR name that resolved back, else the first one."""

    client_name: str


def client_name(result: CheckResult) -> str:
    """The client's PTR name an iprev result judged ('' when it had none)."""
    evidence = result.evidence
    return evidence.client_name if isinstance(evidence, IprevEvidence) else ""


def _result(outcome: Outcome, reason: str, ip: IPAddress, findings: list[Finding],
            name: str = "") -> CheckResult:
    """The iprev result with its RFC 8601 §3 property."""
    return CheckResult("iprev", outcome, reason, tuple(findings), method=AuthMethod.IPREV,
                       props=(("policy.iprev", str(ip)),),
                       evidence=IprevEvidence(name) if name else None)


class IprevCheck(BaseCheck[Config]):
    """Forward-confirmed reverse DNS of the client, plus what its name says."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "iprev", result="iprev", stage=Stage.MAIL, waits_on="dns", method=AuthMethod.IPREV,
        findings={
            "iprev.ptr_missing": "the client IP has no PTR record",
            "iprev.ptr_generic": "the PTR name looks like a consumer or dynamic line",
            "iprev.ptr_not_sender_domain": "the PTR name is not in the envelope sender's domain",
            "iprev.forward_mismatch": "no PTR name resolves back to the client IP",
        },
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.words = frozenset(w.lower() for w in config.generic_words)

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Look up PTR, then the PTR names' addresses, and report."""
        ip = client_address(ctx.connection.ip)
        ptr = ctx.dns.query(reverse_name(ip), "PTR")
        if ptr.status is DnsStatus.TEMPERROR:
            return [_result(Outcome.TEMPERROR, f"PTR lookup: {ptr.error or 'temporary error'}",
                            ip, [])]
        names = list(dict.fromkeys(normalise(t) for t in ptr.targets()))
        if not ptr.ok or not names:
            return [_result(Outcome.FAIL, "no PTR record", ip,
                            [Finding("iprev.ptr_missing", str(ip))])]
        valid = [n for n in names if is_host_name(n)][: self.config.max_ptr_names]
        if not valid:
            # RFC 8601 §3: an error unlikely to be transient is a permerror.
            return [_result(Outcome.PERMERROR, f"malformed PTR name {names[0]!r}", ip, [])]
        rdtype = "A" if ip.version == 4 else "AAAA"
        answers = query_many(ctx.dns, [(n, rdtype) for n in valid])
        confirmed = [
            n for n, a in zip(valid, answers, strict=True)
            if any(_same_ip(addr, ip) for addr in a.addresses())
        ]
        temp = [a for a in answers if a.status is DnsStatus.TEMPERROR]
        client_name = confirmed[0] if confirmed else valid[0]
        findings = self._name_findings(ctx, ip, client_name, confirmed or valid)
        if confirmed:
            return [_result(Outcome.PASS, client_name, ip, findings, client_name)]
        if temp:
            return [_result(Outcome.TEMPERROR,
                            f"{client_name}: forward lookup {temp[0].error or 'failed'}",
                            ip, findings, client_name)]
        findings.append(Finding("iprev.forward_mismatch", ", ".join(valid)))
        return [_result(Outcome.FAIL, f"{client_name} does not resolve to {ip}",
                        ip, findings, client_name)]

    def _name_findings(self, ctx: CheckContext, ip: IPAddress, client_name: str,
                       names: list[str]) -> list[Finding]:
        """ptr_generic for the client's name; ptr_not_sender_domain for all its names."""
        findings: list[Finding] = []
        why = generic_reason(client_name, ip, self.words, ctx.domains)
        if why:
            findings.append(Finding("iprev.ptr_generic", f"{client_name} ({why})"))
        sender = sender_domain(ctx)
        if sender and not any(ctx.domains.same_org(n, sender) for n in names):
            findings.append(
                Finding("iprev.ptr_not_sender_domain", f"{client_name} vs {sender}")
            )
        return findings


def _same_ip(text: str, ip: IPAddress) -> bool:
    """True if the address record `text` is `ip`."""
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False

