"""Rate tiers: how many messages one sender sent in the last window.

SEED-RULES §5, the help desk's last resort against loops, "per user per
ticket per hour": the first 20 messages pass, the next 20 are suspended
(quarantined), everything beyond 40 in that hour is rejected outright. It
works when the looping system uses the same address each time. Allow-listed
senders get both limits multiplied by ten (`allowlist_factor`).

The counting key (`key`):
- ``sender``: MAIL FROM alone;
- ``sender+recipient`` (the default): MAIL FROM and one RCPT TO;
- ``sender+thread``: MAIL FROM and the thread root (the seeds' "ticket"):
  the first Message-ID in References, else In-Reply-To, else the Subject
  without reply/forward prefixes and [ticket] tags, case- and space-folded.
The first two are counted at RCPT (`RateCheck`), so the reject tier is
given at RCPT TO, before the body is sent; the thread is known only at end
of message (`ThreadRateCheck`). The check of the other stage returns no
result at all.

Counting: ``ctx.state.hit(key, ctx.clock(), window)`` — one event per
(message, key), atomic in the store, so N parallel sessions get exactly
1..N. The milter calls RCPT-stage checks once per recipient with only that
recipient in ``rcpt_to``; for the ``sender`` key every recipient of one
message has the same key, so a key already counted for this message (a
``rate`` result with that key in ``ctx.results``) is reported again, not
counted again. Rejected attempts count too: a system that keeps trying
stays rejected until it pauses for a window.

Result ``rate``: pass (count within quarantine_after), fail with
``rate.tier.quarantine`` (quarantine_after < count <= reject_after) or
``rate.tier.reject`` (count > reject_after); skipped for the null sender
(bounces are the automation check's business) and offline (no state
store); temperror with ``rate.state_unavailable`` when the store fails.
`RateEvidence` carries the key, the count and the limits.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Literal

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.config.errors import InvalidField
from trustmilter.mail.addresses import normalise_address
from trustmilter.mail.encoded_words import decode_words as _decoded
from trustmilter.model import Message
from trustmilter.results import CheckResult, Finding, Outcome
from trustmilter.state.base import StateError

RESULT = "rate"
KeyKind = Literal["sender", "sender+recipient", "sender+thread"]
_PREFIX = {"sender": "rate:s:", "sender+recipient": "rate:s+r:", "sender+thread": "rate:s+t:"}
# Key parts longer than this, or with characters outside printable ASCII
# (or our '|' separator), are replaced by a hash: keys stay short and safe
# for any backend, whatever a sender writes.
MAX_KEY_PART = 200
_SAFE_PART = re.compile(r"[\x21-\x7b\x7d\x7e]*\Z")  # printable ASCII without space and '|'
# Reply/forward prefixes mail clients add (English, German, Scandinavian,
# Dutch), optionally counted ("Re[2]:", "AW(3):"), and [ticket] tags.
# Matched at a position (no \A): each prefix is passed over, not cut off.
_REPLY_PREFIX = re.compile(
    r"\s*(?:(?:re|fwd?|aw|wg|sv|antw)\s*(?:\[\d+\]|\(\d+\))?\s*:|\[[^\[\]]{0,100}\])\s*",
    re.IGNORECASE,
)
_TAG = re.compile(r"\[[^\[\]]{0,100}\]")
_MSG_ID = re.compile(r"<[^<>\s]{1,995}>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    key: KeyKind = "sender+recipient"
    # Seconds of the rolling window (SEED-RULES §5: one hour).
    window: float = field(default=3600.0, metadata={"min": 1, "max": 7 * 86400})
    # Messages in the window that pass; above this, the quarantine tier.
    quarantine_after: int = field(default=20, metadata={"min": 0, "max": 10_000_000})
    # Above this many, the reject tier.
    reject_after: int = field(default=40, metadata={"min": 0, "max": 10_000_000})
    # Senders whose limits are multiplied: "user@example.com", "@example.com"
    # (the whole domain) or a shell pattern ("*@*.example.com").
    allowlist: tuple[str, ...] = ()
    allowlist_factor: float = field(default=10.0, metadata={"min": 1, "max": 10_000})

    def __post_init__(self) -> None:
        if self.reject_after < self.quarantine_after:
            raise InvalidField(
                ("reject_after",),
                f"an integer >= quarantine_after ({self.quarantine_after})",
                self.reject_after,
            )
        for index, entry in enumerate(self.allowlist):
            text = entry.strip()
            if not text or "@" not in text or any(c.isspace() for c in text):
                raise InvalidField(
                    ("allowlist", index),
                    "an address, @domain or a pattern like *@example.com",
                    entry,
                )

    def allowlisted(self, sender: str) -> bool:
        """True if `sender` (normalised) is on the allowlist."""
        for entry in self.allowlist:
            entry = entry.strip().lower()
            if entry.startswith("@"):
                if sender.rpartition("@")[2] == entry[1:]:
                    return True
            elif fnmatch.fnmatchcase(sender, entry):  # an exact address matches itself
                return True
        return False

    def limits(self, sender: str) -> tuple[int, int]:
        """(quarantine_after, reject_after) for `sender`, allowlist applied."""
        if self.allowlisted(sender):
            factor = self.allowlist_factor
            return int(self.quarantine_after * factor), int(self.reject_after * factor)
        return self.quarantine_after, self.reject_after


# ---- pure helpers ------------------------------------------------------------


def key_part(text: str) -> str:
    """`text` as one part of a state key: itself if short and plain, else a hash."""
    if len(text) <= MAX_KEY_PART and _SAFE_PART.match(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return "h:" + digest[:32]


def rate_key(kind: KeyKind, sender: str, other: str = "") -> str:
    """The state key: ``rate:s+r:<sender>|<rcpt>`` and the like."""
    key = _PREFIX[kind] + key_part(normalise_address(sender))
    if kind == "sender+recipient":
        key += "|" + key_part(normalise_address(other))
    elif kind == "sender+thread":
        key += "|" + key_part(other)  # Message-IDs are compared as written
    return key


def normalise_subject(subject: str) -> str:
    """The Subject a whole thread shares: no Re:/Fwd:/AW:/WG:/SV:/Antw:, no [tags]."""
    text = _SPACE.sub(" ", _decoded(subject))
    # The prefixes are passed over and the rest cut once: cutting them off one
    # at a time copied the rest for each (quadratic: a 1 MB "Re: Re: ..." 3.6 s).
    start = 0
    while (prefix := _REPLY_PREFIX.match(text, start)) is not None:
        start = prefix.end()  # never empty: each prefix has a ":" or "[...]"
    text = _TAG.sub(" ", text[start:])
    return _SPACE.sub(" ", text).strip().casefold()


def thread_root(message: Message) -> str:
    """The thread's root: ``mid:<first References id>``, ``mid:<In-Reply-To>``, or ``subj:...``."""
    for name in ("References", "In-Reply-To"):
        for value in message.header_values(name):
            found = _MSG_ID.search(value)
            if found:
                return "mid:" + found.group(0)
    return "subj:" + normalise_subject(message.header("Subject") or "")


def tier(count: int, limits: tuple[int, int]) -> str | None:
    """The finding for the `count`-th message in the window, or None (pass)."""
    quarantine_after, reject_after = limits
    if count > reject_after:
        return "rate.tier.reject"
    if count > quarantine_after:
        return "rate.tier.quarantine"
    return None


# ---- the checks ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateEvidence:
    """What was counted: the key, its limits, and the count (None: the store failed)."""

    key: str
    quarantine_after: int
    reject_after: int
    count: int | None = None


def _earlier(ctx: CheckContext, key: str) -> CheckResult | None:
    """This message's result for `key` if it was counted already."""
    for result in ctx.results.get(RESULT, ()):
        evidence = result.evidence
        if isinstance(evidence, RateEvidence) and evidence.key == key:
            return result
    return None


def _count(config: Config, ctx: CheckContext, sender: str, key: str) -> CheckResult:
    """Count one message for `key` and judge the tier."""
    assert ctx.state is not None
    limits = config.limits(sender)
    try:
        count = ctx.state.hit(key, ctx.clock(), config.window)
    except StateError as error:
        finding = Finding("rate.state_unavailable", str(error)[:200])
        return CheckResult(RESULT, Outcome.TEMPERROR, f"cannot count: {finding.detail}",
                           (finding,), evidence=RateEvidence(key, *limits))
    evidence = RateEvidence(key, *limits, count)
    window = f"{config.window:g} s"
    name = tier(count, limits)
    if name is None:
        return CheckResult(RESULT, Outcome.PASS,
                           f"{count} of {limits[0]} in {window}", evidence=evidence)
    limit = limits[1] if name == "rate.tier.reject" else limits[0]
    detail = f"{count} messages in {window} for {key}, more than {limit}"
    return CheckResult(RESULT, Outcome.FAIL, detail, (Finding(name, detail),), evidence=evidence)


def _run(config: Config, ctx: CheckContext, keys: list[str]) -> list[CheckResult]:
    results = []
    sender = normalise_address(ctx.envelope.mail_from)
    for key in dict.fromkeys(keys):
        earlier = _earlier(ctx, key)
        results.append(earlier if earlier is not None else _count(config, ctx, sender, key))
    return results


def _precheck(ctx: CheckContext) -> CheckResult | None:
    """A skipped result when there is nothing to count, else None."""
    if not normalise_address(ctx.envelope.mail_from):
        # Bounces are not rate-limited here; the automation check holds them.
        return CheckResult(RESULT, Outcome.SKIPPED, "null sender")
    if ctx.state is None:
        return CheckResult(RESULT, Outcome.SKIPPED, "no state store (offline)")
    return None


# Both checks report every finding (which one counts depends on `key`).
FINDINGS: Mapping[str, str] = MappingProxyType({
    "rate.tier.quarantine": "more messages in the window than rate.quarantine_after",
    "rate.tier.reject": "more messages in the window than rate.reject_after",
    "rate.state_unavailable": "the state backend failed, so the messages could not be counted",
})


class RateCheck(BaseCheck[Config]):
    """Count per sender, or per sender and recipient, at RCPT TO."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "rate.rcpt", result=RESULT, stage=Stage.RCPT, waits_on="state", findings=FINDINGS,
        writes_state=True,
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """One result per key this call counts (or counted earlier for this message)."""
        if self.config.key == "sender+thread":
            return []  # ThreadRateCheck counts at end of message
        skipped = _precheck(ctx)
        if skipped is not None:
            return [skipped]
        sender = ctx.envelope.mail_from
        if self.config.key == "sender":
            return _run(self.config, ctx, [rate_key("sender", sender)])
        rcpts = ctx.envelope.rcpt_to
        if not rcpts:
            return [CheckResult(RESULT, Outcome.SKIPPED, "no recipient yet")]
        return _run(self.config, ctx, [rate_key("sender+recipient", sender, r) for r in rcpts])


class ThreadRateCheck(BaseCheck[Config]):
    """Count per sender and thread (the seeds' "per ticket") at end of message."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "rate.thread", result=RESULT, stage=Stage.DATA, waits_on="state", findings=FINDINGS,
        writes_state=True,
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """One result for the message's thread."""
        if self.config.key != "sender+thread":
            return []  # RateCheck counted at RCPT TO
        skipped = _precheck(ctx)
        if skipped is not None:
            return [skipped]
        if ctx.message is None:
            return [CheckResult(RESULT, Outcome.SKIPPED, "no message yet")]
        key = rate_key("sender+thread", ctx.envelope.mail_from, thread_root(ctx.message))
        return _run(self.config, ctx, [key])
