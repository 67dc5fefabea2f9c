"""The doctor's rules (SEED-RULES §1-3), one function per group, each a list of `Diagnosis`.

Every rule asks the milter's own checks (iprev, helo, spf, dkim key
classification, DMARC discovery) rather than judging anew, so the doctor
and the milter cannot disagree about the same DNS. Each `Diagnosis` says
pass / warn / fail, what was found, and the fix in one sentence.

A temporary DNS error is a warning ("could not check"), never a pass or a
fail: the doctor must not tell a sender to change what it could not see.
Nothing here raises for DNS conditions.
"""

from __future__ import annotations

import ipaddress
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dkim import DKIMException, evaluate_pk
from dkim.util import InvalidTagValueList, parse_tag_value

from trustmilter.checks import dkim as dkim_check
from trustmilter.checks import dmarc as dmarc_check
from trustmilter.checks import helo as helo_check
from trustmilter.checks import iprev as iprev_check
from trustmilter.checks.base import CheckContext
from trustmilter.checks.spf import evaluate
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.shims import DkimDns, install_spf_hook
from trustmilter.model import Connection, Envelope, Facts
from trustmilter.results import Outcome, Results

if TYPE_CHECKING:
    from trustmilter.domains import DomainTools
    from trustmilter.lookup.answer import DnsAnswer, Resolver
    from trustmilter.model import IPAddress

Status = Literal["pass", "warn", "fail"]

# Evaluating SPF for an address no record can authorise walks the whole
# record, so the RFC 7208 §4.6.4 limits are reached if they can be.
NOWHERE = ipaddress.ip_address("0.0.0.0")
# pyspf's strict-mode PermError texts for the §4.6.4 limits.
_LIMIT_ERRORS = ("Too many DNS lookups", "Void lookup limit")
# RFC 6376 §3.3 / RFC 8463: signing algorithm by key type (k=).
_ALGORITHM = {b"rsa": b"rsa-sha256", b"ed25519": b"ed25519-sha256"}


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One rule's verdict; `subject` names the IP, HELO or selector it is about."""

    rule: str
    status: Status
    found: str
    fix: str = ""
    subject: str = ""


def context(resolver: Resolver, domains: DomainTools, domain: str,
            ip: IPAddress = NOWHERE, helo: str | None = None) -> CheckContext:
    """A check context for mail from postmaster@`domain` sent by `ip`."""
    facts = Facts(Connection(ip, helo=helo), Envelope(f"postmaster@{domain}"))
    return CheckContext(facts, resolver, domains, Results())


def _unsure(rule: str, why: str, subject: str = "") -> Diagnosis:
    return Diagnosis(rule, "warn", f"could not check: {why}",
                     "Run the doctor again; the DNS lookup failed temporarily.", subject)


def suggested_host(domain: str, helo: str | None, domains: DomainTools) -> str:
    """The host name to propose for PTR and MX fixes: the HELO when it is in the domain."""
    if helo and domains.same_org(helo, domain):
        return helo.rstrip(".").lower()
    return f"mail.{domain}"


def ip_rules(ctx: CheckContext, config: iprev_check.Config, domain: str,
             host: str) -> list[Diagnosis]:
    """SEED-RULES §1: PTR exists, is in the domain's organisation, not generic, confirms."""
    ip = str(ctx.connection.ip)
    result = iprev_check.IprevCheck(config).run(ctx)[0]
    found = {f.name: f.detail for f in result.findings}
    set_ptr = f"Have the owner of {ip} set its PTR record to {host}, which must resolve to {ip}."
    if result.outcome is Outcome.TEMPERROR:
        return [_unsure("ptr.exists", result.reason, ip)]
    if "iprev.ptr_missing" in found or result.outcome is Outcome.PERMERROR:
        what = "no PTR record" if "iprev.ptr_missing" in found else result.reason
        return [Diagnosis("ptr.exists", "fail", what, set_ptr, ip)]
    name = result.data.get("ptr", "")
    out = [Diagnosis("ptr.exists", "pass", f"PTR {name}", "", ip)]
    if "iprev.ptr_not_sender_domain" in found:
        out.append(Diagnosis("ptr.in_domain", "fail",
                             f"{name} is not in the organisation of {domain}", set_ptr, ip))
    else:
        out.append(Diagnosis("ptr.in_domain", "pass", f"{name} belongs to {domain}", "", ip))
    if "iprev.ptr_generic" in found:
        out.append(Diagnosis("ptr.not_generic", "fail",
                             f"{found['iprev.ptr_generic']} looks like a dynamic or consumer line",
                             set_ptr, ip))
    else:
        out.append(Diagnosis("ptr.not_generic", "pass", f"{name} is not generic", "", ip))
    if result.outcome is Outcome.PASS:
        out.append(Diagnosis("ptr.forward_confirmed", "pass", f"{name} resolves to {ip}", "", ip))
    else:
        out.append(Diagnosis("ptr.forward_confirmed", "fail", f"{name} does not resolve to {ip}",
                             f"Publish an A/AAAA record {name} -> {ip}, or {set_ptr[0].lower()}"
                             f"{set_ptr[1:]}", ip))
    return out


# HeloCheck findings that mean the name cannot resolve at all.
_UNRESOLVABLE = ("helo.missing", "helo.ip_literal", "helo.localhost", "helo.single_label",
                 "helo.unknown_tld", "helo.nxdomain")


def helo_rules(ctx: CheckContext, domain: str, mx: DnsAnswer, host: str) -> list[Diagnosis]:
    """SEED-RULES §2: the HELO resolves, is in the domain, and is one of its MX hosts."""
    helo = (ctx.connection.helo or "").strip()
    result = helo_check.HeloCheck(helo_check.Config()).run(ctx)[0]
    names = {f.name for f in result.findings}
    fix_name = f"Make the server greet with HELO {host}, a name in {domain} with an A record."
    out: list[Diagnosis] = []
    broken = names.intersection(_UNRESOLVABLE)
    if broken:
        out.append(Diagnosis("helo.resolves", "fail",
                             f"HELO {helo}: {', '.join(sorted(broken))}", fix_name, helo))
    elif result.outcome is Outcome.TEMPERROR:
        out.append(_unsure("helo.resolves", result.reason, helo))
    else:
        out.append(Diagnosis("helo.resolves", "pass", f"HELO {helo} resolves", "", helo))
    # The helo check accepts a name of the domain's mail provider too (an MX host's org).
    outside = "helo.not_sender_domain" in names or (
        broken and not ctx.domains.same_org(helo, domain))
    out.append(Diagnosis("helo.in_domain", "fail", f"{helo} is not in {domain}", fix_name, helo)
               if outside else
               Diagnosis("helo.in_domain", "pass", f"{helo} belongs to {domain}", "", helo))
    hosts = [h for _, h in mx.mx_hosts()]
    if helo.rstrip(".").lower() in hosts:
        out.append(Diagnosis("helo.is_mx", "pass", f"{helo} is an MX host of {domain}", "", helo))
    else:
        out.append(Diagnosis("helo.is_mx", "warn",
                             f"{helo} is not among the MX hosts ({', '.join(hosts) or 'none'})",
                             f"Greet with the name of one of {domain}'s MX hosts, "
                             f"or publish {domain}. IN MX 10 {helo}.", helo))
    return out


def mx_rule(domain: str, mx: DnsAnswer, host: str) -> Diagnosis:
    """SEED-RULES §4: the domain has MX records (senders must look them up)."""
    fix = f"Publish an MX record: {domain}. IN MX 10 {host}."
    if mx.status is DnsStatus.TEMPERROR:
        return _unsure("mx.exists", mx.error or "MX lookup failed", domain)
    hosts = [h for _, h in mx.mx_hosts() if h not in ("", ".")]
    if hosts:
        return Diagnosis("mx.exists", "pass", f"MX {', '.join(hosts)}", "", domain)
    if mx.mx_hosts():
        # RFC 7505: a null MX says the domain accepts no mail, so no reply reaches it.
        return Diagnosis("mx.exists", "fail", "null MX (RFC 7505): the domain takes no mail",
                         fix, domain)
    return Diagnosis("mx.exists", "fail", f"no MX record ({mx.status.value})", fix, domain)


def spf_record_for(ips: list[IPAddress], mx_addresses: set[str]) -> str:
    """The SPF record to publish: ``mx`` when every IP is an MX host's, else the IPs."""
    if ips and all(str(ip) in mx_addresses for ip in ips):
        return "v=spf1 mx -all"
    terms = [f"ip{ip.version}:{ip}" for ip in ips] or ["mx"]
    return f"v=spf1 {' '.join(terms)} -all"


def with_term(record: str, term: str) -> str:
    """`record` with `term` added before its final ``all`` (RFC 7208 §5.1: evaluated last)."""
    terms = record.split()
    at = len(terms) - 1 if terms and terms[-1].lstrip("+-~?").lower() == "all" else len(terms)
    return " ".join([*terms[:at], term, *terms[at:]])


def spf_rules(base: CheckContext, domain: str, ips: list[IPAddress],
              mx_addresses: set[str]) -> list[Diagnosis]:
    """SEED-RULES §3: SPF exists, parses, stays within 10 lookups, authorises each IP."""
    install_spf_hook()
    publish = f"Publish this TXT record at {domain}: {spf_record_for(ips, mx_addresses)}"
    records = [t.decode("utf-8", "replace") for t in
               base.dns.query(domain, "TXT").txt_strings() if t.lower().startswith(b"v=spf1")]
    shown = records[0] if len(records) == 1 else f"{len(records)} SPF records"
    outcome, reason = evaluate(base, f"postmaster@{domain}", domain, domain)
    if outcome is Outcome.TEMPERROR:
        return [_unsure("spf.exists", reason, domain)]
    if outcome is Outcome.NONE:
        return [Diagnosis("spf.exists", "fail", f"no SPF record at {domain}", publish, domain)]
    out = [Diagnosis("spf.exists", "pass", shown, "", domain)]
    limit = outcome is Outcome.PERMERROR and any(e in reason for e in _LIMIT_ERRORS)
    if outcome is Outcome.PERMERROR and not limit:
        out.append(Diagnosis("spf.valid", "fail", f"{shown}: {reason}", publish, domain))
        return out
    out.append(Diagnosis("spf.valid", "pass", "the record parses", "", domain))
    if limit:
        # RFC 7208 §4.6.4: more than 10 DNS-querying terms is a permerror.
        fix = (f"Remove the terms naming hosts that do not exist, e.g. {publish[0].lower()}"
               f"{publish[1:]}" if "Void" in reason else
               f"Flatten the record to at most 10 lookups, e.g. {publish[0].lower()}{publish[1:]}")
        out.append(Diagnosis("spf.lookups", "fail", reason, fix, domain))
        return out
    out.append(Diagnosis("spf.lookups", "pass", "within the 10 DNS lookup limit", "", domain))
    for ip in ips:
        ctx = context(base.dns, base.domains, domain, ip, base.connection.helo)
        result, why = evaluate(ctx, f"postmaster@{domain}", domain, base.connection.helo or domain)
        if result is Outcome.PASS:
            out.append(Diagnosis("spf.authorises", "pass", f"{ip}: pass", "", str(ip)))
        elif result is Outcome.TEMPERROR:
            out.append(_unsure("spf.authorises", why, str(ip)))
        else:
            add = (f"Add ip{ip.version}:{ip} to the SPF record at {domain}: "
                   f"{with_term(records[0], f'ip{ip.version}:{ip}')}" if len(records) == 1
                   else publish)
            out.append(Diagnosis("spf.authorises", "fail", f"{ip}: {result.value} ({why})",
                                 add, str(ip)))
    return out


def dkim_rule(resolver: Resolver, domain: str, selector: str, min_bits: int) -> Diagnosis:
    """SEED-RULES §3: the selector's key exists, is valid, rsa/ed25519, RSA >= 1024 bits."""
    name = f"{selector}._domainkey.{domain}".lower()
    fix = (f"Publish the public key at {name}: v=DKIM1; k=rsa; p=<base64 of a 2048-bit RSA "
           "public key> (or k=ed25519).")
    dns = DkimDns(resolver)
    txt = dns(name)
    key_type = b"rsa"
    if txt is not None:
        with suppress(InvalidTagValueList):  # classify_key reports the syntax error
            key_type = parse_tag_value(txt).get(b"k", b"rsa").strip().lower()
        if key_type not in _ALGORITHM:
            return Diagnosis("dkim.key", "fail", f"unsupported key type k={key_type.decode()}",
                             fix, selector)
    verdict = dkim_check.classify_key(name, txt, dns.statuses.get(name), _ALGORITHM[key_type])
    if verdict is not None:
        if verdict.outcome is Outcome.TEMPERROR:
            return _unsure("dkim.key", verdict.reason, selector)
        what = verdict.reason if name in verdict.reason else f"{name}: {verdict.reason}"
        return Diagnosis("dkim.key", "fail", what, fix, selector)
    try:
        _pk, bits, _ktag, _tlsrpt = evaluate_pk(name, txt)
    except DKIMException as error:  # classify_key already ran it; kept for safety
        return Diagnosis("dkim.key", "fail", f"{name}: {error}", fix, selector)
    if key_type == b"rsa" and (bits or 0) < min_bits:
        # RFC 8301 §3.2: RSA keys under 1024 bits MUST NOT be considered valid.
        return Diagnosis("dkim.key", "fail", f"{name}: RSA key of {bits} bits", fix, selector)
    return Diagnosis("dkim.key", "pass", f"{name}: {key_type.decode()} key of {bits} bits", "",
                     selector)


def dmarc_rules(ctx: CheckContext, domain: str) -> list[Diagnosis]:
    """SEED-RULES §3: a DMARC record exists (domain or org domain), parses, and its effect."""
    org = ctx.domains.org_domain(domain) or domain
    publish = f"Publish this TXT record at _dmarc.{org}: v=DMARC1; p=quarantine"
    # The milter's own policy discovery (RFC 7489 §6.6.3).
    found = dmarc_check.DmarcCheck(dmarc_check.Config())._discover(ctx, domain)
    if found.temperror:
        return [_unsure("dmarc.exists", found.temperror, domain)]
    record = found.record
    if record is None:
        where = " or ".join(f"_dmarc.{d}" for d in dict.fromkeys((domain, org)))
        what = f"several DMARC records at _dmarc.{found.domain}" if found.domain else (
            f"no DMARC record at {where}")
        return [Diagnosis("dmarc.exists", "fail", what, publish, domain)]
    out = [Diagnosis("dmarc.exists", "pass", f"record at _dmarc.{found.domain}", "", domain)]
    if record.p is None or record.sp_invalid:
        # RFC 7489 §6.6.3 step 6: with rua= it acts as p=none, without it there is no DMARC.
        status: Status = "warn" if record.has_rua else "fail"
        fix = f"Publish this TXT record at _dmarc.{found.domain}: v=DMARC1; p=quarantine"
        out.append(Diagnosis("dmarc.valid", status, "no valid p= (or sp=) tag", fix, domain))
        return out
    out.append(Diagnosis("dmarc.valid", "pass", "the record parses", "", domain))
    published = record.sp if found.from_org and record.sp is not None else record.p
    sp = (record.sp or record.p).value
    what = (f"p={record.p.value} sp={sp} pct={record.pct}: receivers apply "
            f"{published.value} to mail that fails DMARC")
    if published is dmarc_check.Policy.NONE:
        out.append(Diagnosis("dmarc.policy", "warn", what + " (monitoring only)",
                             f"Once reports show your mail aligns, change p=none to p=quarantine "
                             f"at _dmarc.{found.domain}.", domain))
    elif record.pct < 100:
        out.append(Diagnosis("dmarc.policy", "warn", what + f" for {record.pct}% of it",
                             f"Raise pct= to 100 at _dmarc.{found.domain}.", domain))
    else:
        out.append(Diagnosis("dmarc.policy", "pass", what, "", domain))
    return out
