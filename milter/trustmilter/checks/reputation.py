"""Learned reputation: what the quarantine review taught about a sender, both ways.

The seed: "releasing mail from the suspended queue tells the filter it was
legitimate; the system learns from it, so the same sender passes later",
and "mark as spam" damages a sender's standing. `trustmilter quarantine
release` records each release in the state store (`StateStore.add_release`),
`trustmilter quarantine delete --spam` each message deleted as spam
(`StateStore.add_spam_mark`), both under the sender identity
(mail/identity.py: ``bounce+4711@example.com`` is ``bounce@example.com``).
This check, at MAIL, reads the record of the envelope sender's identity.

The arithmetic (`Standing`):

- A spam mark cancels learned trust at once: the store drops the releases
  it had counted, so `releases` are the releases since the last mark.
  An operator who deletes a trusted sender's mail as spam has seen that the
  trust was wrong (or the sender's account taken over); old releases must
  not outvote that.
- Trust (``reputation.learned``) needs `releases_to_trust` releases, and
  once the sender has spam marks, more releases since the last mark than
  marks: every mark has to be outweighed by an operator saying "not spam"
  again.
- Distrust (``reputation.rejected``) from `spam_to_distrust` marks on, as
  long as the releases since the last mark do not outnumber the marks.
  The shipped policy holds such mail whatever its score (rule
  ``reputation-rejected``); releasing enough of it, `reputation forget`,
  or `forget_after_days` without another mark lifts it.
- Each direction lapses on its own `forget_after_days` after its last
  event (a release, a mark).

`spam_to_distrust` is 2 by default, as `releases_to_trust`: one mark
already takes trust away, so the sender's next message is judged as
anyone's; holding all of a sender's mail waits for a second one, so a
single mistaken click, or a single forged message in someone's name, does
not hold their mail. The envelope sender is anyone's to write: marks in a
forged name can at worst hold the real sender's mail for review (never
refuse it), and `trustmilter reputation list` shows why.

Result ``reputation``: pass with ``reputation.learned`` when trusted, fail
with ``reputation.rejected`` when distrusted, none when the sender is
unknown, below either threshold or lapsed, skipped for the null sender and
offline (no state store), temperror when the store fails — then nothing is
learned for this message, so it is judged as any other (fail safe: at
worst held, never let through wrongly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.mail.text import clip
from trustmilter.results import CheckResult, Finding, Outcome
from trustmilter.state.base import Reputation, StateError, current

RESULT = "reputation"
DAY = 86400.0
# Learned reasons named in the finding's detail; the rest are counted.
MAX_REASONS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Releases of a sender's mail before it counts as learned (issue 4: 2).
    releases_to_trust: int = field(default=2, metadata={"min": 1, "max": 1_000_000})
    # Messages deleted as spam before the sender's mail is held whatever its
    # score (reputation.rejected); one mark already cancels learned trust.
    spam_to_distrust: int = field(default=2, metadata={"min": 1, "max": 1_000_000})
    # What was learned lapses this many days after the sender's last release
    # (its spam marks: after the last mark): trust that nobody confirmed for a
    # year is not trust any more, nor is distrust nobody renewed.
    forget_after_days: float = field(default=365.0, metadata={"min": 1, "max": 36500})

    @property
    def lapse(self) -> float:
        """`forget_after_days` in seconds."""
        return self.forget_after_days * DAY


@dataclass(frozen=True, slots=True)
class Standing:
    """What a sender's record means under the policy (see the module docstring)."""

    trusted: bool  # reputation.learned
    rejected: bool  # reputation.rejected


def releases_needed(known: Reputation, config: Config) -> int:
    """Releases (since the last spam mark) that make the sender trusted: the
    policy's number, and more than its spam marks."""
    return max(config.releases_to_trust, known.spam_marks + 1)


def standing(known: Reputation, config: Config) -> Standing:
    """Trusted, rejected or neither; `known` as it counts now (`state.base.current`)."""
    outnumbered = known.releases > known.spam_marks  # releases since the last mark
    return Standing(
        trusted=known.releases >= releases_needed(known, config),
        rejected=known.spam_marks >= config.spam_to_distrust and not outnumbered,
    )


@dataclass(frozen=True, slots=True)
class ReputationEvidence:
    """What the review taught about the sender: how many releases, and the reasons the
    released mail had been held for (what learning may vouch for); how many spam
    marks, and what the marked mail had been held for."""

    releases: int
    reasons: tuple[str, ...]
    spam_marks: int = 0
    spam_reasons: tuple[str, ...] = ()


def learned_reasons(result: CheckResult) -> frozenset[str]:
    """The held-for reasons a reputation result's releases vouch for (none if it has none)."""
    evidence = result.evidence
    return frozenset(evidence.reasons) if isinstance(evidence, ReputationEvidence) else frozenset()


class ReputationCheck(BaseCheck[Config]):
    """Has the quarantine review taught us to trust this sender, or to distrust it?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "reputation", result=RESULT, stage=Stage.MAIL, waits_on="state",
        findings={
            "reputation.learned":
                "mail from this sender was released from quarantine often enough",
            "reputation.rejected":
                "mail from this sender was deleted from quarantine as spam often enough",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Look the envelope sender's identity up in the state store."""
        sender = ctx.identities.of(ctx.envelope.mail_from).address
        if not sender:
            return [CheckResult(RESULT, Outcome.SKIPPED, "null sender")]
        if ctx.state is None:
            return [CheckResult(RESULT, Outcome.SKIPPED, "no state store (offline)")]
        try:
            stored = ctx.state.reputation(sender)
        except StateError as error:
            return [CheckResult(RESULT, Outcome.TEMPERROR, f"cannot read: {clip(str(error))}")]
        if stored is None:
            return [CheckResult(RESULT, Outcome.NONE, "no releases")]
        known = current(stored, ctx.clock(), self.config.lapse)
        if known is None:
            what = "release or spam mark" if stored.spam_marks else "release"
            return [CheckResult(RESULT, Outcome.NONE, f"lapsed: no {what} in "
                                f"{self.config.forget_after_days:g} days")]
        # The reasons the released mail was held for: what learning vouches for
        # (the policy lets the finding lift only rules and points of those).
        evidence = ReputationEvidence(known.releases, tuple(known.reasons),
                                      known.spam_marks, tuple(known.spam_reasons))
        judged = standing(known, self.config)
        if judged.rejected:
            detail = (f"{known.spam_marks} spam marks, {known.releases} releases since; "
                      f"marked: {_shown(known.spam_reasons)}")
            finding = Finding("reputation.rejected", clip(detail))
            return [CheckResult(RESULT, Outcome.FAIL, finding.detail, (finding,),
                                evidence=evidence)]
        if not judged.trusted:
            return [CheckResult(RESULT, Outcome.NONE, _below(known, self.config),
                                evidence=evidence)]
        detail = f"{known.releases} releases; learned: {_shown(known.reasons)}"
        if known.spam_marks:
            detail += f"; {known.spam_marks} spam marks before"
        # The reasons as they were stored, split on commas as before (a reason is
        # a signal name, which has none).
        vouched = frozenset(r for r in ",".join(known.reasons).split(",") if r)
        finding = Finding("reputation.learned", clip(detail), vouches_for=vouched)
        return [CheckResult(RESULT, Outcome.PASS, finding.detail, (finding,),
                            evidence=evidence)]


def _shown(reasons: tuple[str, ...]) -> str:
    """The first few reasons, and how many more."""
    shown = ", ".join(reasons[:MAX_REASONS_SHOWN])
    if len(reasons) > MAX_REASONS_SHOWN:
        shown += f" and {len(reasons) - MAX_REASONS_SHOWN} more"
    return shown or "-"


def _below(known: Reputation, config: Config) -> str:
    """Why neither threshold is reached, in the words of the verdict line."""
    text = f"{known.releases} of {releases_needed(known, config)} releases"
    if known.spam_marks:
        text += (f" since {known.spam_marks} spam mark(s) "
                 f"({config.spam_to_distrust} to distrust)")
    return text
