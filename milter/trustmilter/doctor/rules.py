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
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from dkim import DKIMException, evaluate_pk
from dkim.util import InvalidTagValueList, parse_tag_value

from trustmilter import compat
from trustmilter.checks import dkim as dkim_check
from trustmilter.checks import dmarc as dmarc_check
from trustmilter.checks import helo as helo_check
from trustmilter.checks import iprev as iprev_check
from trustmilter.checks.base import CheckContext
from trustmilter.checks.spf import evaluate
from trustmilter.i18n import N_
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.shims import DkimDns
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
class Text:
    """A sentence kept as its msgid and named arguments, so `--lang` can translate it.

    Named placeholders (``%(record)s``) let a translator reorder the parts.
    """

    template: str
    args: tuple[tuple[str, str], ...] = ()

    def render(self, tr: Callable[[str], str] = N_) -> str:
        return tr(self.template) % dict(self.args)


def text(template: str, **args: object) -> Text:
    """A `Text` of `template` (a literal marked with N_) with its arguments as strings."""
    return Text(template, tuple((k, str(v)) for k, v in args.items()))


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One rule's verdict; `subject` names the IP, HELO or selector it is about.

    `found` and `fix` are English; `found_text`/`fix_text`, when set, are the
    same sentences in translatable form (not part of `--json`).
    """

    rule: str
    status: Status
    found: str
    fix: str = ""
    subject: str = ""
    found_text: Text | None = field(default=None, compare=False, repr=False)
    fix_text: Text | None = field(default=None, compare=False, repr=False)


def diag(rule: str, status: Status, found: Text, fix: Text | None = None,
         subject: str = "") -> Diagnosis:
    """A `Diagnosis` whose sentences can be translated."""
    return Diagnosis(rule, status, found.render(), fix.render() if fix else "", subject,
                     found, fix)


def context(resolver: Resolver, domains: DomainTools, domain: str,
            ip: IPAddress = NOWHERE, helo: str | None = None) -> CheckContext:
    """A check context for mail from postmaster@`domain` sent by `ip`."""
    facts = Facts(Connection(ip, helo=helo), Envelope(f"postmaster@{domain}"))
    return CheckContext(facts, resolver, domains, Results())


def _unsure(rule: str, why: str, subject: str = "") -> Diagnosis:
    return diag(rule, "warn", text(N_("could not check: %(reason)s"), reason=why),
                text(N_("Run the doctor again; the DNS lookup failed temporarily.")), subject)


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
    set_ptr = text(N_("Have the owner of %(ip)s set its PTR record to %(host)s, "
                      "which must resolve to %(ip)s."), ip=ip, host=host)
    if result.outcome is Outcome.TEMPERROR:
        return [_unsure("ptr.exists", result.reason, ip)]
    if "iprev.ptr_missing" in found or result.outcome is Outcome.PERMERROR:
        what = (text(N_("no PTR record")) if "iprev.ptr_missing" in found
                else text("%(reason)s", reason=result.reason))
        return [diag("ptr.exists", "fail", what, set_ptr, ip)]
    name = iprev_check.client_name(result)
    out = [diag("ptr.exists", "pass", text(N_("PTR %(name)s"), name=name), None, ip)]
    if "iprev.ptr_not_sender_domain" in found:
        out.append(diag("ptr.in_domain", "fail",
                        text(N_("%(name)s is not in the organisation of %(domain)s"),
                             name=name, domain=domain), set_ptr, ip))
    else:
        out.append(diag("ptr.in_domain", "pass",
                        text(N_("%(name)s belongs to %(domain)s"), name=name, domain=domain),
                        None, ip))
    if "iprev.ptr_generic" in found:
        out.append(diag("ptr.not_generic", "fail",
                        text(N_("%(name)s looks like a dynamic or consumer line"),
                             name=found["iprev.ptr_generic"]), set_ptr, ip))
    else:
        out.append(diag("ptr.not_generic", "pass",
                        text(N_("%(name)s is not generic"), name=name), None, ip))
    if result.outcome is Outcome.PASS:
        out.append(diag("ptr.forward_confirmed", "pass",
                        text(N_("%(name)s resolves to %(ip)s"), name=name, ip=ip), None, ip))
    else:
        out.append(diag("ptr.forward_confirmed", "fail",
                        text(N_("%(name)s does not resolve to %(ip)s"), name=name, ip=ip),
                        text(N_("Publish an A/AAAA record %(name)s -> %(ip)s, or have the owner "
                                "of %(ip)s set its PTR record to %(host)s, which must resolve "
                                "to %(ip)s."), name=name, ip=ip, host=host), ip))
    return out


def helo_rules(ctx: CheckContext, domain: str, host: str) -> list[Diagnosis]:
    """The HELO resolves, is in the domain, and is one of its MX hosts (the sender-trust rules).

    The milter's own judgement (`helo.judge`) decides each of the three, so
    a name the doctor fails is a name the milter scores, and the reverse.
    """
    judgement = helo_check.judge(ctx)
    helo = judgement.helo
    fix_name = text(N_("Make the server greet with HELO %(host)s, a name in %(domain)s "
                       "with an A record."), host=host, domain=domain)
    out: list[Diagnosis] = []
    if judgement.resolvable is None:
        out.append(_unsure("helo.resolves", judgement.undecided[0], helo))
    elif judgement.resolvable:
        out.append(diag("helo.resolves", "pass", text(N_("HELO %(helo)s resolves"), helo=helo),
                        None, helo))
    else:
        broken = sorted(f.name for f in judgement.findings
                        if f.name in helo_check.UNRESOLVABLE) or [judgement.resolution.value]
        out.append(diag("helo.resolves", "fail",
                        text("HELO %(helo)s: %(findings)s", helo=helo,
                             findings=", ".join(broken)), fix_name, helo))
    # The helo check accepts a name of the domain's mail provider too (an MX host's org).
    if judgement.in_sender_org is None:
        out.append(_unsure("helo.in_domain", judgement.undecided[0] if judgement.undecided
                           else "MX lookup failed", helo))
    elif judgement.in_sender_org:
        out.append(diag("helo.in_domain", "pass",
                        text(N_("%(name)s belongs to %(domain)s"), name=helo, domain=domain),
                        None, helo))
    else:
        out.append(diag("helo.in_domain", "fail",
                        text(N_("%(name)s is not in %(domain)s"), name=helo, domain=domain),
                        fix_name, helo))
    if judgement.sender_mx:
        out.append(diag("helo.is_mx", "pass",
                        text(N_("%(helo)s is an MX host of %(domain)s"), helo=helo,
                             domain=domain), None, helo))
    else:
        hosts = judgement.mx_hosts
        out.append(diag("helo.is_mx", "warn",
                        text(N_("%(helo)s is not among the MX hosts (%(hosts)s)"), helo=helo,
                             hosts=", ".join(hosts) or "none"),
                        text(N_("Greet with the name of one of %(domain)s's MX hosts, "
                                "or publish %(domain)s. IN MX 10 %(helo)s."),
                             domain=domain, helo=helo), helo))
    return out


def mx_rule(domain: str, mx: DnsAnswer, host: str) -> Diagnosis:
    """SEED-RULES §4: the domain has MX records (senders must look them up)."""
    fix = text(N_("Publish an MX record: %(domain)s. IN MX 10 %(host)s."),
               domain=domain, host=host)
    if mx.status is DnsStatus.TEMPERROR:
        return _unsure("mx.exists", mx.error or "MX lookup failed", domain)
    hosts = [h for _, h in mx.mx_hosts() if h not in ("", ".")]
    if hosts:
        return diag("mx.exists", "pass", text("MX %(hosts)s", hosts=", ".join(hosts)), None,
                    domain)
    if mx.mx_hosts():
        # RFC 7505: a null MX says the domain accepts no mail, so no reply reaches it.
        return diag("mx.exists", "fail",
                    text(N_("null MX (RFC 7505): the domain takes no mail")), fix, domain)
    return diag("mx.exists", "fail", text(N_("no MX record (%(status)s)"),
                                          status=mx.status.value), fix, domain)


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
    compat.install()  # pyspf must ask DNS through our resolver
    spf = spf_record_for(ips, mx_addresses)
    publish = text(N_("Publish this TXT record at %(name)s: %(record)s"), name=domain, record=spf)
    records = [t.decode("utf-8", "replace") for t in
               base.dns.query(domain, "TXT").txt_strings() if t.lower().startswith(b"v=spf1")]
    shown = records[0] if len(records) == 1 else f"{len(records)} SPF records"
    outcome, reason = evaluate(base, f"postmaster@{domain}", domain, domain)
    if outcome is Outcome.TEMPERROR:
        return [_unsure("spf.exists", reason, domain)]
    if outcome is Outcome.NONE:
        return [diag("spf.exists", "fail", text(N_("no SPF record at %(domain)s"), domain=domain),
                     publish, domain)]
    out = [diag("spf.exists", "pass", text("%(record)s", record=shown), None, domain)]
    limit = outcome is Outcome.PERMERROR and any(e in reason for e in _LIMIT_ERRORS)
    if outcome is Outcome.PERMERROR and not limit:
        out.append(diag("spf.valid", "fail", text("%(record)s: %(reason)s", record=shown,
                                                  reason=reason), publish, domain))
        return out
    out.append(diag("spf.valid", "pass", text(N_("the record parses")), None, domain))
    if limit:
        # RFC 7208 §4.6.4: more than 10 DNS-querying terms is a permerror.
        fix = text(N_("Remove the terms naming hosts that do not exist, e.g. publish this TXT "
                      "record at %(name)s: %(record)s") if "Void" in reason else
                   N_("Flatten the record to at most 10 lookups, e.g. publish this TXT record "
                      "at %(name)s: %(record)s"), name=domain, record=spf)
        out.append(diag("spf.lookups", "fail", text("%(reason)s", reason=reason), fix, domain))
        return out
    out.append(diag("spf.lookups", "pass", text(N_("within the 10 DNS lookup limit")), None,
                    domain))
    for ip in ips:
        ctx = context(base.dns, base.domains, domain, ip, base.connection.helo)
        result, why = evaluate(ctx, f"postmaster@{domain}", domain, base.connection.helo or domain)
        if result is Outcome.PASS:
            out.append(diag("spf.authorises", "pass", text("%(ip)s: pass", ip=ip), None,
                            str(ip)))
        elif result is Outcome.TEMPERROR:
            out.append(_unsure("spf.authorises", why, str(ip)))
        else:
            term = f"ip{ip.version}:{ip}"
            add = (text(N_("Add %(term)s to the SPF record at %(domain)s: %(record)s"),
                        term=term, domain=domain, record=with_term(records[0], term))
                   if len(records) == 1 else publish)
            out.append(diag("spf.authorises", "fail",
                            text("%(ip)s: %(result)s (%(reason)s)", ip=ip, result=result.value,
                                 reason=why), add, str(ip)))
    return out


def dkim_rule(resolver: Resolver, domain: str, selector: str, min_bits: int) -> Diagnosis:
    """SEED-RULES §3: the selector's key exists, is valid, rsa/ed25519, RSA >= 1024 bits."""
    name = f"{selector}._domainkey.{domain}".lower()
    fix = text(N_("Publish the public key at %(name)s: v=DKIM1; k=rsa; p=<base64 of a "
                  "2048-bit RSA public key> (or k=ed25519)."), name=name)
    dns = DkimDns(resolver)
    txt = dns(name)
    key_type = b"rsa"
    if txt is not None:
        with suppress(InvalidTagValueList):  # classify_key reports the syntax error
            key_type = parse_tag_value(txt).get(b"k", b"rsa").strip().lower()
        if key_type not in _ALGORITHM:
            return diag("dkim.key", "fail", text(N_("unsupported key type k=%(type)s"),
                                                 type=key_type.decode()), fix, selector)
    verdict = dkim_check.classify_key(name, txt, dns.statuses.get(name), _ALGORITHM[key_type])
    if verdict is not None:
        if verdict.outcome is Outcome.TEMPERROR:
            return _unsure("dkim.key", verdict.reason, selector)
        what = verdict.reason if name in verdict.reason else f"{name}: {verdict.reason}"
        return diag("dkim.key", "fail", text("%(reason)s", reason=what), fix, selector)
    try:
        _pk, bits, _ktag, _tlsrpt = evaluate_pk(name, txt)
    except DKIMException as error:  # classify_key already ran it; kept for safety
        return diag("dkim.key", "fail", text("%(name)s: %(reason)s", name=name, reason=error),
                    fix, selector)
    if key_type == b"rsa" and (bits or 0) < min_bits:
        # RFC 8301 §3.2: RSA keys under 1024 bits MUST NOT be considered valid.
        return diag("dkim.key", "fail", text(N_("%(name)s: RSA key of %(bits)s bits"),
                                             name=name, bits=bits), fix, selector)
    return diag("dkim.key", "pass", text(N_("%(name)s: %(type)s key of %(bits)s bits"),
                                         name=name, type=key_type.decode(), bits=bits),
                None, selector)


def dmarc_rules(ctx: CheckContext, domain: str) -> list[Diagnosis]:
    """SEED-RULES §3: a DMARC record exists (domain or org domain), parses, and its effect."""
    org = ctx.domains.org_domain(domain) or domain
    publish = text(N_("Publish this TXT record at %(name)s: %(record)s"), name=f"_dmarc.{org}",
                   record="v=DMARC1; p=quarantine")
    # The milter's own policy discovery (RFC 9989 §4.10.1, the DNS Tree Walk).
    found = dmarc_check.discover(ctx.dns, ctx.domains, domain)
    if found.temperror:
        return [_unsure("dmarc.exists", found.temperror, domain)]
    record = found.record
    if record is None:
        where = " or ".join(f"_dmarc.{d}" for d in dict.fromkeys((domain, org)))
        what = text(N_("several DMARC records at %(name)s"), name=f"_dmarc.{found.domain}") \
            if found.several else text(N_("no DMARC record at %(name)s"), name=where)
        return [diag("dmarc.exists", "fail", what, publish, domain)]
    out = [diag("dmarc.exists", "pass", text(N_("record at %(name)s"),
                                             name=f"_dmarc.{found.domain}"), None, domain)]
    if record.p is None or record.sp_invalid:
        # RFC 7489 §6.6.3 step 6: with rua= it acts as p=none, without it there is no DMARC.
        status: Status = "warn" if record.has_rua else "fail"
        fix = text(N_("Publish this TXT record at %(name)s: %(record)s"),
                   name=f"_dmarc.{found.domain}", record="v=DMARC1; p=quarantine")
        out.append(diag("dmarc.valid", status, text(N_("no valid p= (or sp=) tag")), fix, domain))
        return out
    out.append(diag("dmarc.valid", "pass", text(N_("the record parses")), None, domain))
    published = record.sp if found.inherited and record.sp is not None else record.p
    sp = (record.sp or record.p).value
    args = {"p": record.p.value, "sp": sp, "pct": record.pct, "action": published.value}
    at = f"_dmarc.{found.domain}"
    if published is dmarc_check.Policy.NONE:
        out.append(diag("dmarc.policy", "warn",
                        text(N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers apply %(action)s to "
                                "mail that fails DMARC (monitoring only)"), **args),
                        text(N_("Once reports show your mail aligns, change p=none to "
                                "p=quarantine at %(name)s."), name=at), domain))
    elif record.pct < 100:
        out.append(diag("dmarc.policy", "warn",
                        text(N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers apply %(action)s to "
                                "mail that fails DMARC for %(pct)s%% of it"), **args),
                        text(N_("Raise pct= to 100 at %(name)s."), name=at), domain))
    else:
        out.append(diag("dmarc.policy", "pass",
                        text(N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers apply %(action)s to "
                                "mail that fails DMARC"), **args), None, domain))
    return out
