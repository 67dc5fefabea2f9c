"""One bounce, explained: who reported it, each recipient, its code and cause.

``explain`` is the one reader of bounces: the milter's bounce check and
``trustmilter explain-bounce`` both call it. It reads, in order of trust:
the RFC 3464 report (dsn.py), the body texts of MTAs we know (heuristics.py)
and the addresses flufl.bounce finds (recipients.py); then, for every
recipient, the address as the sender wrote it, the code (stated or
inferred, and which), whether the reporter gave up, and a cause from a
fixed set (causes.py; docs/rules.md §6). It never raises: both callers hand
it mail written by strangers, and everything it does is bounded (see
`READ_LIMIT`, recipients.py, and the linear-time tests).
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Literal

from trustmilter.bounce.causes import (
    EXPLANATIONS,
    Cause,
    cause_from_words,
    cause_of,
    inferred_code,
)
from trustmilter.bounce.dsn import (
    MAX_RECIPIENTS,
    DsnReport,
    Recipient,
    ReturnedMessage,
    address_of,
    is_report,
    parse_dsn,
    returned_message,
    unwrapped_status_parts,
)
from trustmilter.bounce.heuristics import TextReport, addresses_in, read_text
from trustmilter.bounce.notices import SUCCESS_ACTIONS, all_succeeded, is_challenge
from trustmilter.bounce.ours import Ours, decide
from trustmilter.bounce.recipients import (
    Failures,
    continued_reply,
    expanded_from,
    first_mentions,
    flufl_failures,
    words_for,
)
from trustmilter.bounce.ses import read_ses
from trustmilter.bounce.status import StatusMeaning, describe, find_basic, find_enhanced
from trustmilter.bounce.text import body_text, delay_notice, report_text, returned_inline
from trustmilter.i18n import N_, Text
from trustmilter.i18n import text as sentence
from trustmilter.mail.addresses import first_address
from trustmilter.mail.mime import MimeStructure
from trustmilter.mail.mime import walk as walk_mime

__all__ = ["READ_LIMIT", "Bounce", "BounceRecipient", "Cause", "cause_of", "explain"]

log = logging.getLogger(__name__)

# A bounce is read from its first this many bytes. RFC 6522 puts the report
# before the returned message, so a bounce that returns a large attachment
# is still read whole where it matters, and no bounce costs more than this.
READ_LIMIT = 1_000_000

StatusSource = Literal["report", "diagnostic", "inferred"]
Preferred = Literal["original", "final"]
_NOT_FAILURES = SUCCESS_ACTIONS


@dataclass(frozen=True)
class BounceRecipient:
    """One reported recipient with its code read and its cause named.

    `address` is the address as the sender wrote it: the report's
    Original-Recipient (or the address an alias was expanded from) where
    there is one, else the final one; `preferred` says which. `status` is
    the enhanced code and `status_source` where it came from: the report's
    Status field, the server's reply, or inferred from the reply's words.
    `permanent`: the reporter gave up on this recipient (it will not retry).
    `cause` is None for a recipient the report says was delivered or relayed."""

    address: str
    action: str | None
    status: str | None
    smtp_code: str | None
    diagnostic: str | None
    meaning: StatusMeaning
    cause: Cause | None
    permanent: bool = True
    status_source: StatusSource | None = None
    original_recipient: str | None = None
    final_recipient: str | None = None
    preferred: Preferred = "final"
    remote_mta: str | None = None

    @property
    def status_class(self) -> str | None:
        return self.meaning.class_name

    @property
    def failed(self) -> bool:
        return self.cause is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "original_recipient": self.original_recipient,
            "final_recipient": self.final_recipient,
            "preferred": self.preferred,
            "action": self.action,
            "status": self.status,
            "status_source": self.status_source,
            "class": self.meaning.class_name,
            "smtp_code": self.smtp_code,
            "permanent": self.permanent,
            "cause": self.cause.value if self.cause else None,
            "cause_explanation": EXPLANATIONS[self.cause] if self.cause else None,
            "diagnostic": self.diagnostic,
            "meaning": {
                "class": self.meaning.class_meaning,
                "subject": self.meaning.subject_meaning,
                "detail": self.meaning.detail_meaning,
            },
            "remote_mta": self.remote_mta,
        }


@dataclass(frozen=True)
class Bounce:
    """Everything ``explain`` could read from one message."""

    is_bounce: bool
    format: str | None = None  # "rfc3464", "exim", "qmail", ..., "text" or None
    reporting_mta: str | None = None
    reporting_mta_source: str | None = None  # "Reporting-MTA", "body", "Received", "From"
    own: bool = False
    recipients: tuple[BounceRecipient, ...] = ()
    returned: ReturnedMessage | None = None
    # What could not be read, as sentences `explain-bounce --lang` translates.
    notes: tuple[Text, ...] = field(default=())
    # Whether it returns our own mail: from `own` alone ("claims" or "no") as
    # read here; the marks that can prove it are added by the caller, who has
    # the keys, the DNS and the connection (bounce/ours.py).
    ours: Ours = field(default=Ours())

    @property
    def problems(self) -> tuple[str, ...]:
        """`notes` in English (``--json`` and the logs)."""
        return tuple(note.render() for note in self.notes)

    @property
    def cause(self) -> Cause | None:
        """The cause of the first failed recipient."""
        failed = [r.cause for r in self.recipients if r.cause is not None]
        return failed[0] if failed else None

    def to_json(self) -> dict[str, Any]:
        returned = self.returned
        return {
            "is_bounce": self.is_bounce,
            "reporting_mta": self.reporting_mta,
            "original_message_id": returned.message_id if returned else None,
            "recipients": [r.to_json() for r in self.recipients],
            "format": self.format,
            "reporting_mta_source": self.reporting_mta_source,
            "own": self.own,
            "ours": self.ours.value,
            "ours_evidence": list(self.ours.evidence),
            "ours_details": list(self.ours.lines),
            "cause": self.cause.value if self.cause else None,
            "returned_message": None if returned is None else {
                "message_id": returned.message_id, "subject": returned.subject,
                "from": returned.from_, "to": returned.to, "date": returned.date,
            },
            "problems": list(self.problems),
        }


# ---- who reported it --------------------------------------------------------------

_COURIER = re.compile(r"delivery status notification from ([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def _sender_mta(message: Message, body: str) -> tuple[str | None, str | None]:
    """No Reporting-MTA: the host named in the text, the host that received it
    last (Received "by"), else the From domain."""
    named = _COURIER.search(body)
    if named:
        return named.group(1).lower(), "body"
    for received in message.get_all("Received") or []:
        match = re.search(r"\bby\s+([A-Za-z0-9.-]+\.[A-Za-z]{2,})", str(received))
        if match:
            return match.group(1).lower(), "Received"
    domain = first_address(str(message.get("From", ""))).rpartition("@")[2]
    return (domain.lower(), "From") if domain else (None, None)


# ---- is it a bounce at all --------------------------------------------------------

_FAILURE_WORDS = ("undeliver", "deliver", "returned mail", "failure", "failed", "error",
                  "not delivered", "undelivered", "bounce")


def _looks_automated(message: Message) -> bool:
    """A mail from a mailer daemon (or with an empty From address, as only an
    MTA writes it) with a failure subject (RFC 5321 §4.5.5)."""
    sender = first_address(str(message.get("From", ""))).lower()
    subject = str(message.get("Subject", "")).lower()
    daemon = (sender.startswith(("mailer-daemon@", "postmaster@")) or "mailer-daemon" in sender
              or (not sender and "<>" in str(message.get("From", ""))))
    return daemon and any(word in subject for word in _FAILURE_WORDS)


# SES's other notifications (docs: "Amazon SNS notification contents for Amazon SES").
_NOT_SES_BOUNCES = {
    "complaint": sentence(N_("an Amazon SES complaint notification, not a bounce")),
    "delivery": sentence(N_("an Amazon SES delivery notification, not a bounce")),
}


def _not_a_failure(recipients: tuple[Recipient, ...], report: str) -> Text | None:
    """Why a notice built like a bounce is none (bounce/notices.py), or None."""
    if all_succeeded(recipients):
        return sentence(N_("a notice of successful delivery (RFC 3464), not a bounce"))
    if is_challenge(report, recipients):
        return sentence(N_("a challenge to confirm the sender (the message is held until "
                           "then), not a bounce"))
    return None


def _is_feedback_report(message: Message) -> bool:
    """An ARF abuse report (RFC 5965): a report, but of a complaint, not a failure."""
    return (message.get_content_type() == "multipart/report"
            and str(message.get_param("report-type", "")).lower() == "feedback-report")


# ---- each recipient ---------------------------------------------------------------

# An enhanced code that follows a basic one ("550 5.1.1", "550-'5.2.2",
# "550 #5.1.0"): the remote server's own reply, not a relay's summary.
_REPLY_CODE = re.compile(r"(?<![\d.])[245]\d\d[ -]['\"#(]?([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")


def _reply_code(diagnostic: str | None) -> str | None:
    if not diagnostic:
        return None
    match = _REPLY_CODE.search(diagnostic)
    return match.group(1) if match else find_enhanced(diagnostic)


def _status(recipient: Recipient) -> tuple[str | None, StatusSource | None]:
    """The report's Status, unless it says only X.0.0 and the server's reply
    gives a finer code of the same class (RFC 3463 §3.1: X.0.0 is "other")."""
    stated = describe(recipient.status)
    replied = describe(_reply_code(recipient.diagnostic))
    if stated.valid and not stated.code.endswith(".0.0"):
        return stated.code, "report"
    if replied.valid and (not stated.valid or (
            replied.klass == stated.klass and not replied.code.endswith(".0.0"))):
        return replied.code, "diagnostic"
    if stated.valid:
        return stated.code, "report"
    return None, None


def _permanent(recipient: Recipient, status: str | None, notice_is_delay: bool) -> bool:
    """Whether the reporter gave up on this recipient (RFC 3464 §2.3.3 Action)."""
    if recipient.action == "failed":
        return True
    if recipient.action in _NOT_FAILURES or recipient.action == "delayed":
        return False
    if recipient.temporary is not None:
        return not recipient.temporary
    if recipient.action is None and describe(status).klass == 4 and notice_is_delay:
        return False
    return not notice_is_delay


# Causes that a retry may cure, and that a reporter gives up on only when its
# time in the queue runs out.
_PASSING_CAUSES = frozenset({Cause.UNREACHABLE, Cause.UNKNOWN})


def _outlasted_the_queue(permanent: bool, cause: Cause, context: str) -> bool:
    """A transient failure the reporter gave up on because its time in the
    queue ran out, as the bounce itself says (Sendmail's subject "Cannot send
    message for 5 days"): the last attempt's words ("connection timed out")
    are why it was retried, the time running out is why it failed. Without
    such words the last attempt's reason stands (a person reads no more)."""
    return permanent and cause in _PASSING_CAUSES and cause_from_words(context) is Cause.EXPIRED


def _interpret(recipient: Recipient, notice_is_delay: bool, context: str) -> BounceRecipient:
    """One recipient read: its code and where it came from, permanence, cause.
    `context` (the bounce's subject and the words before its list of
    recipients) names the cause when the recipient's own words and code do not."""
    status, source = _status(recipient)
    basic = recipient.smtp_code or find_basic(recipient.diagnostic)
    permanent = _permanent(recipient, status, notice_is_delay)
    cause: Cause | None = None
    if recipient.action not in _NOT_FAILURES:
        cause = cause_of(status, recipient.diagnostic)
        if cause is Cause.UNKNOWN:
            shared = cause_from_words(context)
            # A recipient still being tried has not run out of time: a delay
            # notice's "could not be delivered for 12 hours" names no cause.
            if shared is not None and (permanent or shared is not Cause.EXPIRED):
                cause = shared
        if _outlasted_the_queue(permanent, cause, context):
            cause = Cause.EXPIRED
        if status is None:
            status = inferred_code(cause, permanent, basic)
            source = "inferred" if status else None
    original = recipient.original_recipient
    return BounceRecipient(
        address=original or recipient.address,
        action=recipient.action,
        status=status,
        smtp_code=basic,
        diagnostic=recipient.diagnostic,
        meaning=describe(status),
        cause=cause,
        permanent=permanent,
        status_source=source,
        original_recipient=original,
        final_recipient=recipient.address,
        preferred="original" if original else "final",
        remote_mta=recipient.remote_mta,
    )


def _replaced(recipient: Recipient, **changes: Any) -> Recipient:
    fields = {name: getattr(recipient, name) for name in (
        "address", "action", "status", "smtp_code", "diagnostic", "original_recipient",
        "remote_mta", "temporary")}
    fields.update(changes)
    return Recipient(**fields)


def _originals(recipients: list[Recipient], report: str) -> list[Recipient]:
    """Each recipient with the address it was expanded from, where the text says
    so; then one per address the sender used (an alias's several targets)."""
    kept: list[Recipient] = []
    seen: set[str] = set()
    for recipient in recipients:
        if recipient.original_recipient is None:
            original = expanded_from(report, recipient.address)
            if original is not None:
                recipient = _replaced(recipient, original_recipient=original)
        key = (recipient.original_recipient or recipient.address).lower()
        if key not in seen:
            seen.add(key)
            kept.append(recipient)
    return kept


def _with_words(recipient: Recipient, report: str, mentions: dict[str, int],
                alone: bool) -> Recipient:
    """The reply from the report's text where the recipient's own reading has
    none (an X.400 report, a bare DSN, a text bounce), or has only the first
    line of a reply the text has whole. A lone recipient the text
    does not name (AOL's screen names) gets the whole report's words."""
    if recipient.diagnostic:
        whole = continued_reply(report, recipient.diagnostic)
        return recipient if whole is None else _replaced(recipient, diagnostic=whole)
    words = words_for(report, recipient.address, mentions, recipient.original_recipient)
    if words is None and recipient.original_recipient:
        words = words_for(report, recipient.original_recipient, mentions, recipient.address)
    if words is None and alone:
        words = " ".join(report[:1000].split()) or None
    if words is None:
        return recipient
    basic = recipient.smtp_code or find_basic(words)
    return _replaced(recipient, diagnostic=words, smtp_code=basic)


def _preamble(report: str, recipients: list[Recipient]) -> str:
    """The report's words before it names the first recipient (a reason shared by all)."""
    folded = report.lower()
    positions = [folded.find(r.address.lower()) for r in recipients]
    first = min((p for p in positions if p >= 0), default=len(report))
    return report[max(0, first - 1000) : first]


def _failed_recipients_field(message: Message) -> list[str]:
    """X-Failed-Recipients (Exim, Gmail): the addresses, comma-separated."""
    found = []
    for value in message.get_all("X-Failed-Recipients") or []:
        for item in str(value).split(","):
            address = address_of(item)
            if address:
                found.append(address)
    return found


def _text_recipients(text: TextReport | None, failures: Failures, extra: list[str],
                     notice_is_delay: bool) -> list[Recipient]:
    """The text readers' recipients, then what flufl.bounce (and X-Failed-Recipients)
    add: flufl's verdict "temporary" is kept, and a notice whose words say it
    is still trying (and never that it gave up) is a delay for every address
    (flufl's simple detectors call all they match permanent). An address flufl
    finds inside the reply a text reader read for a recipient is part of that
    reply (the forward target a server names), not another failed recipient."""
    found = list(text.recipients) if text else []
    known = {r.address.lower() for r in found}
    in_replies = addresses_in("\n".join(r.diagnostic for r in found if r.diagnostic))
    from_flufl, temporary_ones = set(failures.addresses), set(failures.temporary)
    for address in (*failures.addresses, *extra):
        if address.lower() in known or (
                address in from_flufl and address.lower() in in_replies):
            continue
        known.add(address.lower())
        temporary = address in temporary_ones or notice_is_delay
        found.append(Recipient(address=address, temporary=temporary))
    return found


def _distinct(recipients: list[BounceRecipient]) -> tuple[BounceRecipient, ...]:
    """One entry per address the sender used (several expansions of one alias)."""
    seen: set[str] = set()
    kept = []
    for recipient in recipients:
        key = recipient.address.lower()
        if key not in seen:
            seen.add(key)
            kept.append(recipient)
    return tuple(kept)


# ---- the whole bounce -------------------------------------------------------------


def _domain(address: str | None) -> str | None:
    if not address:
        return None
    domain = first_address(address).rpartition("@")[2].strip(".").lower()
    return domain or None


def _is_own(returned: ReturnedMessage | None, own_domains: tuple[str, ...]) -> bool:
    """The returned message came from one of our domains (its From or Return-Path)."""
    if returned is None:
        return False
    owned = {d.strip(".").lower() for d in own_domains}
    for address in (returned.from_, returned.return_path):
        domain = _domain(address)
        if domain and any(domain == d or domain.endswith("." + d) for d in owned):
            return True
    return False


def _explain(message: Message, own_domains: tuple[str, ...]) -> Bounce:
    if _is_feedback_report(message):
        return Bounce(is_bounce=False, notes=(
            sentence(N_("an abuse report (RFC 5965), not a bounce")),))
    problems: list[Text] = []
    # An Amazon SES notification (JSON from SNS) stands for the report itself.
    notification = read_ses(message)
    if notification is not None and notification.kind != "bounce":
        return Bounce(is_bounce=False, notes=(_NOT_SES_BOUNCES.get(notification.kind) or sentence(
            N_("an Amazon SES notification (%(kind)s), not a bounce"), kind=notification.kind),))
    dsn = parse_dsn(message) if notification is None else DsnReport(
        notification.reporting_mta, notification.recipients, notification.returned)
    body = body_text(message)
    report = report_text(body)
    not_bounce = None if notification else _not_a_failure(dsn.recipients if dsn else (), report)
    if not_bounce is not None:
        return Bounce(is_bounce=False, notes=(not_bounce,))
    notice_is_delay = delay_notice(message, report) if notification is None else False
    text: TextReport | None = read_text(body) if notification is None else None
    recipients: list[Recipient] = list(dsn.recipients) if dsn else []
    fmt: str | None = ("amazonses" if notification else "rfc3464") if recipients else None
    if not recipients:
        failures = flufl_failures(message, report)
        extra = _failed_recipients_field(message)
        recipients = _text_recipients(text, failures, extra, notice_is_delay)[:MAX_RECIPIENTS]
        fmt = text.mta if text else ("text" if recipients else None)
    if not (recipients or dsn is not None or text is not None or is_report(message)
            or _looks_automated(message)):
        return Bounce(is_bounce=False)
    if dsn is not None and not dsn.recipients:
        problems.append(sentence(N_("delivery-status part names no recipient")))
    elif dsn is None and is_report(message):
        problems.append(sentence(N_("multipart/report without a delivery-status part")))
    reporting, source = None, None
    if dsn is not None and dsn.reporting_mta:
        reporting, source = dsn.reporting_mta, "Reporting-MTA"
    elif text is not None and text.reporting_mta:
        reporting, source = text.reporting_mta, "body"
    if reporting is None:
        reporting, source = _sender_mta(message, body)
    if not recipients:
        problems.append(sentence(N_("no recipient could be read")))
    returned = (dsn.returned if dsn else None) or returned_message(message)
    returned = returned or returned_inline(body)
    recipients = _originals(recipients, report)
    context = f"{message.get('Subject', '')}\n{_preamble(report, recipients)}"
    mentions = first_mentions(report, tuple(
        a for r in recipients for a in (r.address, r.original_recipient) if a))
    read = [_interpret(_with_words(r, report, mentions, len(recipients) == 1),
                       notice_is_delay, context) for r in recipients]
    own = _is_own(returned, own_domains)
    return Bounce(
        is_bounce=True,
        format=fmt,
        reporting_mta=reporting,
        reporting_mta_source=source,
        own=own,
        ours=decide(own, ()),
        recipients=_distinct(read),
        returned=returned,
        notes=tuple(problems),
    )


_LINE_ENDS = re.compile(rb"\r\n?")


def explain(
    raw: bytes,
    own_domains: tuple[str, ...] | list[str] = (),
    structure: MimeStructure | None = None,
) -> Bounce:
    """Read ``raw`` (a whole message) as a bounce; never raises.

    The email package's parser recurses once per MIME nesting level, so a
    message nested deeper than `mail.mime.NESTING_LIMIT` (or with more parts
    than the walk reads) is not handed to it: no real bounce is built like
    that, and the `headers` check reports such a message on its own.
    `structure` is the message's MIME walk when the caller has it already.
    Only the first `READ_LIMIT` bytes are read.
    """
    structure = structure if structure is not None else walk_mime(raw)
    if structure.too_deep or structure.truncated:
        return Bounce(is_bounce=False, notes=(
            sentence(N_("not read: MIME nested %(depth)s levels deep, %(parts)s parts"),
                 depth=structure.depth, parts=structure.parts),
        ))
    try:
        # CRLF and the lone CR of old Mac mailers read as LF: the decoders of
        # quoted-printable soft breaks and some detectors know only LF.
        text = unwrapped_status_parts(_LINE_ENDS.sub(b"\n", raw[:READ_LIMIT]))
        message = email.message_from_bytes(text, policy=email.policy.compat32)
        return _explain(message, tuple(own_domains))
    except Exception as error:  # hostile input must not stop the CLI or the milter
        log.warning("bounce could not be read: %s", error)
        # The parser's own words, as the log has them.
        return Bounce(is_bounce=False, notes=(sentence(N_("unreadable: %(error)s"), error=error),))
