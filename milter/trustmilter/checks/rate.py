"""Rate tiers: how many messages one sender sent about one ticket in the last window.

The help desk's last resort against loops is a limit on "the number of
ticket updates a user can make per hour in one ticket": the first 20
messages pass, the next 20 are suspended (quarantined), everything beyond
40 in that hour is rejected outright. It works only when the looping
system uses the same address each time; here a sender is its identity
(`mail.identity`: SRS, BATV, VERP and sub-addresses undone), so a robot
whose return path changes with every message is still one sender.

Keys (`keys`, a list; every key is counted and the strictest tier applies).
A key joins components with "+", at least one of them an identity:
- ``envelope``: the envelope sender's identity;
- ``from``: the identity of the first From mailbox;
- ``ticket``: the help desk's own ticket reference in the Subject, where
  `ticket_pattern` gives it (``\\[#(\\d+)\\]``: its first group, else the whole
  match), else the thread root (`thread_root`: the first Message-ID in
  References, else In-Reply-To, else the Subject without reply prefixes and
  [tags]);
- ``recipient``: each envelope recipient apart.
The default, ``[envelope+ticket, from+ticket]``, is per user and per ticket:
a user's two tickets are counted apart, and a robot is caught by whichever
of its addresses stays the same.

Counting that a forger cannot spend. A key is counted in the authenticated
namespace only when the message is authenticated as every identity in it
(checks/sender_auth.py: an aligned SPF or DKIM pass; for From also DMARC);
claims that are not authenticated are counted apart (``unauth:`` keys)
against their own, stricter tiers (`unauthenticated_quarantine_after`,
`unauthenticated_reject_after`). So 41 forged messages in alice's name use
up the allowance of alice's forgers, never hers, and her authenticated
mail still passes; a looping robot, which authenticates as itself every
time, meets the 20/20/40 exactly.

What is counted when. A message's keys are counted once, at end of
message, when SPF, DKIM and DMARC are known (`MessageRateCheck`):
`state.hit` is atomic, so N parallel sessions get exactly 1..N, and a key
counted once is never counted again for other recipients. At RCPT TO only
SPF is known; `RecipientRateCheck` then only reads (`state.count`) the keys
that need no message (``envelope``, ``envelope+recipient``) of a sender
whose MAIL FROM passed SPF, and refuses such a sender early when it is
already beyond its reject tier (as allow-listed, when the allow-list may
still list it at end of message); that refusal is counted, so a system
that keeps trying stays refused until it pauses. Everything else is
decided at end of message: mail that fails SPF may still be authenticated
by DKIM (forwarded mail), and refusing it early on a count forgers can
raise would refuse the real sender's forwarded mail.

Allow-listed senders (checks/allowlist.py, authenticated as themselves)
get the authenticated limits multiplied by `allowlist_factor`.

Result ``rate``, one per message: pass, or fail with the strictest
``rate.tier.quarantine`` / ``rate.tier.reject``; skipped for the null
sender (bounces are the automation check's business) and offline (no
state store); temperror with ``rate.state_unavailable`` when the store
fails. `RateEvidence` carries every key counted and the one that decided
(`deciding`: the verdict line's ``rate_key=`` and ``rate_count=``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from trustmilter.checks import allowlist, sender_auth
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.config.errors import InvalidField
from trustmilter.mail.addresses import normalise_address
from trustmilter.mail.encoded_words import decode_words as _decoded
from trustmilter.mail.identity import SenderIdentity
from trustmilter.model import Message
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.state.base import StateError

RESULT = "rate"
IDENTITY_COMPONENTS = ("envelope", "from")
COMPONENTS = (*IDENTITY_COMPONENTS, "ticket", "recipient")
# Components known before the message: such keys can be read at RCPT TO.
_RCPT_COMPONENTS = frozenset({"envelope", "recipient"})
DEFAULT_KEYS = ("envelope+ticket", "from+ticket")
STATE_PREFIX = "rate:"
UNAUTHENTICATED = "unauth:"
# Key parts longer than this, or with characters outside printable ASCII
# (or our '|' separator), are replaced by a hash: keys stay short and safe
# for any backend, whatever a sender writes.
MAX_KEY_PART = 200
_SAFE_PART = re.compile(r"[\x21-\x7b\x7d\x7e]*\Z")  # printable ASCII without space and '|'
# The ticket pattern is searched in this much of the decoded Subject: a help
# desk puts its reference near the start, and the operator's pattern then
# never meets a megabyte of a sender's text.
MAX_TICKET_SEARCH = 998
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


def parse_key(text: str) -> tuple[str, ...]:
    """The components of one `keys` entry ("from+ticket"); ValueError if it is not one."""
    parts = tuple(part.strip() for part in text.split("+"))
    unknown = [p for p in parts if p not in COMPONENTS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"{text!r}")
    if not any(p in IDENTITY_COMPONENTS for p in parts):
        raise ValueError(f"{text!r} names no sender (envelope or from)")
    return tuple(sorted(parts, key=COMPONENTS.index))


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # What is counted: each entry a key, components joined with "+" (envelope,
    # from, ticket, recipient); the strictest tier of all keys applies.
    keys: tuple[str, ...] = DEFAULT_KEYS
    # The help desk's ticket reference in the Subject (a regular expression;
    # its first group, else the whole match); "" or no match: the thread root.
    ticket_pattern: str = ""
    # Seconds of the rolling window (the seed's hour).
    window: float = field(default=3600.0, metadata={"min": 1, "max": 7 * 86400})
    # Authenticated messages in the window that pass; above this, the quarantine tier.
    quarantine_after: int = field(default=20, metadata={"min": 0, "max": 10_000_000})
    # Above this many, the reject tier.
    reject_after: int = field(default=40, metadata={"min": 0, "max": 10_000_000})
    # The same for claims of an identity that the message does not authenticate.
    unauthenticated_quarantine_after: int = field(
        default=10, metadata={"min": 0, "max": 10_000_000})
    unauthenticated_reject_after: int = field(default=20, metadata={"min": 0, "max": 10_000_000})
    # Allow-listed senders (checks.allowlist) get the authenticated limits times this.
    allowlist_factor: float = field(default=10.0, metadata={"min": 1, "max": 10_000})

    # Keys of older policies, and what to write instead.
    RETIRED_KEYS: ClassVar[Mapping[str, str]] = MappingProxyType({
        "key": "use `keys`, a list: sender -> [envelope], sender+recipient -> "
               "[envelope+recipient], sender+thread -> [envelope+ticket] (the default is "
               "[envelope+ticket, from+ticket]: per user and per ticket)",
        "allowlist": "the allow-list is its own section now: checks.allowlist.senders "
                     "(allowlist_factor stays here)",
    })

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidField(("keys",), "at least one key", [])
        for index, key in enumerate(self.keys):
            try:
                parse_key(key)
            except ValueError as error:
                raise InvalidField(
                    ("keys", index),
                    f"components joined with '+' out of {', '.join(COMPONENTS)}, each once, "
                    f"at least one of envelope and from ({error})", key) from None
        try:
            re.compile(self.ticket_pattern)
        except re.error as error:
            raise InvalidField(("ticket_pattern",), f"a regular expression ({error})",
                               self.ticket_pattern) from None
        for low, high in (("quarantine_after", "reject_after"),
                          ("unauthenticated_quarantine_after", "unauthenticated_reject_after")):
            if getattr(self, high) < getattr(self, low):
                raise InvalidField((high,), f"an integer >= {low} ({getattr(self, low)})",
                                   getattr(self, high))

    def parsed_keys(self) -> tuple[tuple[str, ...], ...]:
        """Each key's components, in the order of `COMPONENTS`, once each."""
        return tuple(dict.fromkeys(parse_key(key) for key in self.keys))

    def ticket_regex(self) -> re.Pattern[str] | None:
        return re.compile(self.ticket_pattern) if self.ticket_pattern else None

    def limits(self, authenticated: bool, allowlisted: bool = False) -> tuple[int, int]:
        """(quarantine_after, reject_after) for a key: the unauthenticated tiers for
        claims, the allow-listed ones for an allow-listed sender."""
        if not authenticated:
            return self.unauthenticated_quarantine_after, self.unauthenticated_reject_after
        if allowlisted:
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


def ticket_of(message: Message, pattern: re.Pattern[str] | None) -> str:
    """The ticket a message belongs to: ``ref:<the help desk's reference>`` where
    `pattern` finds one in the Subject, else the thread root."""
    if pattern is not None:
        subject = _decoded(message.header("Subject") or "")[:MAX_TICKET_SEARCH]
        found = pattern.search(subject)
        if found is not None:
            reference = found.group(1) if pattern.groups and found.group(1) else found.group(0)
            if reference.strip():
                return "ref:" + _SPACE.sub(" ", reference.strip()).casefold()
    return thread_root(message)


@dataclass(frozen=True, slots=True)
class Parts:
    """What a message's keys are made of; None where it is not known (yet)."""

    envelope: SenderIdentity | None = None
    author: SenderIdentity | None = None
    ticket: str | None = None
    recipients: tuple[str, ...] = ()
    envelope_authenticated: bool = False
    author_authenticated: bool = False


@dataclass(frozen=True, slots=True)
class CountedKey:
    """One key of one message: its label (the state key without ``rate:``)."""

    label: str
    authenticated: bool

    @property
    def state_key(self) -> str:
        return STATE_PREFIX + self.label


def message_keys(keys: Iterable[tuple[str, ...]], parts: Parts) -> list[CountedKey]:
    """The keys of a message, each once: ``from:robot@example.com|ticket:ref:4711``,
    with ``unauth:`` before it unless the message authenticates every identity in it.
    A key with a component the message does not have (no From) is left out."""
    found: dict[str, CountedKey] = {}
    for components in keys:
        variants: list[tuple[list[str], bool]] = [([], True)]
        for component in components:
            values, authenticated = _values(component, parts)
            if not values:
                variants = []
                break
            variants = [([*labels, f"{component}:{key_part(value)}"], ok and authenticated)
                        for labels, ok in variants for value in values]
        for labels, authenticated in variants:
            label = ("" if authenticated else UNAUTHENTICATED) + "|".join(labels)
            found.setdefault(label, CountedKey(label, authenticated))
    return list(found.values())


def _values(component: str, parts: Parts) -> tuple[list[str], bool]:
    """The values of one component and whether they are authenticated."""
    if component == "envelope":
        identity = parts.envelope
        return ([identity.address] if identity and identity.address else [],
                parts.envelope_authenticated)
    if component == "from":
        identity = parts.author
        return ([identity.address] if identity and identity.address else [],
                parts.author_authenticated)
    if component == "ticket":
        return ([parts.ticket] if parts.ticket is not None else []), True
    return list(dict.fromkeys(normalise_address(r) for r in parts.recipients if r)), True


def tier(count: int, limits: tuple[int, int]) -> str | None:
    """The finding for the `count`-th message in the window, or None (pass)."""
    quarantine_after, reject_after = limits
    if count > reject_after:
        return "rate.tier.reject"
    if count > quarantine_after:
        return "rate.tier.quarantine"
    return None


_SEVERITY = {None: 0, "rate.tier.quarantine": 1, "rate.tier.reject": 2}


@dataclass(frozen=True, slots=True)
class Count:
    """One key counted: its label, the count and the limits it was judged by."""

    key: str
    count: int
    quarantine_after: int
    reject_after: int

    @property
    def tier(self) -> str | None:
        return tier(self.count, (self.quarantine_after, self.reject_after))


def strictest(counts: Iterable[Count]) -> Count | None:
    """The count whose tier is the most severe (the first of equals), or None if none."""
    best: Count | None = None
    for count in counts:
        if best is None or _SEVERITY[count.tier] > _SEVERITY[best.tier]:
            best = count
    return best


@dataclass(frozen=True, slots=True)
class RateEvidence:
    """Every key counted for the message, and the one whose tier decided."""

    counts: tuple[Count, ...]

    @property
    def deciding(self) -> Count | None:
        return strictest(self.counts)


def deciding(results: Results) -> Count | None:
    """The key and count behind the message's rate tier, when a tier fired (for
    the verdict line: ``rate_key=`` and ``rate_count=``); None otherwise."""
    decided = [
        count for r in results.get(RESULT, ())
        if isinstance(r.evidence, RateEvidence) and (count := r.evidence.deciding) is not None
    ]
    found = strictest(decided)
    return found if found is not None and found.tier is not None else None


# ---- the checks ----------------------------------------------------------------


def _judged(config: Config, counts: list[Count]) -> CheckResult:
    """One result for the message from its counts: the strictest tier."""
    evidence = RateEvidence(tuple(counts))
    decided = evidence.deciding
    window = f"{config.window:g} s"
    if decided is None:
        return CheckResult(RESULT, Outcome.SKIPPED, "no key applies", evidence=evidence)
    name = decided.tier
    if name is None:
        counted = "; ".join(f"{c.key}: {c.count} of {c.quarantine_after}" for c in counts)
        return CheckResult(RESULT, Outcome.PASS, f"in {window}: {counted}", evidence=evidence)
    limit = decided.reject_after if name == "rate.tier.reject" else decided.quarantine_after
    detail = f"{decided.count} messages in {window} for {decided.key}, more than {limit}"
    return CheckResult(RESULT, Outcome.FAIL, detail, (Finding(name, detail),), evidence=evidence)


def _unavailable(error: StateError) -> CheckResult:
    finding = Finding("rate.state_unavailable", str(error)[:200])
    return CheckResult(RESULT, Outcome.TEMPERROR, f"cannot count: {finding.detail}", (finding,))


def _earlier(results: Results) -> dict[str, Count]:
    """Keys of this message counted already (at RCPT TO), by label."""
    return {
        count.key: count for r in results.get(RESULT, ())
        if isinstance(r.evidence, RateEvidence) for count in r.evidence.counts
    }


# Every check of the section reports every finding (which one depends on the keys).
FINDINGS: Mapping[str, str] = MappingProxyType({
    "rate.tier.quarantine": "more messages in the window than rate.quarantine_after "
                            "(unauthenticated_quarantine_after for unauthenticated claims)",
    "rate.tier.reject": "more messages in the window than rate.reject_after "
                        "(unauthenticated_reject_after for unauthenticated claims)",
    "rate.state_unavailable": "the state backend failed, so the messages could not be counted",
})


class RecipientRateCheck(BaseCheck[Config]):
    """At RCPT TO: refuse an SPF-authenticated sender already beyond its reject tier."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "rate.rcpt", result=RESULT, stage=Stage.RCPT, requires=("spf.mailfrom",
                                                                "allowlist.envelope"),
        waits_on="state", findings=FINDINGS, writes_state=True,
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Nothing, unless this recipient is refused (or a race made it count)."""
        early = [k for k in self.config.parsed_keys() if _RCPT_COMPONENTS.issuperset(k)]
        store = ctx.state
        if not early or store is None or not ctx.envelope.mail_from:
            return []  # the end of message reports the skip
        envelope = ctx.identities.of(ctx.envelope.mail_from)
        if not sender_auth.spf_passed(ctx.results).envelope(envelope, ctx.domains.org_domain):
            return []  # DKIM may still authenticate it: decided at end of message
        parts = Parts(envelope=envelope, recipients=ctx.envelope.rcpt_to,
                      envelope_authenticated=True)
        # As allow-listed while the end of message may still list it: a refusal
        # here must be one the end of message would give too.
        limits = self.config.limits(True, allowlist.may_be_listed(ctx.results))
        window, now = self.config.window, ctx.clock()
        counts: list[Count] = []
        try:
            for key in message_keys(early, parts):
                if store.count(key.state_key, now, window) < limits[1]:
                    continue
                counts.append(Count(key.label, store.hit(key.state_key, now, window), *limits))
        except StateError as error:
            return [_unavailable(error)]
        return [_judged(self.config, counts)] if counts else []


class MessageRateCheck(BaseCheck[Config]):
    """At end of message: count every key, authenticated or apart, and judge."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "rate.message", result=RESULT, stage=Stage.DATA,
        requires=(*sender_auth.AUTHENTICATING_CHECKS, "allowlist.message"),
        waits_on="state", findings=FINDINGS, writes_state=True,
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        # A message's keys are counted as one step in this process. Two keys
        # (envelope+ticket, from+ticket) counting the same messages must see
        # them in the same order: counted key by key, two parallel messages
        # could each get the 5th count on a different key, and both be
        # refused where one was to be held (the strictest tier applies).
        self._counting = threading.Lock()

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """One result for the message."""
        store, message = ctx.state, ctx.message
        if not ctx.envelope.mail_from:
            # Bounces are not rate-limited here; the automation check holds them.
            return [CheckResult(RESULT, Outcome.SKIPPED, "null sender")]
        if store is None:
            return [CheckResult(RESULT, Outcome.SKIPPED, "no state store (offline)")]
        if message is None:
            return [CheckResult(RESULT, Outcome.SKIPPED, "no message yet")]
        passed = sender_auth.passed(ctx.results)
        org_domain = ctx.domains.org_domain
        envelope = ctx.identities.of(ctx.envelope.mail_from)
        mailboxes = message.from_mailboxes
        author = ctx.identities.of(mailboxes[0].address) if mailboxes else None
        keys = self.config.parsed_keys()
        parts = Parts(
            envelope=envelope,
            author=author,
            ticket=(ticket_of(message, self.config.ticket_regex())
                    if any("ticket" in k for k in keys) else None),
            recipients=ctx.envelope.rcpt_to,
            envelope_authenticated=passed.envelope(envelope, org_domain),
            author_authenticated=author is not None and passed.author(author, org_domain),
        )
        listed = allowlist.listed(ctx.results)
        earlier = _earlier(ctx.results)
        window, now = self.config.window, ctx.clock()
        counts: list[Count] = []
        try:
            with self._counting:
                for key in message_keys(keys, parts):
                    limits = self.config.limits(key.authenticated, listed)
                    seen = earlier.get(key.label)
                    count = (seen.count if seen is not None
                             else store.hit(key.state_key, now, window))
                    counts.append(Count(key.label, count, *limits))
        except StateError as error:
            return [_unavailable(error)]
        return [_judged(self.config, counts)]
