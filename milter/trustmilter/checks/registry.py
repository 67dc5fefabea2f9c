"""The registry: every policy section of checks, and what follows from their specs.

`SECTIONS` is the one explicit list, in pipeline order: a section's name
(its key under ``checks:`` in policy.yaml), its frozen `Config`, its check
classes (one per SMTP stage it works at) and an optional `preflight` that
stops start-up when an enabled section cannot run. No import magic: a new
check is its module, one line here and its tests.

From the specs follow the signal catalogue (signals.py), the Authentication-
Results methods (authresults.py), where the pipeline runs each check, and
which signals a later stage can still add (finality). `policy.model.ChecksConfig`
is written out by hand, so that mypy and readers see each section's type;
a test holds it to this list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from trustmilter.checks import (
    allowlist,
    arc,
    author,
    automation,
    bounce,
    dkim,
    dmarc,
    dnsbl,
    forwarded,
    headers,
    helo,
    iprev,
    loops,
    names,
    rate,
    replies,
    reputation,
    spf,
    upstream,
    uribl,
)
from trustmilter.checks.base import BaseCheck, Check, CheckSpec
from trustmilter.startup import StartupError

if TYPE_CHECKING:
    from trustmilter.config.checks import ChecksConfig

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True, slots=True)
class Section(Generic[ConfigT]):
    """One ``checks:`` section of the policy and the checks built from it."""

    name: str
    config: type[ConfigT]
    checks: tuple[type[BaseCheck[ConfigT]], ...]
    # Raises when an enabled section cannot run (a missing library).
    preflight: Callable[[ConfigT], None] | None = None

    @property
    def specs(self) -> tuple[CheckSpec, ...]:
        return tuple(check.spec for check in self.checks)


SECTIONS: tuple[Section[Any], ...] = (
    Section("iprev", iprev.Config, (iprev.IprevCheck,)),
    Section("helo", helo.Config, (helo.HeloCheck,)),
    Section("dnsbl", dnsbl.Config, (dnsbl.DnsblCheck,)),
    Section("spf", spf.Config, (spf.SpfHeloCheck, spf.SpfMailFromCheck)),
    Section("names", names.Config,
            (names.EnvelopeNamesCheck, names.RecipientNamesCheck, names.HeaderNamesCheck)),
    Section("headers", headers.Config, (headers.HeadersCheck,)),
    Section("dkim", dkim.Config, (dkim.DkimCheck,), dkim.preflight),
    Section("arc", arc.Config, (arc.ArcCheck,), arc.preflight),
    Section("dmarc", dmarc.Config, (dmarc.DmarcCheck,)),
    # A From domain nothing authenticates (no aligned pass, no DMARC, no SPF).
    Section("author", author.Config, (author.AuthorCheck,)),
    Section("uribl", uribl.Config, (uribl.UriblCheck,)),
    # Loops, automation, rate tiers and learned reputation.
    Section("loops", loops.Config,
            (loops.LoopSenderCheck, loops.LoopRecipientCheck, loops.LoopMessageCheck,
             loops.LoopNotificationCheck, loops.LoopOutboundMessageCheck)),
    Section("automation", automation.Config,
            (automation.AutomationSenderCheck, automation.AutomationMessageCheck)),
    # Senders known to be safe, once authenticated as themselves.
    Section("allowlist", allowlist.Config,
            (allowlist.AllowlistEnvelopeCheck, allowlist.AllowlistMessageCheck)),
    Section("rate", rate.Config, (rate.RecipientRateCheck, rate.MessageRateCheck)),
    Section("reputation", reputation.Config, (reputation.ReputationCheck,)),
    # Inbound bounces read, and our own hard bounces recorded.
    Section("bounce", bounce.Config, (bounce.BounceCheck,), bounce.preflight),
    # Our own mail stamped and remembered (outbound); replies to it, and
    # bounces that carry our token (inbound).
    Section("replies", replies.Config, (replies.ReplyCheck, replies.SentMailCheck),
            replies.preflight),
)

# Every check's spec, in pipeline order.
SPECS: tuple[CheckSpec, ...] = tuple(spec for section in SECTIONS for spec in section.specs)
# Checks App.build adds from top-level settings rather than a `checks:` section
# (the hop before a trusted forwarder), with the results they report under
# other names: their signals belong in the catalogue too.
ATTACHED_SPECS: tuple[CheckSpec, ...] = (
    forwarded.ForwardedCheck.spec, *forwarded.ForwardedCheck.origin_specs,
)
_CATALOGUE: tuple[CheckSpec, ...] = (*SPECS, *ATTACHED_SPECS)


def all_check_names() -> frozenset[str]:
    """The name of every check there is, enabled or not."""
    return frozenset(spec.name for spec in SPECS)


def attached_check_names() -> frozenset[str]:
    """The names of the checks App.build attaches from top-level settings (a
    trusted gateway's, the hop before a trusted forwarder): a check may
    require them, and they are simply absent when none is configured."""
    return frozenset(spec.name for spec in (*ATTACHED_SPECS, upstream.UpstreamCheck.spec))


def result_names() -> tuple[str, ...]:
    """Every result name a check reports under, in pipeline order, once each."""
    return tuple(dict.fromkeys(spec.result for spec in _CATALOGUE))


def findings() -> dict[str, str]:
    """Every finding name any check may report -> its meaning.

    Raises ValueError when two checks give one finding different meanings:
    a finding means one thing, whichever check of a module reports it.
    """
    catalogue: dict[str, str] = {}
    for spec in (*SPECS, *ATTACHED_SPECS):
        for name, meaning in spec.findings.items():
            if catalogue.setdefault(name, meaning) != meaning:
                raise ValueError(f"finding {name} has two meanings ({spec.name})")
    return catalogue


def finding_prefixes() -> dict[str, tuple[str, ...]]:
    """Result name -> the prefixes of the findings its checks report
    (``loops`` reports ``loop.*``), for results that report any."""
    prefixes: dict[str, dict[str, None]] = {}
    for spec in _CATALOGUE:
        for name in spec.findings:
            prefixes.setdefault(spec.result, {})[name.split(".", 1)[0] + "."] = None
    return {result: tuple(found) for result, found in prefixes.items()}


def build_checks(config: ChecksConfig) -> Iterator[Check]:
    """Instances of every enabled check; raises StartupError for one that cannot run.

    A disabled section builds no checks at all, so a check never sees its own
    section disabled.
    """
    for section in SECTIONS:
        section_config = getattr(config, section.name)
        if not section_config.enabled:
            continue
        if section.preflight is not None:
            try:
                section.preflight(section_config)
            except Exception as error:
                raise StartupError(f"checks.{section.name}: cannot run: {error}") from error
        for check_class in section.checks:
            yield check_class(section_config)
