"""The policy as typed, frozen values: scores, rules, thresholds, actions, headers.

`Policy()` is the built-in policy and equals the shipped policy.yaml's
policy part. It is the part of policy.yaml that decides (the rest —
DNS, the milter, logging, metrics, state, each check's settings — is
configuration: config/settings.py). Its keys sit at the top of
policy.yaml beside the configuration's (`Settings.policy` is read inline).
Fields may carry ``metadata={"min": .., "max": ..}`` for the loader.
Cross-field rules live in `__post_init__` and raise `InvalidField`. Whether
a signal a rule names exists is the configuration's question (it knows the
checks); this package knows none.

This module decides nothing: evaluate.py applies a Policy to Results.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from trustmilter.config.errors import InvalidField
from trustmilter.model import is_field_name
from trustmilter.policy.defaults import DEFAULT_RULES, DEFAULT_SCORES
from trustmilter.policy.rules import ReplyConfig, Rule, check_reply_class
from trustmilter.verdict import Action

_NO_CONTROLS = re.compile(r"[\x20-\x7e]*\Z")
SCORE_LIMIT = 1000.0


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
    # (RFC 3834 §5; docs/rules.md §5: no notifications for bulk mail, also
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
    """What decides a verdict. `Policy()` is the built-in default policy."""

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

    def __post_init__(self) -> None:
        for signal, points in self.scores.items():
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

    def signal_patterns(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every signal name or pattern this policy names, with its place (for the
        configuration, which checks that each can ever appear)."""
        places: list[tuple[tuple[str | int, ...], str]] = [
            (("scores", signal), signal) for signal in self.scores
        ]
        for index, rule in enumerate(self.rules):
            for key in ("when", "any", "unless"):
                places += [(("rules", index, key, at), pattern)
                           for at, pattern in enumerate(getattr(rule, key))]
        places += [(("headers", "auto_suppress_when", at), pattern)
                   for at, pattern in enumerate(self.headers.auto_suppress_when)]
        return places
