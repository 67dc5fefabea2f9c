"""HELO/EHLO name sanity (RFC 5321 §2.3.5, §4.1.4; SEED-RULES §2).

SEED-RULES §2: the HELO name must be resolvable, should belong to the
sender's domain and should match one of its MX records; ``HELO
localhost``, ``HELO 1.2.3.4``, ``HELO invalid.tld`` and ``HELO
not.existing.domain.com`` earn low trust. One result named ``helo``
(no RFC 8601 method): pass without findings, fail with any, temperror when
a lookup failed temporarily and nothing else was found.

Findings:
- ``helo.missing``: no HELO/EHLO name at all;
- ``helo.ip_literal``: an address, bracketed (RFC 5321 §4.1.3) or bare;
  ``helo.ip_literal_mismatch`` when it is not the client's address;
- ``helo.localhost``: localhost, localhost.localdomain, ``*.localhost``
  (RFC 6761 §6.3) or a loopback address literal;
- ``helo.single_label``: no dot (§2.3.5 asks for a fully qualified name);
- ``helo.unknown_tld``: the last label is not on the public suffix list;
- ``helo.nxdomain``: the A and AAAA lookups say the name does not exist,
  or it is no valid host name at all (nothing could resolve it);
- ``helo.not_client_ip``: the name exists but no A/AAAA record is the
  client IP (§4.1.4 says not to reject for this alone; it is a finding);
- ``helo.not_sender_domain``: the HELO name shares no organisational
  domain with the envelope sender's domain, nor with any of that domain's
  MX hosts (an outbound host of the domain's mail provider is accepted).
  Not reported for the null sender.

Address literals, single labels, localhost names, names under unknown TLDs
and invalid names are never looked up: no public DNS could answer them.
The A, AAAA and (when needed) the sender's MX lookups run concurrently.
Nothing here raises for DNS conditions or odd input.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.domains import (
    ascii_name,
    client_address,
    domain_of,
    is_host_name,
    is_ip_literal,
    normalise,
    parse_ip_literal,
)
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.parallel import query_many
from trustmilter.results import CheckResult, Finding, Outcome

if TYPE_CHECKING:
    from trustmilter.lookup.answer import DnsAnswer
    from trustmilter.model import IPAddress

# RFC 6761 §6.3 reserves "localhost." and everything under it.
_LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain"})
# A HELO name is client input: keep what reaches logs short and printable.
MAX_SHOWN = 100
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True


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
            "helo.unknown_tld": "the HELO name does not end in a known public suffix",
            "helo.nxdomain": "the HELO name does not exist in the DNS",
            "helo.not_client_ip": "the HELO name does not resolve to the client IP",
            "helo.not_sender_domain": "the HELO name is not in the envelope sender's domain",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Judge the HELO name by its form, then by what the DNS says of it."""
        raw = (ctx.connection.helo or "").strip()
        helo = shown(raw)
        if not helo:
            return [self._result(Outcome.FAIL, "no HELO", helo, [Finding("helo.missing")])]
        client = client_address(ctx.connection.ip)
        literal = parse_ip_literal(raw)
        if literal is not None:
            return self._judged(helo, literal_findings(literal, client), [])
        name = ascii_name(normalise(raw))
        if name is None or (not is_host_name(name) and "." in name):
            # RFC 5321 §2.3.5: only a valid domain name can resolve.
            return self._judged(helo, [Finding("helo.nxdomain", f"{helo} is not a host name")],
                                [])
        if is_localhost(name):
            return self._judged(helo, [Finding("helo.localhost", shown(name))], [])
        if "." not in name:
            return self._judged(helo, [Finding("helo.single_label", shown(name))], [])
        if not ctx.domains.has_known_tld(name):
            return self._judged(helo, [Finding("helo.unknown_tld", shown(name))], [])
        findings, undecided = self._lookups(ctx, name, client)
        return self._judged(helo, findings, undecided)

    def _lookups(self, ctx: CheckContext, name: str,
                 client: IPAddress) -> tuple[list[Finding], list[str]]:
        """Ask A, AAAA and, when the HELO is not in the sender's domain, the sender's MX."""
        sender = domain_of(ctx.envelope.mail_from)
        need_mx = bool(sender) and not is_ip_literal(sender) and not ctx.domains.same_org(
            name, sender
        )
        queries = [(name, "A"), (name, "AAAA")]
        if need_mx:
            queries.append((sender, "MX"))
        answers = query_many(ctx.dns, queries)
        findings: list[Finding] = []
        undecided: list[str] = []
        addresses = (answers[0], answers[1])
        if _matches(addresses, client):
            pass
        elif any(a.status is DnsStatus.NXDOMAIN for a in addresses) and not any(
            a.ok for a in addresses
        ):
            findings.append(Finding("helo.nxdomain", name))
        elif temp := [a for a in addresses if a.status is DnsStatus.TEMPERROR]:
            undecided.append(f"{temp[0].rdtype} lookup: {temp[0].error or 'temporary error'}")
        else:
            found = [t for a in addresses for t in a.addresses()]
            listed = ", ".join(found[:4]) if found else "no A/AAAA records"
            findings.append(
                Finding("helo.not_client_ip", f"{name} -> {listed}, client is {client}")
            )
        if need_mx:
            mx = answers[2]
            hosts = [host for _, host in mx.mx_hosts() if host not in ("", ".")]
            if any(host == name or ctx.domains.same_org(name, host) for host in hosts):
                pass
            elif mx.status is DnsStatus.TEMPERROR:
                undecided.append(f"MX lookup of {sender}: {mx.error or 'temporary error'}")
            else:
                findings.append(Finding("helo.not_sender_domain", f"{name} vs {sender}"))
        return findings, undecided

    def _judged(self, helo: str, findings: list[Finding],
                undecided: list[str]) -> list[CheckResult]:
        """Fail on any finding, temperror on an undecided lookup, else pass."""
        if findings:
            what = ", ".join(f.name.removeprefix("helo.") for f in findings)
            return [self._result(Outcome.FAIL, f"HELO {helo}: {what}", helo, findings)]
        if undecided:
            return [self._result(Outcome.TEMPERROR, f"HELO {helo}: {undecided[0]}", helo, [])]
        return [self._result(Outcome.PASS, f"HELO {helo}", helo, [])]

    def _result(self, outcome: Outcome, reason: str, helo: str,
                findings: list[Finding]) -> CheckResult:
        """One helo result; `smtp.helo` names the identity for logs."""
        props = (("smtp.helo", helo),) if helo else ()
        return CheckResult(self.name, outcome, reason, tuple(findings), props=props)
