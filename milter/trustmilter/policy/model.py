"""The policy as typed, frozen values: what policy.yaml can say, and its defaults.

`Policy()` is the built-in policy and equals the shipped policy.yaml. Each
section is a frozen dataclass whose fields are the YAML keys; the loader
(load.py) builds them generically from their type hints, so adding a
section or a setting means adding a field here, nothing else. Fields may
carry ``metadata={"min": .., "max": ..}`` (for a tuple or mapping the
bounds apply to each element). Cross-field rules live in `__post_init__`
and raise `InvalidField`, so a policy built in code is checked too.

This module decides nothing: evaluate.py applies a Policy to Results.
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from trustmilter.checks import arc as arc_check
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
from trustmilter.checks import reputation as reputation_check
from trustmilter.checks import spf as spf_check
from trustmilter.checks import uribl as uribl_check
from trustmilter.daemon.config import LoggingConfig, MetricsConfig, MilterConfig
from trustmilter.lookup.config import DnsConfig
from trustmilter.model import is_field_name
from trustmilter.policy.defaults import DEFAULT_RULES, DEFAULT_SCORES
from trustmilter.policy.errors import InvalidField
from trustmilter.policy.rules import ReplyConfig, Rule, check_reply_class
from trustmilter.signals import WILDCARD, is_known_pattern, is_known_signal, suggestion
from trustmilter.state.config import StateConfig
from trustmilter.verdict import Action

# RFC 8601 §2.2: authserv-id is a value (token); in practice a host name.
_AUTHSERV_ID = re.compile(r"[A-Za-z0-9._-]{1,253}\Z")
_NO_CONTROLS = re.compile(r"[\x20-\x7e]*\Z")
SCORE_LIMIT = 1000.0


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
    uribl: uribl_check.Config = field(default_factory=uribl_check.Config)
    loops: loops_check.Config = field(default_factory=loops_check.Config)
    automation: automation_check.Config = field(default_factory=automation_check.Config)
    rate: rate_check.Config = field(default_factory=rate_check.Config)
    reputation: reputation_check.Config = field(default_factory=reputation_check.Config)
    bounce: bounce_check.Config = field(default_factory=bounce_check.Config)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score -> action. A score at or above a threshold earns that action."""

    low_trust: float = field(default=3.0, metadata={"min": 0, "max": SCORE_LIMIT})
    quarantine: float = field(default=8.0, metadata={"min": 0, "max": SCORE_LIMIT})
    # None: the score alone never rejects (only rules do).
    reject: float | None = field(default=None, metadata={"min": 0, "max": SCORE_LIMIT})

    def __post_init__(self) -> None:
        if self.quarantine < self.low_trust:
            raise InvalidField(
                ("quarantine",), f"a number >= low_trust ({self.low_trust:g})", self.quarantine
            )
        if self.reject is not None and self.reject < self.quarantine:
            raise InvalidField(
                ("reject",),
                f"a number >= quarantine ({self.quarantine:g}), or null",
                self.reject,
            )

    def action_for(self, score: float) -> Action:
        """The action the score alone earns."""
        if self.reject is not None and score >= self.reject:
            return Action.REJECT
        if score >= self.quarantine:
            return Action.QUARANTINE
        if score >= self.low_trust:
            return Action.LOW_TRUST
        return Action.ACCEPT


@dataclass(frozen=True, slots=True)
class ActionsConfig:
    """Default SMTP replies for reject and tempfail, and the quarantine reason."""

    # RFC 3463 5.7.1: delivery not authorized, message refused.
    reject: ReplyConfig = field(
        default_factory=lambda: ReplyConfig(550, "5.7.1", "Message rejected by local policy")
    )
    # RFC 3463 4.7.1: the same, for now; the sender retries (RFC 5321 §4.2.1).
    tempfail: ReplyConfig = field(
        default_factory=lambda: ReplyConfig(
            451, "4.7.1", "Message deferred by local policy, please try again later"
        )
    )
    # Shown to whoever reviews the quarantine (Postfix HOLD queue reason).
    quarantine_reason: str = "held by trustmilter policy"

    def __post_init__(self) -> None:
        check_reply_class(self.reject, Action.REJECT, ("reject",))
        check_reply_class(self.tempfail, Action.TEMPFAIL, ("tempfail",))
        if not 0 < len(self.quarantine_reason) <= 200 or not _NO_CONTROLS.match(
            self.quarantine_reason
        ):
            raise InvalidField(
                ("quarantine_reason",),
                "1 to 200 printable ASCII characters",
                self.quarantine_reason,
            )

    def reply_for(self, action: Action) -> ReplyConfig | None:
        """The default reply for `action`; None for actions that send none."""
        return {Action.REJECT: self.reject, Action.TEMPFAIL: self.tempfail}.get(action)


@dataclass(frozen=True, slots=True)
class HeadersConfig:
    """The header fields the verdict adds to delivered mail."""

    # "low; score=4.0; reasons=iprev.ptr_missing,helo.nxdomain"
    trust_header: str = "X-Trustmilter-Trust"
    # "would have quarantined (rule spf-fail-unaligned)", for shadow rules
    shadow_header: str = "X-Trustmilter-Shadow"
    add_low_trust_header: bool = True
    # Also mark quarantined mail, so whoever releases it sees why it was held.
    add_on_quarantine: bool = True
    add_shadow_header: bool = True
    # Delivered mail (accepted, low trust, or held and later released) that
    # carries any of these signals gets `auto_suppress_headers`, so help
    # desks and autoresponders downstream do not answer it automatically
    # (RFC 3834 §5; SEED-RULES §5: no notifications for bulk mail, also
    # after release). Empty: never.
    auto_suppress_when: tuple[str, ...] = ("auto.*", "loop.*", "rate.tier.*")
    # "Name: value" fields. RFC 3834 §5: Auto-Submitted marks automated
    # mail; Exchange and Outlook honour X-Auto-Response-Suppress.
    auto_suppress_headers: tuple[str, ...] = (
        "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: All",
    )

    def __post_init__(self) -> None:
        for key in ("trust_header", "shadow_header"):
            if not is_field_name(getattr(self, key)):
                raise InvalidField(
                    (key,),
                    "a header field name (printable ASCII, no ':' or space)",
                    getattr(self, key),
                )
        for index, pattern in enumerate(self.auto_suppress_when):
            if not is_known_pattern(pattern):
                close = suggestion(pattern)
                hint = f" (did you mean {close!r}?)" if close else ""
                raise InvalidField(
                    ("auto_suppress_when", index), f"a known signal name{hint}", pattern
                )
        for index, text in enumerate(self.auto_suppress_headers):
            name, colon, value = text.partition(":")
            if not colon or not is_field_name(name) or not value.strip() or (
                _NO_CONTROLS.match(value) is None
            ):
                raise InvalidField(
                    ("auto_suppress_headers", index),
                    "a header field like 'Auto-Submitted: auto-generated'",
                    text,
                )

    def auto_suppress_fields(self) -> tuple[tuple[str, str], ...]:
        """`auto_suppress_headers` as (name, value) pairs."""
        pairs = (text.partition(":") for text in self.auto_suppress_headers)
        return tuple((name, value.strip()) for name, _, value in pairs)


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything policy.yaml says. `Policy()` is the built-in default policy."""

    # Our RFC 8601 authserv-id; empty means this host's name (see effective_authserv_id).
    authserv_id: str = ""
    # Upstream gateways whose Authentication-Results we believe (RFC 8601 §5).
    trusted_authserv_ids: tuple[str, ...] = ()
    dns: DnsConfig = field(default_factory=DnsConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    # Signal -> points. A mapping in policy.yaml is merged over these defaults.
    scores: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_SCORES),
        metadata={"min": -SCORE_LIMIT, "max": SCORE_LIMIT},
    )
    # A list in policy.yaml replaces these.
    rules: tuple[Rule, ...] = DEFAULT_RULES
    thresholds: Thresholds = field(default_factory=Thresholds)
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    headers: HeadersConfig = field(default_factory=HeadersConfig)
    milter: MilterConfig = field(default_factory=MilterConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    state: StateConfig = field(default_factory=StateConfig)

    def __post_init__(self) -> None:
        for key, ids in (
            ("authserv_id", (self.authserv_id,)),
            ("trusted_authserv_ids", self.trusted_authserv_ids),
        ):
            for index, value in enumerate(ids):
                if value == "" and key == "authserv_id":
                    continue
                if _AUTHSERV_ID.match(value) is None:
                    path: tuple[str | int, ...] = (key,) if key == "authserv_id" else (key, index)
                    raise InvalidField(path, "a host name like mx.example.com", value)
        for signal, points in self.scores.items():
            if signal.endswith(WILDCARD) or not is_known_signal(signal):
                close = suggestion(signal)
                hint = f" (did you mean {close!r}?)" if close else ""
                raise InvalidField(("scores", signal), f"a known signal name{hint}", signal)
            if not math.isfinite(points) or abs(points) > SCORE_LIMIT:
                raise InvalidField(
                    ("scores", signal),
                    f"a number between {-SCORE_LIMIT:g} and {SCORE_LIMIT:g}",
                    points,
                )
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise InvalidField(
                    ("rules", index, "name"), "a name no earlier rule uses", rule.name
                )
            seen.add(rule.name)

    def effective_authserv_id(self, hostname: Callable[[], str] = socket.getfqdn) -> str:
        """`authserv_id`, or this host's name when the policy leaves it empty."""
        return self.authserv_id or hostname()
