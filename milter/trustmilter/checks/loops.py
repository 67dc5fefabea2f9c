"""Mail loops: our own support addresses, hop counts, and our loop marker.

SEED-RULES §5 (mail-loops.de.txt): loops happen when two automatic systems
answer each other, and "a support address may never also be a user
address" — a help desk that accepted mail from its own support address (or
from another of its support addresses) would answer itself for ever. Three
checks, all reporting results named ``loops``:
- `LoopSenderCheck` (``loops.envelope``, at MAIL): MAIL FROM is one of
  `support_addresses` -> ``loop.support_sender``; decided at MAIL so the
  policy can refuse it at RCPT TO, before any body is sent.
- `LoopRecipientCheck` (``loops.rcpt``, at RCPT): a recipient is a support
  address and MAIL FROM is another one -> ``loop.support_to_support``.
  The milter calls it once per recipient with only that recipient in
  ``rcpt_to``; offline it sees them all, and reports each.
- `LoopMessageCheck` (``loops.message``, at end of message): the From
  header names a support address (``loop.support_sender``; with a support
  recipient also ``loop.support_to_support``); more Received fields than
  `max_received` (``loop.too_many_received``, RFC 5321 §6.3); our own loop
  marker header already present with our id (``loop.marker_seen``).

Outcome fail with any finding, else pass; skipped when the check has
nothing to compare (no support addresses configured, no message yet).
Addresses are compared case-insensitively: RFC 5321 §2.4 lets a local
part be case-sensitive, but no real mailbox relies on it and a loop
through "Support@" must not slip past "support@". No DNS, no state; the
parsing helpers are pure. Nothing here raises for odd input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage, skipped
from trustmilter.config.errors import InvalidField
from trustmilter.mail.addresses import normalise_address
from trustmilter.mail.text import clip
from trustmilter.model import Message, is_field_name
from trustmilter.results import CheckResult, Finding, HeaderRequest, Outcome

RESULT = "loops"
# The marker value: an authserv-id-like token (RFC 8601 §2.2), printable, no space.
_MARKER_ID = re.compile(r"[\x21-\x7e]{1,253}\Z")


def _valid_address(address: str) -> bool:
    local, at, domain = normalise_address(address).rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in address.strip())


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # The policy's own help-desk addresses (SEED-RULES §5): mail FROM them
    # is a loop, whoever sends it. Empty: the support checks are skipped.
    support_addresses: tuple[str, ...] = ()
    # More Received fields than this is a loop (RFC 5321 §6.3).
    max_received: int = field(default=30, metadata={"min": 1, "max": 1000})
    # Our loop marker field; its value is `marker_id`.
    loop_header: str = "X-Trustmilter-Loop"
    # Our id in the marker. Empty: the authserv-id. The App fills it in at
    # start-up (policy.authserv_id, else this host's name), so the checks
    # and the evaluator only ever see a non-empty id inline; offline
    # (`trustmilter check`) it may stay empty and the marker is not looked at.
    marker_id: str = ""
    # Add the marker to delivered mail that carries automation or loop
    # signals (see HeadersConfig.auto_suppress_when), so that such mail
    # coming back through us is recognised as a loop.
    add_marker: bool = True

    def __post_init__(self) -> None:
        for index, address in enumerate(self.support_addresses):
            if not _valid_address(address):
                raise InvalidField(
                    ("support_addresses", index), "an address like support@example.com", address
                )
        if not is_field_name(self.loop_header):
            raise InvalidField(
                ("loop_header",),
                "a header field name (printable ASCII, no ':' or space)",
                self.loop_header,
            )
        if self.marker_id and _MARKER_ID.match(self.marker_id) is None:
            raise InvalidField(
                ("marker_id",), "a host name like mx.example.com, or empty", self.marker_id
            )

    def with_marker_id(self, authserv_id: str) -> Config:
        """This config with `marker_id` filled in from the authserv-id if it is empty.

        For App start-up: ``replace(policy.checks, loops=loops.with_marker_id(id))``.
        """
        return self if self.marker_id else replace(self, marker_id=authserv_id)

    def is_support(self, address: str) -> bool:
        """True if `address` is one of the support addresses."""
        wanted = normalise_address(address)
        return bool(wanted) and any(
            normalise_address(s) == wanted for s in self.support_addresses
        )


# ---- pure helpers ------------------------------------------------------------


def from_addresses(message: Message) -> list[str]:
    """The addresses of every From mailbox, as written (possibly none)."""
    return [mailbox.address for mailbox in message.from_mailboxes]


def received_count(message: Message) -> int:
    """How many Received fields the message carries (RFC 5321 §4.4 trace fields)."""
    return len(message.header_values("Received"))


def marker_seen(message: Message, header: str, marker_id: str) -> bool:
    """True if `header` is present with value `marker_id` (case-insensitive)."""
    wanted = marker_id.strip().lower()
    return bool(wanted) and any(
        value.strip().lower() == wanted for value in message.header_values(header)
    )


def support_pairs(config: Config, senders: list[str], rcpts: tuple[str, ...]) -> list[str]:
    """"sender -> rcpt" for each support recipient that another support address writes to."""
    pairs = []
    for sender in dict.fromkeys(normalise_address(s) for s in senders):
        if not config.is_support(sender):
            continue
        for rcpt in dict.fromkeys(normalise_address(r) for r in rcpts):
            if rcpt != sender and config.is_support(rcpt):
                pairs.append(f"{sender} -> {rcpt}")
    return pairs


def _result(findings: list[Finding], fine: str,
            headers: tuple[HeaderRequest, ...] = ()) -> CheckResult:
    if findings:
        reason = "; ".join(clip(f.detail) for f in findings)
        return CheckResult(RESULT, Outcome.FAIL, reason, tuple(findings), headers=headers)
    return CheckResult(RESULT, Outcome.PASS, fine, headers=headers)


# What each finding means; each check reports those it can see.
FINDINGS: Mapping[str, str] = MappingProxyType({
    "loop.support_sender": "MAIL FROM or From is one of our own support addresses",
    "loop.support_to_support": "a support address receives mail from another support address",
    "loop.too_many_received": "more Received headers than checks.loops.max_received",
    "loop.marker_seen": "our own loop marker header is already present: the mail came back",
})


# ---- the checks ----------------------------------------------------------------


class LoopSenderCheck(BaseCheck[Config]):
    """MAIL FROM is not one of our support addresses."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.envelope", result=RESULT, stage=Stage.MAIL, waits_on="dns",
        findings={n: FINDINGS[n] for n in ("loop.support_sender",)},
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Compare the envelope sender with the support addresses."""
        if not self.config.support_addresses:
            return [skipped(RESULT, "no support addresses configured")]
        sender = normalise_address(ctx.envelope.mail_from)
        if not sender:
            return [skipped(RESULT, "null sender")]
        findings = []
        if self.config.is_support(sender):
            # SEED-RULES §5: a support address is never a user address.
            detail = f"MAIL FROM {sender} is a support address"
            findings.append(Finding("loop.support_sender", detail))
        return [_result(findings, "the sender is not a support address")]


class LoopRecipientCheck(BaseCheck[Config]):
    """No support address writes to another support address."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.rcpt", result=RESULT, stage=Stage.RCPT, waits_on="dns",
        findings={n: FINDINGS[n] for n in ("loop.support_to_support",)},
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Pair the envelope sender with the recipient(s) of this call."""
        if not self.config.support_addresses:
            return [skipped(RESULT, "no support addresses configured")]
        if not ctx.envelope.rcpt_to:
            return [skipped(RESULT, "no recipient yet")]
        pairs = support_pairs(self.config, [ctx.envelope.mail_from], ctx.envelope.rcpt_to)
        findings = [Finding("loop.support_to_support", f"support to support: {p}") for p in pairs]
        return [_result(findings, "no support-to-support mail")]


class LoopMessageCheck(BaseCheck[Config]):
    """From, hop count and our marker: has this message looped?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.message", result=RESULT, stage=Stage.DATA, waits_on="dns", findings=FINDINGS,
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Report every loop sign in the header."""
        config = self.config
        message = ctx.message
        if message is None:
            return [skipped(RESULT, "no message yet")]
        findings: list[Finding] = []
        senders = from_addresses(message)
        support_from = [a for a in dict.fromkeys(map(normalise_address, senders))
                        if config.is_support(a)]
        if support_from:
            findings.append(Finding(
                "loop.support_sender", f"From {', '.join(support_from)} is a support address"
            ))
            pairs = support_pairs(config, support_from, ctx.envelope.rcpt_to)
            findings += [Finding("loop.support_to_support", f"support to support: {p}")
                         for p in pairs]
        hops = received_count(message)
        if hops > config.max_received:
            # RFC 5321 §6.3: counting Received fields is the classic loop detector.
            findings.append(Finding(
                "loop.too_many_received",
                f"{hops} Received fields, more than {config.max_received}",
            ))
        if marker_seen(message, config.loop_header, config.marker_id):
            findings.append(Finding(
                "loop.marker_seen", f"{config.loop_header}: {clip(config.marker_id)} is ours"
            ))
        # Marked when the policy suppresses it as automated or looping, so that
        # this mail coming back through us is a loop (loop.marker_seen).
        marker = (
            (HeaderRequest(config.loop_header, config.marker_id, "suppressed"),)
            if config.add_marker and config.marker_id else ()
        )
        return [_result(findings, f"no loop signs ({hops} Received fields)", marker)]
