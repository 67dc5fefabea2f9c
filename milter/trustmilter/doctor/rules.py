"""The doctor's rules (docs/rules.md §1-3), one function per group, each a list of `Diagnosis`.

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
import re
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
from trustmilter.i18n import N_, Text, text
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
# The key problems the dkim check names (checks/dkim.py classify_key), as
# sentences that can be translated; "key syntax error: <dkimpy's words>"
# keeps the library's words as its detail.
_KEY_PROBLEMS = {
    "key revoked": N_("%(name)s: key revoked (empty p=)"),
    "key syntax error": N_("%(name)s: key syntax error"),
    "key record without p=": N_("%(name)s: key record without p="),
    "key syntax error: bad v=": N_("%(name)s: key syntax error: v= is not DKIM1"),
    "inappropriate key algorithm": N_("%(name)s: the key type does not fit the algorithm"),
    "inappropriate hash algorithm": N_("%(name)s: the key does not allow sha256 (h=)"),
    "inappropriate service type": N_("%(name)s: the key is not for email (s=)"),
}
_KEY_SYNTAX_ERROR = "key syntax error: "
# The complaint of a DNS lookup that failed temporarily: an rcode or a timeout.
_DNS_FAILURE = re.compile(r"\b(SERVFAIL|REFUSED|NOTIMP|FORMERR|timeout|timed out)\b", re.I)


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
    """A rule that a temporary DNS failure left undecided: a warning, never a verdict.

    The checks' reasons are English prose; only the DNS complaint in them
    (SERVFAIL, a timeout) is kept, so the sentence can be translated.
    """
    complaint = _DNS_FAILURE.search(why)
    found = (text(N_("could not check: a DNS lookup failed temporarily (%(code)s)"),
                  code=complaint.group(1).upper().replace("TIMED OUT", "TIMEOUT"))
             if complaint else text(N_("could not check: a DNS lookup failed temporarily")))
    return diag(rule, "warn", found,
                text(N_("Run the doctor again; the DNS lookup failed temporarily.")), subject)


def suggested_host(domain: str, helo: str | None, domains: DomainTools) -> str:
    """The host name to propose for PTR and MX fixes: the HELO when it is in the domain."""
    if helo and domains.same_org(helo, domain):
        return helo.rstrip(".").lower()
    return f"mail.{domain}"


def ip_rules(ctx: CheckContext, config: iprev_check.Config, domain: str,
             host: str) -> list[Diagnosis]:
    """docs/rules.md §1: PTR exists, is in the domain's organisation, not generic, confirms."""
    ip = str(ctx.connection.ip)
    result = iprev_check.IprevCheck(config).run(ctx)[0]
    found = {f.name: f.detail for f in result.findings}
    set_ptr = text(N_("Have the owner of %(ip)s set its PTR record to %(host)s, "
                      "which must resolve to %(ip)s."), ip=ip, host=host)
    if result.outcome is Outcome.TEMPERROR:
        return [_unsure("ptr.exists", result.reason, ip)]
    if "iprev.ptr_missing" in found or result.outcome is Outcome.PERMERROR:
        what = (text(N_("no PTR record")) if "iprev.ptr_missing" in found
                else text(N_("the PTR record of %(ip)s is not a host name"), ip=ip))
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
                             name=name), set_ptr, ip))
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
        # The finding names are the milter's own words for it (helo.nxdomain).
        broken = sorted(f.name for f in judgement.findings
                        if f.name in helo_check.UNRESOLVABLE) or [
                            f"helo.{judgement.resolution.value}"]
        out.append(diag("helo.resolves", "fail",
                        text(N_("HELO %(helo)s does not resolve (%(findings)s)"), helo=helo,
                             findings=", ".join(broken)), fix_name, helo))
    # The helo check accepts a name of the domain's mail provider too (an MX host's org).
    if judgement.in_sender_org is None:
        out.append(_unsure("helo.in_domain", judgement.undecided[0] if judgement.undecided
                           else "", helo))
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
                             hosts=", ".join(hosts)) if hosts else
                        text(N_("%(helo)s is not an MX host: %(domain)s has none"), helo=helo,
                             domain=domain),
                        text(N_("Greet with the name of one of %(domain)s's MX hosts, "
                                "or publish %(domain)s. IN MX 10 %(helo)s."),
                             domain=domain, helo=helo), helo))
    return out


def mx_rule(domain: str, mx: DnsAnswer, host: str) -> Diagnosis:
    """docs/rules.md §4: the domain has MX records (senders must look them up)."""
    fix = text(N_("Publish an MX record: %(domain)s. IN MX 10 %(host)s."),
               domain=domain, host=host)
    if mx.status is DnsStatus.TEMPERROR:
        return _unsure("mx.exists", mx.error or "", domain)
    hosts = [h for _, h in mx.mx_hosts() if h not in ("", ".")]
    if hosts:
        return diag("mx.exists", "pass", text("MX %(hosts)s", hosts=", ".join(hosts)), None,
                    domain)
    if mx.mx_hosts():
        # RFC 7505: a null MX says the domain accepts no mail, so no reply reaches it.
        return diag("mx.exists", "fail",
                    text(N_("null MX (RFC 7505): the domain takes no mail")), fix, domain)
    if mx.status is DnsStatus.NXDOMAIN:
        # Said plainly: no record can be published before the domain exists.
        return diag("mx.exists", "fail", text(N_("%(domain)s does not exist (NXDOMAIN)"),
                                              domain=domain), fix, domain)
    return diag("mx.exists", "fail", text(N_("no MX record")), fix, domain)


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
    """docs/rules.md §3: SPF exists, parses, stays within 10 lookups, authorises each IP."""
    compat.install()  # pyspf must ask DNS through our resolver
    spf = spf_record_for(ips, mx_addresses)
    publish = text(N_("Publish this TXT record at %(name)s: %(record)s"), name=domain, record=spf)
    records = [t.decode("utf-8", "replace") for t in
               base.dns.query(domain, "TXT").txt_strings() if t.lower().startswith(b"v=spf1")]
    shown = (text("%(record)s", record=records[0]) if len(records) == 1
             else text(N_("%(count)s SPF records"), count=len(records)))
    outcome, reason = evaluate(base, f"postmaster@{domain}", domain, domain)
    if outcome is Outcome.TEMPERROR:
        return [_unsure("spf.exists", reason, domain)]
    if outcome is Outcome.NONE:
        return [diag("spf.exists", "fail", text(N_("no SPF record at %(domain)s"), domain=domain),
                     publish, domain)]
    out = [diag("spf.exists", "pass", shown, None, domain)]
    limit = outcome is Outcome.PERMERROR and any(e in reason for e in _LIMIT_ERRORS)
    if outcome is Outcome.PERMERROR and not limit:
        # pyspf's own words say what is wrong with the record.
        invalid = (text(N_("the record does not parse: %(reason)s"), reason=_pyspf(reason))
                   if len(records) == 1 else
                   text(N_("%(count)s SPF records: there must be one (RFC 7208 §4.5)"),
                        count=len(records)))
        out.append(diag("spf.valid", "fail", invalid, publish, domain))
        return out
    out.append(diag("spf.valid", "pass", text(N_("the record parses")), None, domain))
    if limit:
        # RFC 7208 §4.6.4: more than 10 DNS-querying terms is a permerror.
        fix = text(N_("Remove the terms naming hosts that do not exist, e.g. publish this TXT "
                      "record at %(name)s: %(record)s") if "Void" in reason else
                   N_("Flatten the record to at most 10 lookups, e.g. publish this TXT record "
                      "at %(name)s: %(record)s"), name=domain, record=spf)
        over = (text(N_("too many lookups of names that do not exist: more than 2 "
                        "(RFC 7208 §4.6.4)")) if "Void" in reason else
                text(N_("too many DNS lookups: more than 10 (RFC 7208 §4.6.4)")))
        out.append(diag("spf.lookups", "fail", over, fix, domain))
        return out
    out.append(diag("spf.lookups", "pass", text(N_("within the 10 DNS lookup limit")), None,
                    domain))
    for ip in ips:
        ctx = context(base.dns, base.domains, domain, ip, base.connection.helo)
        result, why = evaluate(ctx, f"postmaster@{domain}", domain, base.connection.helo or domain)
        if result is Outcome.PASS:
            out.append(diag("spf.authorises", "pass",
                            text(N_("%(ip)s may send mail for %(domain)s (spf=%(result)s)"),
                                 ip=ip, domain=domain, result=result.value), None, str(ip)))
        elif result is Outcome.TEMPERROR:
            out.append(_unsure("spf.authorises", why, str(ip)))
        else:
            term = f"ip{ip.version}:{ip}"
            add = (text(N_("Add %(term)s to the SPF record at %(domain)s: %(record)s"),
                        term=term, domain=domain, record=with_term(records[0], term))
                   if len(records) == 1 else publish)
            out.append(diag("spf.authorises", "fail",
                            text(N_("%(ip)s may not send mail for %(domain)s "
                                    "(spf=%(result)s)"), ip=ip, domain=domain,
                                 result=result.value), add, str(ip)))
    return out


def dkim_rule(resolver: Resolver, domain: str, selector: str, min_bits: int) -> Diagnosis:
    """docs/rules.md §3: the selector's key exists, is valid, rsa/ed25519, RSA >= 1024 bits."""
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
        return diag("dkim.key", "fail", _key_problem(name, verdict.reason, verdict.finding),
                    fix, selector)
    try:
        _pk, bits, _ktag, _tlsrpt = evaluate_pk(name, txt)
    except DKIMException as error:  # classify_key already ran it; kept for safety
        return diag("dkim.key", "fail", text(N_("%(name)s: key syntax error: %(detail)s"),
                                             name=name, detail=error), fix, selector)
    if key_type == b"rsa" and (bits or 0) < min_bits:
        # RFC 8301 §3.2: RSA keys under 1024 bits MUST NOT be considered valid.
        return diag("dkim.key", "fail", text(N_("%(name)s: RSA key of %(bits)s bits"),
                                             name=name, bits=bits), fix, selector)
    return diag("dkim.key", "pass", text(N_("%(name)s: %(type)s key of %(bits)s bits"),
                                         name=name, type=key_type.decode(), bits=bits),
                None, selector)


def _key_problem(name: str, reason: str, finding: str | None) -> Text:
    """The dkim check's complaint about the key at `name`, as a translatable sentence."""
    if finding == "dkim.key_missing":
        return text(N_("no key for signature at %(name)s"), name=name)
    if reason in _KEY_PROBLEMS:
        return text(_KEY_PROBLEMS[reason], name=name)
    if reason.startswith(_KEY_SYNTAX_ERROR):
        return text(N_("%(name)s: key syntax error: %(detail)s"), name=name,
                    detail=reason.removeprefix(_KEY_SYNTAX_ERROR))
    return text("%(name)s: %(reason)s", name=name, reason=reason)  # a problem named later


def _pyspf(reason: str) -> str:
    """pyspf's complaint without its "SPF Permanent Error: " lead."""
    return reason.split(": ", 1)[1] if reason.startswith("SPF ") and ": " in reason else reason


def dmarc_rules(ctx: CheckContext, domain: str) -> list[Diagnosis]:
    """docs/rules.md §3: a DMARC record exists (domain or org domain), parses, and its effect."""
    org = ctx.domains.org_domain(domain) or domain
    publish = text(N_("Publish this TXT record at %(name)s: %(record)s"), name=f"_dmarc.{org}",
                   record="v=DMARC1; p=quarantine")
    # The milter's own policy discovery (RFC 9989 §4.10.1, the DNS Tree Walk).
    found = dmarc_check.discover(ctx.dns, ctx.domains, domain)
    if found.temperror:
        return [_unsure("dmarc.exists", found.temperror, domain)]
    record = found.record
    if record is None:
        if found.several:
            what = text(N_("several DMARC records at %(name)s"), name=f"_dmarc.{found.domain}")
        elif org != domain:
            what = text(N_("no DMARC record at %(name)s or %(org)s"), name=f"_dmarc.{domain}",
                        org=f"_dmarc.{org}")
        else:
            what = text(N_("no DMARC record at %(name)s"), name=f"_dmarc.{domain}")
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
    args = {"p": record.p.value, "sp": sp, "pct": record.pct}
    at = f"_dmarc.{found.domain}"
    # The policy keyword is said as what receivers do, so it reads in any language.
    if published is dmarc_check.Policy.NONE:
        out.append(diag("dmarc.policy", "warn",
                        text(N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers take no action on "
                                "mail that fails DMARC (monitoring only)"), **args),
                        text(N_("Once reports show your mail aligns, change p=none to "
                                "p=quarantine at %(name)s."), name=at), domain))
    elif record.pct < 100:
        sampled = (N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers reject %(pct)s%% of the mail "
                      "that fails DMARC") if published is dmarc_check.Policy.REJECT else
                   N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers treat %(pct)s%% of the mail "
                      "that fails DMARC as suspicious (spam folder)"))
        out.append(diag("dmarc.policy", "warn", text(sampled, **args),
                        text(N_("Raise pct= to 100 at %(name)s."), name=at), domain))
    else:
        applied = (N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers reject mail that fails DMARC")
                   if published is dmarc_check.Policy.REJECT else
                   N_("p=%(p)s sp=%(sp)s pct=%(pct)s: receivers treat mail that fails DMARC "
                      "as suspicious (spam folder)"))
        out.append(diag("dmarc.policy", "pass", text(applied, **args), None, domain))
    return out
