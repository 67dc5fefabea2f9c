"""The hop before a trusted forwarder: its iprev, HELO and SPF, in the forwarder's place.

When a customer's own server forwards mail to the support address, the
connection checks judge the forwarder, whose address is in no SPF record
of the author's domain. The source documents ask to detect the forwarding
and authenticate the *original* sender's server instead. The operator
lists the forwarders it trusts (`trusted_forwarders`: networks, host names,
or ``.example.com`` for every host under a domain); a name is matched
against the client name the MTA verified, or the one iprev confirmed.

For a client that is one of them, at end of message:
- the Received field the forwarder added (RFC 5321 §4.4) is read: the
  first field below our own MTA's (which records the forwarder's address),
  and below it only fields that record a hop inside the forwarder
  (loopback or private addresses: its content filter) — at most
  `MAX_INTERNAL_HOPS`. Older fields were written by hosts nobody vouches
  for and are never read;
- the checks iprev, helo, spf.helo and spf.mailfrom run again on that hop
  (its address, the name the forwarder verified, its HELO) and report as
  ``forwarded.iprev``, ``forwarded.helo``, ``forwarded.spf.helo`` and
  ``forwarded.spf.mailfrom``, their findings as ``forwarded.<finding>``;
  the A-R comment of each names the hop and the forwarder;
- a result ``forwarded`` (pass) explains the forwarder's own connection
  signals (``iprev.*``, ``helo.*``, ``spf.mailfrom.*``, ``spf.helo.*``):
  they are kept in the results and the logs, but the policy judges the
  origin's results instead. When the origin's SPF passed for a MAIL FROM
  domain aligned with the From domain (RFC 7489 §3.1), it explains the
  DMARC failure too: DMARC failed only because SPF judged the forwarder.
A trusted forwarder whose field names no hop gives ``forwarded`` none with
``forwarded.hop_unknown``: the mail is then judged on the forwarder.
Any other client gives nothing at all, whatever its Received fields say.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import ClassVar

from trustmilter.checks import dmarc, explained, helo, iprev, spf
from trustmilter.checks.base import BaseCheck, Check, CheckContext, CheckSpec, Stage
from trustmilter.domains import is_host_name, normalise
from trustmilter.mail.text import clip
from trustmilter.model import Connection, Facts, IPAddress, Message
from trustmilter.results import AuthMethod, CheckResult, Finding, Outcome, Results

PREFIX = "forwarded"
# Fields of the forwarder's own plumbing (a content filter on localhost) read
# below its first one, at most.
MAX_INTERNAL_HOPS = 4
# A Received field longer than this is cut before parsing (RFC 5322 §2.1.1
# lines are 998; a stamp needs far less).
MAX_FIELD_CHARS = 2000
# Addresses inside the forwarder's own site: RFC 1918, RFC 4193, loopback,
# link-local. (Not ipaddress.is_private: that includes the documentation
# ranges, which are public hops in tests and examples.)
_INTERNAL = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "::1/128", "fc00::/7", "fe80::/10",
))
# The forwarder's connection signals the origin's results replace.
CONNECTION_SIGNALS: tuple[str, ...] = ("iprev.*", "helo.*", "spf.mailfrom.*", "spf.helo.*")

_FROM = re.compile(r"\s*from\s+([^\s()]+)", re.IGNORECASE)
_BY = re.compile(r"\bby\s+([^\s();]+)", re.IGNORECASE)
_LITERAL = re.compile(r"\[(?:ipv6:)?([0-9a-f:.]{2,45})\]", re.IGNORECASE)
_EXIM_HELO = re.compile(r"\bhelo=([^\s()]+)", re.IGNORECASE)
_NAME_BEFORE_LITERAL = re.compile(r"([^\s()\[\]]+)\s*\[\Z")


@dataclass(frozen=True, slots=True)
class Hop:
    """One hop as a Received field records it: the client's address, the name the
    receiving host verified for it (None: unverified), its HELO, and the receiver."""

    ip: IPAddress
    name: str | None
    helo: str | None
    by: str = ""

    def describe(self) -> str:
        return f"{self.helo or '?'} ({self.name or 'unknown'} [{self.ip}])"


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _tcp_info(value: str, start: int) -> str:
    """The parenthesised TCP-info after the From-domain (nested comments kept), or ''.

    One pass, bounded by the clipped field: linear."""
    index = start
    while index < len(value) and value[index] in " \t":
        index += 1
    if index >= len(value) or value[index] != "(":
        return ""
    depth = 0
    for end in range(index, len(value)):
        char = value[end]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return value[index + 1 : end]
    return ""


def parse_received(value: str) -> Hop | None:
    """The hop a Received field's From-domain records, or None (RFC 5321 §4.4:
    ``from <helo> (<name> [<ip>])`` as Postfix and Sendmail write it,
    ``from <name> ([<ip>] helo=<helo>)`` or ``from [<ip>] (helo=<helo>)`` as Exim does)."""
    value = value[:MAX_FIELD_CHARS]
    first = _FROM.match(value)
    if first is None:
        return None
    word = first.group(1)
    info = _tcp_info(value, first.end())
    by = _BY.search(value, first.end() + len(info))
    by_name = normalise(by.group(1)) if by else ""
    literal = _LITERAL.search(info) if info else None
    word_literal = _LITERAL.fullmatch(word)
    if literal is not None:
        ip = _address(literal.group(1))
        before = _NAME_BEFORE_LITERAL.search(info[: literal.start() + 1])
        exim_helo = _EXIM_HELO.search(info)
        if before is None:  # Exim: from <name> ([ip] helo=...), or no name at all
            name = None if word_literal else word
            helo_name = exim_helo.group(1) if exim_helo else (None if word_literal else word)
        else:  # Postfix/Sendmail: from <helo> (<name> [ip])
            name = before.group(1)
            helo_name = word
        if name is not None and (name.lower() == "unknown" or "may be forged" in info.lower()
                                 or _address(name) is not None):
            name = None
    elif word_literal is not None:
        ip = _address(word_literal.group(1))
        exim_helo = _EXIM_HELO.search(info)
        name, helo_name = None, exim_helo.group(1) if exim_helo else None
    else:
        return None
    if ip is None:
        return None
    return Hop(ip, normalise(name) if name else None, helo_name or None, by_name)


def is_internal(ip: IPAddress) -> bool:
    """An address inside a site (loopback, private, link-local)."""
    return any(ip.version == net.version and ip in net for net in _INTERNAL)


def forwarder_hop(message: Message, client: IPAddress) -> Hop | None:
    """The hop before the forwarder `client`, as the forwarder's Received fields record it.

    Our own MTA's field (recording `client`) is skipped when present; then the
    forwarder's topmost field is read, and below it only its internal hops."""
    fields = message.header_values("Received")
    index = 0
    first = parse_received(fields[0]) if fields else None
    if first is not None and first.ip == client:
        index = 1  # our MTA's stamp of the forwarder's connection
    for value in fields[index : index + 1 + MAX_INTERNAL_HOPS]:
        hop = parse_received(value)
        if hop is None:
            return None
        if not is_internal(hop.ip):
            return hop
    return None


@dataclass(frozen=True, slots=True)
class Forwarders:
    """Trusted forwarders: networks, exact host names, and domains (``.example.com``)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    names: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.networks or self.names or self.domains)

    def has_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def has_name(self, name: str) -> bool:
        name = normalise(name)
        return bool(name) and (
            name in self.names or any(name.endswith(d) for d in self.domains)
        )


def parse_forwarders(entries: tuple[str, ...]) -> Forwarders:
    """The entries as Forwarders; raises ValueError naming the index of a bad one."""
    networks = []
    names: set[str] = set()
    domains: list[str] = []
    for index, entry in enumerate(entries):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = normalise(entry)
        if name.startswith(".") and is_host_name(name[1:]):
            domains.append(name)
        elif is_host_name(name):
            names.add(name)
        else:
            raise ValueError(index)
    return Forwarders(tuple(networks), frozenset(names), tuple(domains))


@dataclass(frozen=True, slots=True)
class Config:
    """Built by App.build from the settings, not read from a section of its own."""

    forwarders: Forwarders = field(default_factory=Forwarders)
    # The sections of the checks re-run on the hop; None where disabled.
    iprev: iprev.Config | None = None
    helo: helo.Config | None = None
    spf: spf.Config | None = None


def _renamed(result: CheckResult, hop: Hop, forwarder: str) -> CheckResult:
    """An origin result under ``forwarded.<check>``, its findings likewise, and an
    A-R comment that names the hop evaluated (RFC 8601 §2.3 allows comments)."""
    where = f"hop before trusted forwarder {forwarder}: {hop.describe()}"
    return replace(
        result,
        check=f"{PREFIX}.{result.check}",
        reason=f"{where}; {result.reason}" if result.reason else where,
        findings=tuple(replace(f, name=f"{PREFIX}.{f.name}") for f in result.findings),
    )


def _origin_specs() -> tuple[CheckSpec, ...]:
    """The catalogue entries of the origin results (the policy may name their signals)."""
    sources: tuple[tuple[str, AuthMethod | None, dict[str, str]], ...] = (
        ("iprev", AuthMethod.IPREV, dict(iprev.IprevCheck.spec.findings)),
        ("helo", None, dict(helo.HeloCheck.spec.findings)),
        ("spf.helo", AuthMethod.SPF, {}),
        ("spf.mailfrom", AuthMethod.SPF, {}),
    )
    return tuple(
        CheckSpec(f"{PREFIX}.{name}", result=f"{PREFIX}.{name}", stage=Stage.DATA,
                  waits_on="dns", method=method,
                  findings={f"{PREFIX}.{k}": f"the hop before a trusted forwarder: {v}"
                            for k, v in findings.items()})
        for name, method, findings in sources
    )


class ForwardedCheck(BaseCheck[Config]):
    """Authenticate the hop before a trusted forwarder in the forwarder's place."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        PREFIX, result=PREFIX, stage=Stage.DATA, requires=("iprev", "dmarc"), waits_on="dns",
        findings={
            "forwarded.hop_unknown":
                "a trusted forwarder's Received field names no hop before it",
        },
    )
    origin_specs: ClassVar[tuple[CheckSpec, ...]] = _origin_specs()

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        checks: list[Check] = []
        if config.iprev is not None:
            checks.append(iprev.IprevCheck(config.iprev))
        if config.helo is not None:
            checks.append(helo.HeloCheck(config.helo))
        if config.spf is not None:
            checks += [spf.SpfHeloCheck(config.spf), spf.SpfMailFromCheck(config.spf)]
        self._checks = tuple(checks)

    def explainable(self) -> tuple[str, ...]:
        return (*CONNECTION_SIGNALS, *explained.DMARC_FAILURES) if self.config.forwarders else ()

    def _trusted(self, ctx: CheckContext) -> str | None:
        """How the client is a trusted forwarder (its name or address), or None."""
        forwarders = self.config.forwarders
        ip = ctx.connection.ip
        if forwarders.has_ip(ip):
            return ctx.connection.hostname or str(ip)
        names = [ctx.connection.hostname or ""]
        names += [iprev.client_name(r) for r in ctx.results.get("iprev", ())
                  if r.outcome is Outcome.PASS]
        for name in names:
            if forwarders.has_name(name):
                return normalise(name)
        return None

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        message = ctx.message
        if message is None or not self.config.forwarders:
            return []
        forwarder = self._trusted(ctx)
        if forwarder is None:
            return []  # an untrusted client's Received fields change nothing
        hop = forwarder_hop(message, ctx.connection.ip)
        if hop is None:
            finding = Finding("forwarded.hop_unknown", forwarder)
            return [CheckResult(PREFIX, Outcome.NONE, f"{forwarder}: no hop before it",
                                (finding,))]
        origin = Connection(ip=hop.ip, hostname=hop.name, helo=hop.helo)
        here = replace(ctx, facts=Facts(origin, ctx.envelope, message), results=Results())
        found: list[CheckResult] = []
        for check in self._checks:
            for result in check.run(here):
                found.append(_renamed(result, hop, forwarder))
        origin_results = Results(found)
        explains = set(CONNECTION_SIGNALS)
        if _spf_aligned(ctx, origin_results, message):
            explains.update(explained.DMARC_FAILURES)
        summary = CheckResult(
            PREFIX, Outcome.PASS, f"trusted forwarder {forwarder}; judged hop {hop.describe()}",
            summary=clip(hop.describe(), 200), explains=frozenset(explains),
        )
        return [summary, *found]


def _spf_aligned(ctx: CheckContext, origin: Results, message: Message) -> bool:
    """Whether the origin's SPF passed for a MAIL FROM domain aligned with the From
    domain, under the DMARC record's aspf when one was found (RFC 7489 §3.1.2)."""
    passed = spf.evaluated_domains(origin.get(f"{PREFIX}.spf.mailfrom", ()), Outcome.PASS)
    authors = {m.domain_name for m in message.from_mailboxes} - {""}
    if not passed or len(authors) != 1:
        return False
    author = authors.pop()
    mode = "r"
    for result in ctx.results.get("dmarc", ()):
        evidence = result.evidence
        if isinstance(evidence, dmarc.DmarcEvidence) and evidence.record is not None:
            mode = evidence.record.aspf
    return any(dmarc.aligned(d, author, mode, ctx.domains.org_domain) for d in passed)
