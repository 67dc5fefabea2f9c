"""The `checks` section of policy.yaml: one sub-section per check, each typed by
that check module's own `Config` (the check describes its settings; this
only gathers them). tests/test_check_registry.py keeps it equal to the
registry's sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trustmilter.checks import allowlist as allowlist_check
from trustmilter.checks import arc as arc_check
from trustmilter.checks import author as author_check
from trustmilter.checks import automation as automation_check
from trustmilter.checks import bounce as bounce_check
from trustmilter.checks import dkim as dkim_check
from trustmilter.checks import dmarc as dmarc_check
from trustmilter.checks import dnsbl as dnsbl_check
from trustmilter.checks import headers as headers_check
from trustmilter.checks import helo as helo_check
from trustmilter.checks import iprev as iprev_check
from trustmilter.checks import loops as loops_check
from trustmilter.checks import names as names_check
from trustmilter.checks import rate as rate_check
from trustmilter.checks import replies as replies_check
from trustmilter.checks import reputation as reputation_check
from trustmilter.checks import spf as spf_check
from trustmilter.checks import uribl as uribl_check
from trustmilter.checks.autoreply_signs import is_foreign_loop_field
from trustmilter.config.errors import InvalidField


@dataclass(frozen=True, slots=True)
class ChecksConfig:
    """One section per check, typed by that check module's own Config."""

    iprev: iprev_check.Config = field(default_factory=iprev_check.Config)
    helo: helo_check.Config = field(default_factory=helo_check.Config)
    dnsbl: dnsbl_check.Config = field(default_factory=dnsbl_check.Config)
    spf: spf_check.Config = field(default_factory=spf_check.Config)
    names: names_check.Config = field(default_factory=names_check.Config)
    headers: headers_check.Config = field(default_factory=headers_check.Config)
    dkim: dkim_check.Config = field(default_factory=dkim_check.Config)
    arc: arc_check.Config = field(default_factory=arc_check.Config)
    dmarc: dmarc_check.Config = field(default_factory=dmarc_check.Config)
    author: author_check.Config = field(default_factory=author_check.Config)
    uribl: uribl_check.Config = field(default_factory=uribl_check.Config)
    loops: loops_check.Config = field(default_factory=loops_check.Config)
    automation: automation_check.Config = field(default_factory=automation_check.Config)
    allowlist: allowlist_check.Config = field(default_factory=allowlist_check.Config)
    rate: rate_check.Config = field(default_factory=rate_check.Config)
    reputation: reputation_check.Config = field(default_factory=reputation_check.Config)
    bounce: bounce_check.Config = field(default_factory=bounce_check.Config)
    replies: replies_check.Config = field(default_factory=replies_check.Config)

    def __post_init__(self) -> None:
        # Our loop marker must be ours alone: a field another help desk writes
        # would be read twice, as their loop (auto.helpdesk) and as ours.
        if is_foreign_loop_field(self.loops.loop_header):
            raise InvalidField(
                ("loops", "loop_header"),
                "a field name of our own, not another system's loop marker",
                self.loops.loop_header,
            )
