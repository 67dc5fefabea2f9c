"""Mail loops: our own support addresses, both ways, hop counts and our loop marker.

The help-desk vendor's article on mail loops: loops happen when two
automatic systems answer each other, and "a support address may never
also be a user address", so that notifications are never sent *to* a
support address: a help desk that gets mail from its own support address,
or its own notification, answers itself for ever. A support address is compared by
its base (`Identities.base`: without a sub-address, so
``support+id4711@example.org`` is ``support@example.org``; configured
entries too) and case-insensitively: RFC 5321 §2.4 lets a local part be
case-sensitive, but no real mailbox relies on it, and a loop through
"Support@" must not slip past "support@".

Inbound mail (from strangers):
- `LoopSenderCheck` (``loops.envelope``, at MAIL) and `LoopMessageCheck`
  (``loops.message``, end of message): MAIL FROM or From claims one of our
  support addresses -> ``loop.support_sender``. Not a loop by itself: our
  help desk may send its notifications to colleagues through an outside
  service. Chosen with the automation and loop signals: with any
  automation finding (``auto.*``: machine-generated, bulk, no-reply, a
  bounce) it is held as a suspected loop (rule loop-support-sender: our
  own notification coming back round, or another machine speaking as our
  help desk; a release confirms it, as for any automated mail); with our
  loop marker, too many hops or a support recipient it is refused by those
  rules; a plain human message is judged as any other (a forgery of our
  address fails SPF/DMARC, which the DMARC rules handle).
- `LoopMessageCheck` also counts Received fields (``loop.too_many_received``,
  RFC 5321 §6.3) and looks for our loop marker (``loop.marker_seen``).

Both ways (inbound, and outbound: our own clients' mail):
- `LoopRecipientCheck` (``loops.rcpt``, at RCPT): MAIL FROM is one of our
  support addresses and the recipient is one too (itself included) ->
  ``loop.support_to_support``, whatever the client: trusted, SASL or a
  stranger. The milter calls it once per recipient with only that one in
  ``rcpt_to``; offline it sees them all and reports each.

Outbound (our own clients' mail, `milter.outbound_checks`):
- `LoopNotificationCheck` (``loops.notification``, at RCPT): a
  notification by its envelope to one of our support addresses
  (``loop.notification_to_support``) or to an address listed in
  `external_helpdesks` (``loop.notification_to_helpdesk``), refused at
  RCPT TO before the message is sent.
- `LoopOutboundMessageCheck` (``loops.outbound``, end of message): the
  same by the header alone, and a From that is one of our support
  addresses writing to one (``loop.support_to_support``).

What counts as a notification (our help desk's and our machines'
automatic mail; `envelope_notification`, `header_notification`): by the envelope, the null sender
(RFC 5321 §4.5.5, RFC 3834 §3.1.5: bounces and automatic answers), MAIL
FROM one of our support addresses (the help desk itself) or a no-reply
style sender (noreply, do-not-reply, mailer-daemon); by the header, the
same of From, Auto-Submitted other than "no" (RFC 3834 §5), Precedence
bulk, junk, list or auto_reply, X-Autoreply or X-Autorespond, our own
loop marker, or a field named in `notification_headers` (the markers help
desks put on what they send: X-Loop, RT-Loop-Prevention...). A colleague
writing to support@ by hand has none of these and is never refused.

Outcome fail with any finding, else pass; skipped when the check has
nothing to compare (no support addresses or help desks configured, no
message yet). No DNS, no state; the parsing helpers are pure. Nothing here
raises for odd input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import ClassVar

from trustmilter.checks.automation import BUILT_IN_NOREPLY, auto_submitted, is_noreply
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage, skipped
from trustmilter.config.errors import InvalidField
from trustmilter.mail.addresses import normalise_address
from trustmilter.mail.identity import PLAIN_IDENTITIES, Identities
from trustmilter.mail.text import clip
from trustmilter.model import Envelope, Message, is_field_name
from trustmilter.results import CheckResult, Finding, HeaderRequest, Outcome

RESULT = "loops"
# The marker value: an authserv-id-like token (RFC 8601 §2.2), printable, no space.
_MARKER_ID = re.compile(r"[\x21-\x7e]{1,253}\Z")
# An external help desk: an address, or "@domain" for every address there.
_DOMAIN_ENTRY = re.compile(r"@[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\Z", re.IGNORECASE)
# Precedence values automatic senders write (RFC 3834 §5 names bulk, junk
# and list; autoresponders write auto_reply).
AUTOMATIC_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
# Header fields autoresponders set on what they send.
AUTOREPLY_FIELDS = ("X-Autoreply", "X-Autorespond")
# The loop markers help desks put on their own mail (OTRS/Znuny and Zammad
# X-Loop, Request Tracker's RT-Loop-Prevention); a person never writes them.
DEFAULT_NOTIFICATION_HEADERS = ("X-Loop", "X-OTRS-Loop", "RT-Loop-Prevention",
                                "X-RT-Loop-Prevention")
_NOREPLY = (BUILT_IN_NOREPLY,)
_COMMENT = re.compile(r"\([^()]*\)")


def _valid_address(address: str) -> bool:
    local, at, domain = normalise_address(address).rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in address.strip())


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # The policy's own help-desk addresses: never a user's address; mail to
    # them from a support address, or a notification, is a loop.
    # Empty: the support checks are skipped.
    support_addresses: tuple[str, ...] = ()
    # Other systems' help-desk addresses ("@domain": all of a domain): our
    # notifications to them are refused before they leave, as to our own.
    external_helpdesks: tuple[str, ...] = ()
    # Header fields whose presence marks our help desk's notifications.
    notification_headers: tuple[str, ...] = DEFAULT_NOTIFICATION_HEADERS
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
        for index, entry in enumerate(self.external_helpdesks):
            if not (_valid_address(entry) or _DOMAIN_ENTRY.match(entry.strip())):
                raise InvalidField(("external_helpdesks", index),
                                   "an address like help@example.net, or @example.net", entry)
        for index, name in enumerate(self.notification_headers):
            if not is_field_name(name):
                raise InvalidField(("notification_headers", index),
                                   "a header field name (printable ASCII, no ':' or space)", name)
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

    def is_support(self, address: str, identities: Identities = PLAIN_IDENTITIES) -> bool:
        """True if `address` is one of the support addresses: bases compared, so a
        sub-address of one is that one (``support+4711@`` is ``support@``)."""
        wanted = identities.base(address)
        return "@" in wanted and any(
            identities.base(entry) == wanted for entry in self.support_addresses
        )

    def is_external_helpdesk(self, address: str, identities: Identities = PLAIN_IDENTITIES) -> bool:
        """True if `address` is an external help desk's: a listed address (bases
        compared) or any address of a listed "@domain"."""
        wanted = identities.base(address)
        domain = wanted.rpartition("@")[2]
        if "@" not in wanted or not domain:
            return False
        for entry in (e.strip().lower() for e in self.external_helpdesks):
            if entry.startswith("@"):
                if entry[1:].removesuffix(".") == domain.removesuffix("."):
                    return True
            elif identities.base(entry) == wanted:
                return True
        return False


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


def support_addresses_among(config: Config, addresses: Iterable[str],
                            identities: Identities = PLAIN_IDENTITIES) -> list[str]:
    """The support addresses among `addresses`, the first seen of each: at most one
    per configured address however many sub-addresses a sender writes, so that
    pairing them stays small."""
    found: dict[str, str] = {}
    for address in map(normalise_address, addresses):
        if config.is_support(address, identities):
            found.setdefault(identities.base(address), address)
    return list(found.values())


def support_pairs(config: Config, senders: Iterable[str], rcpts: Iterable[str],
                  identities: Identities = PLAIN_IDENTITIES) -> list[str]:
    """"sender -> rcpt" for each support recipient a support address writes to
    (itself included: support@ to support+4711@ is the same help desk)."""
    support_senders = support_addresses_among(config, senders, identities)
    if not support_senders:
        return []
    support_rcpts = support_addresses_among(config, rcpts, identities)
    return [f"{sender} -> {rcpt}" for sender in support_senders for rcpt in support_rcpts]


def _keyword(value: str) -> str:
    """The first keyword of a structured field value: comments dropped, lower case."""
    return _COMMENT.sub(" ", value).split(";", 1)[0].strip().lower()


def envelope_notification(config: Config, envelope: Envelope,
                          identities: Identities = PLAIN_IDENTITIES) -> str:
    """Why the envelope shows the message is a notification ('' if it does not):
    the null sender, a support address or a no-reply style sender."""
    sender = envelope.mail_from
    if envelope.null_sender:
        # RFC 5321 §4.5.5, RFC 3834 §3.1.5: bounces and automatic answers.
        return "the null sender"
    if config.is_support(sender, identities):
        return f"MAIL FROM {clip(normalise_address(sender))} is a support address"
    if is_noreply(sender, _NOREPLY):
        return f"MAIL FROM {clip(normalise_address(sender))} is no-reply style"
    return ""


def header_notification(config: Config, message: Message,
                        identities: Identities = PLAIN_IDENTITIES) -> list[str]:
    """Why the header shows the message is a notification (empty: it does not)."""
    reasons: list[str] = []
    for address in map(normalise_address, from_addresses(message)):
        # The first automatic author is reason enough (RFC 5322 wants one From).
        if config.is_support(address, identities):
            reasons.append(f"From {clip(address)} is a support address")
            break
        if is_noreply(address, _NOREPLY):
            reasons.append(f"From {clip(address)} is no-reply style")
            break
    markers = {name.lower() for name in config.notification_headers}
    for name, value in message.headers:
        lower = name.lower()
        if lower == "auto-submitted" and auto_submitted(value):
            # RFC 3834 §5: anything but "no" was sent automatically.
            reasons.append(f"Auto-Submitted: {clip(_keyword(value) or value, 40)}")
        elif lower == "precedence" and _keyword(value) in AUTOMATIC_PRECEDENCE:
            reasons.append(f"Precedence: {_keyword(value)}")
        elif lower in (f.lower() for f in AUTOREPLY_FIELDS) or lower in markers:
            reasons.append(f"{clip(name, 40)} present")
    if marker_seen(message, config.loop_header, config.marker_id):
        reasons.append(f"our loop marker {config.loop_header}")
    return list(dict.fromkeys(reasons))


def notification_findings(config: Config, why: str, rcpts: Iterable[str],
                          identities: Identities = PLAIN_IDENTITIES) -> list[Finding]:
    """A finding for each recipient a notification (`why`) may not go to: one of our
    support addresses, or an external help desk."""
    findings: list[Finding] = []
    why = clip(why)  # once: a message may have many recipients
    for rcpt in dict.fromkeys(map(normalise_address, rcpts)):
        if config.is_support(rcpt, identities):
            name = "loop.notification_to_support"
        elif config.is_external_helpdesk(rcpt, identities):
            name = "loop.notification_to_helpdesk"
        else:
            continue
        findings.append(Finding(name, f"notification to {clip(rcpt)}: {why}"))
    return findings


def _result(findings: list[Finding], fine: str,
            headers: tuple[HeaderRequest, ...] = ()) -> CheckResult:
    if findings:
        reason = "; ".join(clip(f.detail) for f in findings)
        return CheckResult(RESULT, Outcome.FAIL, reason, tuple(findings), headers=headers)
    return CheckResult(RESULT, Outcome.PASS, fine, headers=headers)


# What each finding means; each check reports those it can see.
FINDINGS: Mapping[str, str] = MappingProxyType({
    "loop.support_sender": "inbound MAIL FROM or From claims one of our support addresses "
                           "(a loop only with automation, our marker or a support recipient)",
    "loop.support_to_support": "one of our support addresses writes to a support address "
                               "(itself included), from any client",
    "loop.notification_to_support": "outbound: a notification from our side to one of our "
                                    "support addresses",
    "loop.notification_to_helpdesk": "outbound: a notification from our side to an external "
                                     "help desk (checks.loops.external_helpdesks)",
    "loop.too_many_received": "more Received headers than checks.loops.max_received",
    "loop.marker_seen": "our own loop marker header is already present: the mail came back",
})


def _findings(*names: str) -> dict[str, str]:
    return {name: FINDINGS[name] for name in names}


# ---- inbound -------------------------------------------------------------------


class LoopSenderCheck(BaseCheck[Config]):
    """Does MAIL FROM claim one of our support addresses?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.envelope", result=RESULT, stage=Stage.MAIL, waits_on="dns",
        findings=_findings("loop.support_sender"),
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Compare the envelope sender with the support addresses."""
        if not self.config.support_addresses:
            return [skipped(RESULT, "no support addresses configured")]
        sender = normalise_address(ctx.envelope.mail_from)
        if not sender:
            return [skipped(RESULT, "null sender")]
        findings = []
        if self.config.is_support(sender, ctx.identities):
            findings.append(Finding("loop.support_sender",
                                    f"MAIL FROM {clip(sender)} is a support address"))
        return [_result(findings, "the sender is not a support address")]


class LoopMessageCheck(BaseCheck[Config]):
    """From, hop count and our marker: has this message looped?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.message", result=RESULT, stage=Stage.DATA, waits_on="dns",
        findings=_findings("loop.support_sender", "loop.support_to_support",
                           "loop.too_many_received", "loop.marker_seen"),
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Report every loop sign in the header."""
        config = self.config
        message = ctx.message
        if message is None:
            return [skipped(RESULT, "no message yet")]
        findings: list[Finding] = []
        support_from = support_addresses_among(config, from_addresses(message), ctx.identities)
        if support_from:
            findings.append(Finding(
                "loop.support_sender", f"From {clip(', '.join(support_from))} is a support address"
            ))
            pairs = support_pairs(config, support_from, ctx.envelope.rcpt_to, ctx.identities)
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


# ---- both ways -------------------------------------------------------------------


class LoopRecipientCheck(BaseCheck[Config]):
    """No support address writes to a support address, whoever the client is."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.rcpt", result=RESULT, stage=Stage.RCPT, waits_on="dns",
        findings=_findings("loop.support_to_support"), direction="both",
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Pair the envelope sender with the recipient(s) of this call."""
        if not self.config.support_addresses:
            return [skipped(RESULT, "no support addresses configured")]
        if not ctx.envelope.rcpt_to:
            return [skipped(RESULT, "no recipient yet")]
        pairs = support_pairs(self.config, [ctx.envelope.mail_from], ctx.envelope.rcpt_to,
                              ctx.identities)
        findings = [Finding("loop.support_to_support", f"support to support: {p}") for p in pairs]
        return [_result(findings, "no support-to-support mail")]


# ---- outbound --------------------------------------------------------------------


def _nothing_to_guard(config: Config) -> bool:
    return not config.support_addresses and not config.external_helpdesks


class LoopNotificationCheck(BaseCheck[Config]):
    """Our own notification, by its envelope, to a support address or a help desk?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.notification", result=RESULT, stage=Stage.RCPT, waits_on="dns",
        findings=_findings("loop.notification_to_support", "loop.notification_to_helpdesk"),
        direction="outbound",
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Refusable at RCPT TO when the envelope already shows a notification."""
        config = self.config
        if _nothing_to_guard(config):
            return [skipped(RESULT, "no support addresses or help desks configured")]
        if not ctx.envelope.rcpt_to:
            return [skipped(RESULT, "no recipient yet")]
        why = envelope_notification(config, ctx.envelope, ctx.identities)
        if not why:
            return [_result([], "the envelope shows no notification")]
        findings = notification_findings(config, why, ctx.envelope.rcpt_to, ctx.identities)
        return [_result(findings, f"a notification ({why}), to no help desk")]


class LoopOutboundMessageCheck(BaseCheck[Config]):
    """Our own notification, by its header, to a support address or a help desk?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "loops.outbound", result=RESULT, stage=Stage.DATA, waits_on="dns",
        findings=_findings("loop.support_to_support", "loop.notification_to_support",
                           "loop.notification_to_helpdesk"),
        direction="outbound",
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Compare the header's senders and signs of automation with the recipients."""
        config = self.config
        message = ctx.message
        if _nothing_to_guard(config):
            return [skipped(RESULT, "no support addresses or help desks configured")]
        if message is None:
            return [skipped(RESULT, "no message yet")]
        rcpts = ctx.envelope.rcpt_to
        findings = [Finding("loop.support_to_support", f"support to support: {p}")
                    for p in support_pairs(config, from_addresses(message), rcpts,
                                           ctx.identities)]
        # What the envelope shows is loops.notification's, at RCPT TO.
        why = "; ".join(header_notification(config, message, ctx.identities))
        if why:
            findings += notification_findings(config, why, rcpts, ctx.identities)
        return [_result(findings, f"a notification ({clip(why)}), to no help desk" if why
                        else "no notification")]
