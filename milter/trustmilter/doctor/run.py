"""`trustmilter doctor`: run every rule for a sending setup, concurrently, and report.

The rule groups (each IP, the HELO, MX, SPF, each DKIM selector, DMARC)
are independent, so they run on one short-lived thread pool through the
policy's DNS settings (`build_resolver(policy.dns)`). The report keeps a
fixed order whatever finishes first. Exit status: 0 when no rule fails
(warnings allowed), 1 otherwise or for an unreadable policy.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmilter import policy_search
from trustmilter.command_support import CommandFailure, policy_from
from trustmilter.config.settings import Settings
from trustmilter.doctor.rules import (
    Diagnosis,
    context,
    dkim_rule,
    dmarc_rules,
    helo_rules,
    ip_rules,
    mx_rule,
    spf_rules,
    suggested_host,
)
from trustmilter.domains import DomainTools, normalise
from trustmilter.i18n import N_, command_translator
from trustmilter.lookup.parallel import query_many
from trustmilter.lookup.resolver import build_resolver

if TYPE_CHECKING:
    from trustmilter.lookup.answer import Resolver
    from trustmilter.model import IPAddress

MAX_WORKERS = 8
# The status words of the readable report; --json keeps "pass"/"warn"/"fail".
STATUS_WORDS = {"pass": N_("PASS"), "warn": N_("WARN"), "fail": N_("FAIL")}
# Sentence parts that are not found/fix texts of the rules.
_HEADING = N_("Sending setup of %(domain)s:")
_FIX = N_("fix: %(fix)s")
_SUMMARY = N_("%(failed)s failed, %(warnings)s warnings, %(passed)s passed")


def diagnose(domain: str, ips: list[IPAddress], helo: str | None, selectors: list[str],
             resolver: Resolver, settings: Settings | None = None,
             domains: DomainTools | None = None) -> list[Diagnosis]:
    """Every docs/rules.md §1-3 rule for mail from `domain` sent by `ips` greeting as `helo`."""
    settings = settings or Settings()
    domains = domains or DomainTools()
    domain = normalise(domain)
    base = context(resolver, domains, domain, helo=helo)
    host = suggested_host(domain, helo, domains)
    mx = resolver.query(domain, "MX")
    mx_hosts = [h for _, h in mx.mx_hosts() if h not in ("", ".")]
    iprev_config = replace(settings.checks.iprev, enabled=True)

    def mx_addresses() -> set[str]:
        answers = query_many(resolver, [(h, t) for h in mx_hosts for t in ("A", "AAAA")])
        return {a for answer in answers for a in answer.addresses()}

    jobs: list[Callable[[], list[Diagnosis]]] = [
        partial(ip_rules, context(resolver, domains, domain, ip, helo), iprev_config, domain, host)
        for ip in ips
    ]
    if helo:
        jobs.append(lambda: helo_rules(base, domain, host))
    jobs.append(lambda: [mx_rule(domain, mx, host)])
    jobs.append(lambda: spf_rules(base, domain, ips, mx_addresses()))
    min_bits = settings.checks.dkim.min_key_bits
    jobs.extend(partial(_one, dkim_rule, resolver, domain, s, min_bits) for s in selectors)
    jobs.append(lambda: dmarc_rules(base, domain))
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(jobs)),
                            thread_name_prefix="doctor") as pool:
        groups = list(pool.map(lambda job: job(), jobs))
    return [d for group in groups for d in group]


def _one(rule: Callable[..., Diagnosis], *args: Any) -> list[Diagnosis]:
    """A single-diagnosis rule as a group of one."""
    return [rule(*args)]


def failed(diagnoses: list[Diagnosis]) -> bool:
    """True when any rule failed (the exit status is 1)."""
    return any(d.status == "fail" for d in diagnoses)


def as_json(domain: str, diagnoses: list[Diagnosis]) -> dict[str, Any]:
    """The `--json` object."""
    hidden = ("found_text", "fix_text")  # the translatable forms; JSON stays English
    return {"domain": domain, "ok": not failed(diagnoses),
            "rules": [{k: v for k, v in asdict(d).items() if k not in hidden}
                      for d in diagnoses]}


def as_text(domain: str, diagnoses: list[Diagnosis],
            tr: Callable[[str], str] = N_) -> str:
    """Readable text in `tr`'s language: one line per rule, its fix indented below.

    Rule ids, DNS names and records stay as they are; the sentences around them
    are translated.
    """
    lines = [tr(_HEADING) % {"domain": domain}]
    # Aligned on the longest status word of the language (2 in Japanese, 5 in French).
    width = max(len(tr(w)) for w in STATUS_WORDS.values())
    for d in diagnoses:
        about = f" [{d.subject}]" if d.subject and d.subject != domain else ""
        found = d.found_text.render(tr) if d.found_text else d.found
        lines.append(f"  {tr(STATUS_WORDS[d.status]):<{width}} {d.rule}{about}: {found}")
        if d.fix and d.status != "pass":
            fix = d.fix_text.render(tr) if d.fix_text else d.fix
            lines.append("       " + tr(_FIX) % {"fix": fix})
    fails = sum(d.status == "fail" for d in diagnoses)
    warns = sum(d.status == "warn" for d in diagnoses)
    lines.append(tr(_SUMMARY) % {"failed": fails, "warnings": warns,
                                 "passed": len(diagnoses) - fails - warns})
    return "\n".join(lines)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def add_parser(commands: Any) -> None:
    """Add `doctor` to the CLI's subcommands."""
    doctor = commands.add_parser(
        "doctor", help="check a sender's DNS setup (PTR, HELO, MX, SPF, DKIM, DMARC) "
        "against the sender-trust rules")
    doctor.add_argument("--domain", required=True, help="the sending domain")
    doctor.add_argument("--ip", action="append", default=[], type=_ip,
                        help="a sending IP address (repeat)")
    doctor.add_argument("--helo", help="the HELO/EHLO name the servers use")
    doctor.add_argument("--dkim-selector", action="append", default=[], metavar="SEL",
                        help="a DKIM selector to check (repeat)")
    doctor.add_argument("--policy", type=Path, help="policy.yaml, for its dns: settings "
                        f"({policy_search.DEFAULT_HELP})")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument("--lang", help="language of the readable report: en, de, fr or ja "
                        "(default: the locale, else English)")


def run_command(args: argparse.Namespace) -> int:
    """The `doctor` subcommand: 0 when nothing fails, 1 otherwise."""
    try:
        settings = policy_from(args.policy)
    except CommandFailure as error:
        print(f"trustmilter: {error}", file=sys.stderr)
        return 1
    domain = normalise(args.domain)
    diagnoses = diagnose(domain, list(args.ip), args.helo, list(args.dkim_selector),
                         build_resolver(settings.dns), settings)
    if args.json:
        print(json.dumps(as_json(domain, diagnoses)))
    else:
        print(as_text(domain, diagnoses, command_translator(args.lang)))
    return 1 if failed(diagnoses) else 0
