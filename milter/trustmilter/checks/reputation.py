"""Learned reputation: senders whose held mail was released often enough.

SEED-RULES §7: "releasing mail from the suspended queue tells the filter
it was legitimate; the system learns from it, so the same sender passes
later". `trustmilter quarantine release` records each release in the state
store (`StateStore.add_release`); this check, at MAIL, reads what was
learned about the envelope sender and reports ``reputation.learned`` once
the releases reach `releases_to_trust`. The policy decides what that is
worth: by default it exempts the quarantine rules (automation, DMARC
p=quarantine, failed SPF) and cancels the score that would re-quarantine,
but never a reject rule (see policy.yaml).

Result ``reputation``: pass with the finding when learned, none when the
sender is unknown or below the threshold, skipped for the null sender and
offline (no state store), none again once the last release is
`forget_after_days` old (the reputation lapsed; the next release starts it
afresh), temperror when the store fails — then nothing is
learned for this message, so it is judged as any other (fail safe: at
worst held, never let through wrongly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.mail.addresses import normalise_address
from trustmilter.mail.text import clip
from trustmilter.results import CheckResult, Finding, Outcome
from trustmilter.state.base import StateError, is_current

RESULT = "reputation"
DAY = 86400.0
# Learned reasons named in the finding's detail; the rest are counted.
MAX_REASONS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Releases of a sender's mail before it counts as learned (issue 4: 2).
    releases_to_trust: int = field(default=2, metadata={"min": 1, "max": 1_000_000})
    # What was learned lapses this many days after the sender's last release:
    # trust that nobody confirmed for a year is not trust any more.
    forget_after_days: float = field(default=365.0, metadata={"min": 1, "max": 36500})

    @property
    def lapse(self) -> float:
        """`forget_after_days` in seconds."""
        return self.forget_after_days * DAY


@dataclass(frozen=True, slots=True)
class ReputationEvidence:
    """What releases taught about the sender: how many, and the reasons the
    released mail had been held for (what learning may vouch for)."""

    releases: int
    reasons: tuple[str, ...]


def learned_reasons(result: CheckResult) -> frozenset[str]:
    """The held-for reasons a reputation result's releases vouch for (none if it has none)."""
    evidence = result.evidence
    return frozenset(evidence.reasons) if isinstance(evidence, ReputationEvidence) else frozenset()


class ReputationCheck(BaseCheck[Config]):
    """Has releasing this sender's mail taught us to trust it?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "reputation", result=RESULT, stage=Stage.MAIL, waits_on="state",
        findings={
            "reputation.learned":
                "mail from this sender was released from quarantine often enough",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Look the envelope sender up in the state store."""
        sender = normalise_address(ctx.envelope.mail_from)
        if not sender:
            return [CheckResult(RESULT, Outcome.SKIPPED, "null sender")]
        if ctx.state is None:
            return [CheckResult(RESULT, Outcome.SKIPPED, "no state store (offline)")]
        try:
            known = ctx.state.reputation(sender)
        except StateError as error:
            return [CheckResult(RESULT, Outcome.TEMPERROR, f"cannot read: {clip(str(error))}")]
        if known is None:
            return [CheckResult(RESULT, Outcome.NONE, "no releases")]
        if not is_current(known, ctx.clock(), self.config.lapse):
            return [CheckResult(RESULT, Outcome.NONE, "lapsed: no release in "
                                f"{self.config.forget_after_days:g} days")]
        # The reasons the released mail was held for: what learning vouches for
        # (the policy lets the finding lift only rules and points of those).
        evidence = ReputationEvidence(known.releases, tuple(known.reasons))
        if known.releases < self.config.releases_to_trust:
            return [CheckResult(
                RESULT, Outcome.NONE,
                f"{known.releases} of {self.config.releases_to_trust} releases",
                evidence=evidence,
            )]
        shown = ", ".join(known.reasons[:MAX_REASONS_SHOWN])
        if len(known.reasons) > MAX_REASONS_SHOWN:
            shown += f" and {len(known.reasons) - MAX_REASONS_SHOWN} more"
        detail = f"{known.releases} releases; learned: {shown or '-'}"
        # The reasons as they were stored, split on commas as before (a reason is
        # a signal name, which has none).
        vouched = frozenset(r for r in ",".join(known.reasons).split(",") if r)
        finding = Finding("reputation.learned", clip(detail), vouches_for=vouched)
        return [CheckResult(RESULT, Outcome.PASS, finding.detail, (finding,),
                            evidence=evidence)]
