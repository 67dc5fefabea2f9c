"""Our own mail as the reference: replies to it, and bounces that verifiably return it.

Where trustmilter also sees the mail we send (Postfix's non_smtpd_milters
for local submission, smtpd_milters for our networks and SASL users),
`SentMailCheck` (outbound, at end of message, result ``sent``) stamps
each message with a keyed token (mail/token.py) and asks for its
Message-ID to be remembered (a keyed digest, bounded and expiring, in the
state store; written once the message is accepted). Inbound, at end of
message, `ReplyCheck` reports under ``reply``:

- ``reply.ours``: In-Reply-To or References names a message we sent (at
  most `max_lookups` of the ids it names are looked up: In-Reply-To first,
  then References from its end). A customer answering an agent;
- ``reply.ours_bounce``: a bounce (the null sender, a report, a mailer
  daemon) whose returned header carries our token, valid for that
  header's Message-ID and Date: a bounce of our own mail, verifiably;
- ``reply.forged_token``: a bounce returns a header with a token field that
  is not ours for that Message-ID and Date (forged, damaged, or made under
  a key we no longer have).

On a bounce the result also carries the token's verdict as evidence
(`TokenEvidence`, read with `returned_token`): the bounce check takes it
as one of the marks that make a bounce verifiably ours (bounce/ours.py).

What each proves. A Message-ID is no secret: every recipient of our
message sees it, and anyone they forward it to. So ``reply.ours`` says
only "this names a message we sent", and the shipped policy lets it lift
the automation quarantine rules alone (a customer's answer is not bulk
mail), never a rule that guards against forgery (DMARC, SPF, DKIM), a
loop rule or a rate tier. The token is another matter: only the holder of
the key can make it, so ``reply.ours_bounce`` is proof that the returned
message was ours.

Outcome pass with ``reply.ours`` or ``reply.ours_bounce``, fail with only
``reply.forged_token``, none when the message is neither; temperror when
the state store failed (the token is still checked); skipped without a
key (`key_file`: the feature is off, said once at start) or before the
message is known. Offline (`trustmilter check`, no state store) only the
token is checked. Nothing raises for odd input; every loop over sender
text is bounded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage, skipped
from trustmilter.checks.bounce_signs import may_be_bounce
from trustmilter.config.errors import InvalidField
from trustmilter.mail.fields import HeaderFields, field_value, split_fields
from trustmilter.mail.mime import MimeStructure
from trustmilter.mail.text import clip
from trustmilter.mail.token import (
    load_key,
    make_token,
    message_digest,
    message_id,
    referenced_ids,
    sender_digest,
    token_matches,
)
from trustmilter.model import Message, is_field_name
from trustmilter.results import CheckResult, Finding, HeaderRequest, Outcome
from trustmilter.state.base import SentMessage, StateError
from trustmilter.state.effects import RememberSent

RESULT = "reply"
SENT = "sent"  # the outbound check's result: no finding, nothing a rule could match
DAY = 86400.0
log = logging.getLogger(__name__)

# Parts a report returns a message's header in (RFC 6522 §4: text/
# rfc822-headers; RFC 3464 §2: message/rfc822; RFC 6532 and 6533: the
# internationalised message/global and message/global-headers). A
# message/rfc822 read as it is comes from the MIME walk's `messages`; these
# are read when they are leaves (encoded, or headers only).
RETURNED_TYPES = frozenset({
    "text/rfc822-headers", "message/rfc822-headers", "message/rfc822",
    "message/global", "message/global-headers",
})
MAX_RETURNED = 5  # returned headers examined per message at most
MAX_RETURNED_BYTES = 65536  # of one returned part's payload read at most
_LEADING_BLANK_LINES = re.compile(rb"\A(?:[ \t]*\r?\n)+")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # The site key (at least 32 bytes; mode 600, the daemon's alone). Empty:
    # our own mail is neither stamped nor recorded nor recognised.
    key_file: str = ""
    # The header field our token is stamped in, and read from returned mail.
    token_header: str = "X-Trustmilter-Token"
    # Days a message we sent is remembered (replies come within weeks).
    keep_days: float = field(default=90.0, metadata={"min": 1, "max": 3650})
    # Messages remembered at most: the oldest go first.
    max_entries: int = field(default=100_000, metadata={"min": 100, "max": 10_000_000})
    # Message-IDs of one reply looked up at most (In-Reply-To, then References).
    max_lookups: int = field(default=20, metadata={"min": 1, "max": 100})
    # Also remember a keyed hash of the envelope sender (to say whether a
    # reply went back to the address our message came from); false: nothing
    # of the sender is kept.
    record_sender: bool = True

    def __post_init__(self) -> None:
        if self.key_file and not self.key_file.startswith("/"):
            raise InvalidField(("key_file",), "an absolute path, or ''", self.key_file)
        if not is_field_name(self.token_header):
            raise InvalidField(
                ("token_header",), "a header field name (printable ASCII, no ':' or space)",
                self.token_header,
            )


def preflight(config: Config) -> None:
    """A key file that is set must be usable (a typo must not turn the feature off
    silently); none set is said once: the feature is off."""
    if config.key_file:
        load_key(config.key_file)
    else:
        log.info("checks.replies: no key_file, so our own mail is not stamped or "
                 "remembered, and replies and bounces to it are not recognised")


# ---- pure parts ------------------------------------------------------------------


def _header_block(data: bytes) -> HeaderFields:
    """The fields of the header at the start of `data` (blank lines before it skipped)."""
    data = _LEADING_BLANK_LINES.sub(b"", data, count=1)
    lines = []
    for line in data.splitlines():
        if not line.strip():
            break
        lines.append(line)
    return split_fields(lines)


def returned_headers(structure: MimeStructure) -> Iterator[HeaderFields]:
    """The headers a report returns, at most MAX_RETURNED: encapsulated messages,
    then header-only or encoded returned parts."""
    count = 0
    for fields in structure.messages:
        if count >= MAX_RETURNED:
            return
        count += 1
        yield fields
    for leaf in structure.leaves:
        if count >= MAX_RETURNED:
            return
        if leaf.content_type in RETURNED_TYPES:
            count += 1
            yield _header_block(leaf.payload(MAX_RETURNED_BYTES))


def token_verdict(
    key: bytes, token_header: str, headers: Iterator[HeaderFields]
) -> tuple[str | None, bool]:
    """(the Message-ID of a returned header our token verifies, or None; whether
    some returned header carried a token that is not ours)."""
    wanted = token_header.lower()
    forged = False
    for fields in headers:
        tokens = [value for name, value in fields if name.lower() == wanted]
        if not tokens:
            continue
        ident = message_id(field_value(fields, "Message-ID"))
        date = field_value(fields, "Date")
        if ident is not None and any(token_matches(key, t, ident, date) for t in tokens):
            return ident, forged
        forged = True
    return None, forged


@dataclass(frozen=True, slots=True)
class TokenEvidence:
    """What our token showed on a bounce's returned header: the Message-ID a
    valid token was found for (None: none), and whether a token that is not
    ours was seen. On the ``reply`` result of a bounce; read with `returned_token`."""

    returned_id: str | None
    forged: bool


def returned_token(results: Iterable[CheckResult]) -> TokenEvidence | None:
    """The token's verdict on a bounce from the ``reply`` results, or None (not
    looked for: no key, not a bounce, or the replies check is off)."""
    for result in results:
        if isinstance(result.evidence, TokenEvidence):
            return result.evidence
    return None


def bounce_token(key: bytes, token_header: str, structure: MimeStructure) -> TokenEvidence:
    """Our token on the headers a bounce returns (`structure`: its MIME walk):
    for this check and for ``trustmilter explain-bounce`` alike."""
    ours, forged = token_verdict(key, token_header, returned_headers(structure))
    return TokenEvidence(ours, forged)


def _all(message: Message, name: str) -> str:
    return " ".join(message.header_values(name))


# ---- the check --------------------------------------------------------------------


def _read_key(config: Config) -> bytes | None:
    """The key, or None when none is configured (preflight has said so)."""
    return load_key(config.key_file) if config.key_file else None


class ReplyCheck(BaseCheck[Config]):
    """Does this message answer, or return, mail we sent?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "reply", result=RESULT, stage=Stage.DATA, waits_on="state",
        findings={
            "reply.ours": "In-Reply-To or References names a message we sent (no proof: "
                          "every recipient of our message sees its Message-ID)",
            "reply.ours_bounce": "a bounce returning a header with our valid token: "
                                 "verifiably our own mail",
            "reply.forged_token": "a bounce returning a header whose token is not ours "
                                  "for its Message-ID and Date",
        },
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.key = _read_key(config)

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        message = ctx.message
        if message is None:
            return [skipped(RESULT, "no message yet")]
        if self.key is None:
            return [skipped(RESULT, "no key_file: our own mail is not recognised")]
        token = (bounce_token(self.key, self.config.token_header, message.mime)
                 if may_be_bounce(ctx.envelope.mail_from, message) else None)
        findings = self._bounce_findings(token)
        problem = None
        try:
            findings += self._reply_findings(ctx, message, self.key)
        except StateError as error:
            problem = f"cannot look up our messages: {clip(str(error), 200)}"
        return [replace(_result(findings, problem), evidence=token)]

    def _bounce_findings(self, token: TokenEvidence | None) -> list[Finding]:
        if token is None:
            return []
        if token.returned_id is not None:
            return [Finding("reply.ours_bounce", clip(f"returns our <{token.returned_id}>"))]
        if token.forged:
            return [Finding("reply.forged_token",
                            f"{self.config.token_header} not ours for the returned message")]
        return []

    def _reply_findings(self, ctx: CheckContext, message: Message, key: bytes) -> list[Finding]:
        """``reply.ours`` when a named Message-ID is one we remember; StateError passes."""
        if ctx.state is None:
            return []
        idents = referenced_ids(_all(message, "In-Reply-To"), _all(message, "References"),
                                self.config.max_lookups)
        if not idents:
            return []
        by_digest = {message_digest(key, ident): ident for ident in idents}
        found = ctx.state.sent_messages(tuple(by_digest), ctx.clock())
        if not found:
            return []
        first = found[0]
        detail = f"answers our <{by_digest[first.digest]}>"
        if _to_its_sender(key, first, ctx.envelope.rcpt_to):
            detail += ", to the address it came from"
        return [Finding("reply.ours", clip(detail))]


class SentMailCheck(BaseCheck[Config]):
    """Our own outbound mail: stamp our token on it, and remember its Message-ID.

    Every message our clients send is stamped, not only the help desk's
    notifications: which outbound message is a notification cannot be told
    reliably from the header, any of them can bounce or be answered, and a
    token reveals nothing (a MAC over fields the message shows anyway) and
    costs one short header line. Stamping all is what lets every bounce of
    ours be verified. What is remembered (keyed digests only) is written by
    the engine once the message is accepted (state/effects.py).
    """

    spec: ClassVar[CheckSpec] = CheckSpec(
        "reply.sent", result=SENT, stage=Stage.DATA, waits_on="dns", direction="outbound",
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.key = _read_key(config)

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        if self.key is None:
            return []  # the feature is off: no trace on our own mail (preflight said so)
        message = ctx.message
        if message is None:
            return [skipped(SENT, "no message yet")]
        ident = message_id(message.header("Message-ID"))
        if ident is None:
            return [CheckResult(SENT, Outcome.NONE, "no Message-ID: nothing to stamp or remember")]
        now = ctx.clock()
        sender = (sender_digest(self.key, ctx.envelope.mail_from)
                  if self.config.record_sender else "")
        record = SentMessage(message_digest(self.key, ident), sender, now,
                             now + self.config.keep_days * DAY)
        token = make_token(self.key, ident, message.header("Date"))
        return [CheckResult(
            SENT, Outcome.PASS, clip(f"stamped and remembered <{ident}>"),
            headers=(HeaderRequest(self.config.token_header, token),),
            effects=(RememberSent(record, self.config.max_entries),),
        )]


def _to_its_sender(key: bytes, sent: SentMessage, rcpts: tuple[str, ...]) -> bool:
    """Whether one of the recipients is the address our message was sent from."""
    return bool(sent.sender) and any(sender_digest(key, r) == sent.sender for r in rcpts)


def _result(findings: list[Finding], problem: str | None) -> CheckResult:
    names = {f.name for f in findings}
    reason = "; ".join(f"{f.name}: {f.detail}" for f in findings)
    if problem is not None:
        reason = f"{reason}; {problem}" if reason else problem
    if names & {"reply.ours", "reply.ours_bounce"}:
        return CheckResult(RESULT, Outcome.PASS, clip(reason, 300), tuple(findings))
    if names:
        return CheckResult(RESULT, Outcome.FAIL, clip(reason, 300), tuple(findings))
    if problem is not None:
        return CheckResult(RESULT, Outcome.TEMPERROR, clip(problem, 300))
    return CheckResult(RESULT, Outcome.NONE, "not a reply to our mail")
