"""The allow-list: senders the operator knows to be safe, as the help desk's remedy.

A no-reply or bulk sender the operator knows is safe is allow-listed so
that its mail gets through: allow-listing exempts it from the automation
quarantine rules (no-reply, bulk, machine-generated mail; never from a
reject, a DMARC forgery or a loop) and multiplies its rate limits and its
suspension band by the rate section's `allowlist_factor` (ten). Its
automated mail keeps the RFC 3834 suppression fields when delivered
(notifications stay suppressed after allow-listing).

An entry is an address (``alerts@example.com``), a whole domain
(``@example.com``) or a shell pattern (``*@*.example.org``), compared
with the sender identity (SRS, BATV, sub-address undone: `mail.identity`)
case-folded; an entry's own sub-address is ignored (``a+x@`` is ``a@``).
The identities are the envelope sender and the first From mailbox.

An identity counts only when the message is authenticated as it
(checks/sender_auth.py: an aligned SPF or DKIM pass, or DMARC for From),
so a forger cannot borrow the allow-list: mail that merely claims an
allow-listed address is judged as anyone's (``allowlist.unauthenticated``
says so, and scores nothing).

Two checks, result ``allowlist``, both silent with an empty list:
- `AllowlistEnvelopeCheck` (``allowlist.envelope``, at MAIL FROM, after
  SPF): the envelope identity listed and passing SPF → pass with
  ``allowlist.sender``; otherwise none, with evidence saying the end of
  message may still list it (DKIM, the From): the rate check refuses no
  sender at RCPT TO that could turn out allow-listed.
- `AllowlistMessageCheck` (``allowlist.message``, at end of message, after
  SPF, DKIM, DMARC): the envelope and From identities with everything
  that passed → pass with ``allowlist.sender``, or fail with
  ``allowlist.unauthenticated`` when a listed identity is only claimed;
  nothing when the earlier check listed it already or nothing is listed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from trustmilter.checks import sender_auth
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.config.errors import InvalidField
from trustmilter.mail.identity import Identities, SenderIdentity
from trustmilter.mail.text import clip
from trustmilter.results import CheckResult, Finding, Outcome, Results

RESULT = "allowlist"
LISTED = "allowlist.sender"
FINDINGS: Mapping[str, str] = MappingProxyType({
    LISTED: "an allow-listed sender, authenticated as itself: exempt from the automation "
            "quarantine rules, its rate limits multiplied",
    "allowlist.unauthenticated": "claims an allow-listed sender without authenticating as it "
                                 "(judged as anyone's mail)",
})


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # "alerts@example.com", "@example.com" (the whole domain) or a shell
    # pattern ("*@*.example.org"); compared with the sender identity.
    senders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for index, entry in enumerate(self.senders):
            text = entry.strip()
            if not text or "@" not in text or any(c.isspace() for c in text):
                raise InvalidField(
                    ("senders", index),
                    "an address, @domain or a pattern like *@example.com",
                    entry,
                )

    def lists(self, address: str, identities: Identities) -> bool:
        """Whether the identity `address` (already undressed) is on the list."""
        address = address.casefold()
        if not address:
            return False
        domain = address.rpartition("@")[2]
        for entry in self.senders:
            entry = entry.strip().casefold()
            if entry.startswith("@"):
                if domain == entry[1:]:
                    return True
            elif any(c in entry for c in "*?["):
                if fnmatch.fnmatchcase(address, entry):
                    return True
            elif identities.base(entry).casefold() == address:
                return True
        return False


@dataclass(frozen=True, slots=True)
class AllowlistEvidence:
    """What the allow-list found: the identity that listed the message
    (``envelope:alerts@example.com``), or '' with `pending` when a later
    stage may still list it."""

    identity: str = ""
    pending: bool = False


def listed(results: Results) -> bool:
    """Whether an authenticated allow-listed identity sent this message."""
    return any(f.name == LISTED for r in results.get(RESULT, ()) for f in r.findings)


def may_be_listed(results: Results) -> bool:
    """Whether the message is allow-listed or may still turn out so at end of message."""
    return listed(results) or any(
        isinstance(r.evidence, AllowlistEvidence) and r.evidence.pending
        for r in results.get(RESULT, ())
    )


def _pass(kind: str, identity: SenderIdentity) -> CheckResult:
    label = f"{kind}:{identity.address}"
    finding = Finding(LISTED, clip(label))
    return CheckResult(RESULT, Outcome.PASS, f"allow-listed, authenticated: {clip(label)}",
                       (finding,), evidence=AllowlistEvidence(label))


class AllowlistEnvelopeCheck(BaseCheck[Config]):
    """The envelope sender, when SPF already authenticates it at MAIL FROM."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "allowlist.envelope", result=RESULT, stage=Stage.MAIL, requires=("spf.mailfrom",),
        findings=FINDINGS,
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        if not self.config.senders:
            return []
        identity = ctx.identities.of(ctx.envelope.mail_from)
        if self.config.lists(identity.address, ctx.identities) and sender_auth.spf_passed(
                ctx.results).envelope(identity, ctx.domains.org_domain):
            return [_pass("envelope", identity)]
        return [CheckResult(RESULT, Outcome.NONE, "not allow-listed by the envelope sender "
                            "and SPF; end of message may still list it",
                            evidence=AllowlistEvidence(pending=True))]


class AllowlistMessageCheck(BaseCheck[Config]):
    """The envelope sender and the From, with everything that passed."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "allowlist.message", result=RESULT, stage=Stage.DATA,
        requires=(*sender_auth.AUTHENTICATING_CHECKS, "allowlist.envelope"),
        findings=FINDINGS,
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        if not self.config.senders or listed(ctx.results) or ctx.message is None:
            return []
        claimed: list[tuple[str, SenderIdentity, bool]] = []
        passed = sender_auth.passed(ctx.results)
        org_domain = ctx.domains.org_domain
        if ctx.envelope.mail_from:
            envelope = ctx.identities.of(ctx.envelope.mail_from)
            claimed.append(("envelope", envelope, passed.envelope(envelope, org_domain)))
        mailboxes = ctx.message.from_mailboxes
        if mailboxes:
            author = ctx.identities.of(mailboxes[0].address)
            claimed.append(("from", author, passed.author(author, org_domain)))
        unauthenticated: list[str] = []
        for kind, identity, authenticated in claimed:
            if not self.config.lists(identity.address, ctx.identities):
                continue
            if authenticated:
                return [_pass(kind, identity)]
            unauthenticated.append(f"{kind}:{identity.address}")
        if not unauthenticated:
            return []
        detail = clip(", ".join(unauthenticated))
        return [CheckResult(RESULT, Outcome.FAIL, f"claims an allow-listed sender: {detail}",
                            (Finding("allowlist.unauthenticated", detail),),
                            evidence=AllowlistEvidence())]
