"""One bounce, explained: who reported it, for whom, why, and whether it is ours.

``explain`` combines the RFC 3464 reader (dsn.py) with the body-text readers
(heuristics.py) and turns codes into plain causes (docs/rules.md §6: "User
Unknown", "Host Unknown", "Mail could not be delivered"). It never raises:
the CLI and the milter both hand it mail written by strangers.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from enum import StrEnum
from typing import Any

from trustmilter.bounce.dsn import (
    Recipient,
    ReturnedMessage,
    is_report,
    parse_dsn,
    returned_from_headers,
    returned_message,
)
from trustmilter.bounce.heuristics import TextReport, read_text
from trustmilter.bounce.status import StatusMeaning, describe, find_basic
from trustmilter.i18n import N_, Text
from trustmilter.i18n import text as sentence
from trustmilter.mail.addresses import first_address
from trustmilter.mail.mime import MimeStructure
from trustmilter.mail.mime import walk as walk_mime

log = logging.getLogger(__name__)


class Cause(StrEnum):
    """The plain-words cause; the values are the message ids a later translation uses."""

    DELIVERED = "delivered"
    USER_UNKNOWN = "user unknown"
    HOST_UNKNOWN = "host unknown"
    MAILBOX_FULL = "mailbox full"
    MAILBOX_DISABLED = "mailbox disabled"
    MESSAGE_TOO_LARGE = "message too large"
    BLOCKED_AS_SPAM = "blocked as spam"
    AUTHENTICATION_FAILED = "sender authentication failed"
    RELAY_DENIED = "relay denied"
    REFUSED_BY_POLICY = "refused by policy"
    MAIL_LOOP = "mail loop"
    SERVER_UNREACHABLE = "server could not be reached"
    TEMPORARY_FAILURE = "temporary failure"
    PERMANENT_FAILURE = "permanent failure"
    UNKNOWN = "unknown"


# The Cause values as msgids for the catalogs (a StrEnum's values cannot be wrapped).
CAUSE_MSGIDS = (
    N_("delivered"), N_("user unknown"), N_("host unknown"), N_("mailbox full"),
    N_("mailbox disabled"), N_("message too large"), N_("blocked as spam"),
    N_("sender authentication failed"), N_("relay denied"), N_("refused by policy"),
    N_("mail loop"), N_("server could not be reached"), N_("temporary failure"),
    N_("permanent failure"), N_("unknown"),
)


# Words MTAs put in replies when the code alone is too vague (5.0.0, 550 without detail):
# a pattern, and phrases "first ... last" that must stand in that order on one line.
# Those stand for the patterns "doesn't have a .* account" and "exceeds .*(?:size|limit)",
# which a search retried from every "exceeds " to the end of its line: quadratic in
# a reply of repeated words (100 KB: 3.7 s). `_in_order_on_a_line` gives the same
# answer looking at the first "exceeds " of each line only.
_TEXT_CAUSES: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...], Cause], ...] = (
    (r"spam|blacklist|blocklist|block list|\brbl\b|spamhaus|reputation|listed", (),
     Cause.BLOCKED_AS_SPAM),
    (r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|unable to relay", (),
     Cause.RELAY_DENIED),
    (r"user unknown|unknown user|no such (?:user|mailbox|recipient)|does not exist|"
     r"recipnotfound|address not found|mailbox unavailable|"
     r"invalid recipient|recipient address rejected", (("doesn't have a ", (" account",)),),
     Cause.USER_UNKNOWN),
    (r"host unknown|host or domain name not found|domain not found|no mx|nxdomain|"
     r"name service error", (), Cause.HOST_UNKNOWN),
    (r"mailbox (?:is )?full|over ?quota|quota exceeded|insufficient storage", (),
     Cause.MAILBOX_FULL),
    (r"too (?:large|big)|size limit", (("exceeds ", ("size", "limit")),),
     Cause.MESSAGE_TOO_LARGE),
)


def _in_order_on_a_line(text: str, first: str, lasts: tuple[str, ...]) -> bool:
    """Whether some line of `text` has `first` and, after it, one of `lasts`:
    re.search(first + ".*(?:" + "|".join(lasts) + ")", text), in linear time.
    The first `first` of a line is the one to look after (any later one sees less)."""
    start = text.find(first)
    while start >= 0:
        line_end = text.find("\n", start)
        if line_end < 0:
            line_end = len(text)
        if any(text.find(last, start + len(first), line_end) >= 0 for last in lasts):
            return True
        start = text.find(first, line_end)
    return False


# RFC 3463 subject.detail -> cause, where the code is precise enough.
_CODE_CAUSES: dict[tuple[int, int], Cause] = {
    (1, 1): Cause.USER_UNKNOWN, (1, 3): Cause.USER_UNKNOWN, (1, 6): Cause.USER_UNKNOWN,
    (1, 2): Cause.HOST_UNKNOWN, (1, 10): Cause.HOST_UNKNOWN,
    (2, 1): Cause.MAILBOX_DISABLED, (7, 13): Cause.MAILBOX_DISABLED,
    (2, 2): Cause.MAILBOX_FULL, (3, 1): Cause.MAILBOX_FULL,
    (2, 3): Cause.MESSAGE_TOO_LARGE, (3, 4): Cause.MESSAGE_TOO_LARGE,
    (4, 6): Cause.MAIL_LOOP,
    (4, 1): Cause.SERVER_UNREACHABLE, (4, 2): Cause.SERVER_UNREACHABLE,
    (4, 7): Cause.SERVER_UNREACHABLE,
    **{(7, d): Cause.AUTHENTICATION_FAILED for d in (20, 21, 22, 23, 24, 25, 26, 29)},
}


def cause_of(status: str | None, diagnostic: str | None) -> Cause:
    """The plain cause of one recipient's failure: the code first, then the reply words."""
    meaning = describe(status)
    if meaning.klass == 2:
        return Cause.DELIVERED
    if meaning.valid:
        subject, detail = (int(x) for x in meaning.code.split(".")[1:])
        if (subject, detail) in _CODE_CAUSES:
            return _CODE_CAUSES[(subject, detail)]
    text = (diagnostic or "").lower()
    for pattern, phrases, cause in _TEXT_CAUSES:
        if re.search(pattern, text) or any(
            _in_order_on_a_line(text, first, lasts) for first, lasts in phrases
        ):
            return cause
    if meaning.valid and meaning.code.split(".")[1] == "7":
        return Cause.REFUSED_BY_POLICY
    if meaning.klass == 4:
        return Cause.TEMPORARY_FAILURE
    if meaning.klass == 5:
        return Cause.PERMANENT_FAILURE
    return Cause.UNKNOWN


@dataclass(frozen=True)
class BounceRecipient:
    """One reported recipient with its code read and its cause named."""

    address: str
    action: str | None
    status: str | None
    smtp_code: str | None
    diagnostic: str | None
    meaning: StatusMeaning
    cause: Cause
    original_recipient: str | None = None
    remote_mta: str | None = None

    @property
    def status_class(self) -> str | None:
        return self.meaning.class_name

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "action": self.action,
            "status": self.status,
            "class": self.meaning.class_name,
            "diagnostic": self.diagnostic,
            "smtp_code": self.smtp_code,
            "meaning": {
                "class": self.meaning.class_meaning,
                "subject": self.meaning.subject_meaning,
                "detail": self.meaning.detail_meaning,
            },
            "cause": self.cause.value,
            "original_recipient": self.original_recipient,
            "remote_mta": self.remote_mta,
        }


@dataclass(frozen=True)
class Bounce:
    """Everything ``explain`` could read from one message."""

    is_bounce: bool
    format: str | None = None  # "rfc3464", "exim", "qmail", ... or None
    reporting_mta: str | None = None
    reporting_mta_source: str | None = None  # "Reporting-MTA", "body", "Received", "From"
    own: bool = False
    recipients: tuple[BounceRecipient, ...] = ()
    returned: ReturnedMessage | None = None
    # What could not be read, as sentences `explain-bounce --lang` translates.
    notes: tuple[Text, ...] = field(default=())

    @property
    def problems(self) -> tuple[str, ...]:
        """`notes` in English (``--json`` and the logs)."""
        return tuple(note.render() for note in self.notes)

    @property
    def cause(self) -> Cause | None:
        """The cause of the first failed recipient (else of the first one reported)."""
        failed = [r for r in self.recipients if r.meaning.klass in (4, 5)]
        chosen = failed or list(self.recipients)
        return chosen[0].cause if chosen else None

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
            "cause": self.cause.value if self.cause else None,
            "returned_message": None if returned is None else {
                "message_id": returned.message_id, "subject": returned.subject,
                "from": returned.from_, "to": returned.to, "date": returned.date,
            },
            "problems": list(self.problems),
        }


def _body_text(message: Message) -> str:
    """The human-readable text: the first text/plain part outside any returned message."""
    if not message.is_multipart():
        payload = message.get_payload(decode=True)
        return _decode(payload, message)
    for part in message.get_payload() if isinstance(message.get_payload(), list) else []:
        if isinstance(part, Message) and part.get_content_type() == "text/plain":
            return _decode(part.get_payload(decode=True), part)
        if isinstance(part, Message) and part.get_content_type() == "multipart/alternative":
            return _body_text(part)
    return ""


def _decode(payload: object, part: Message) -> str:
    if not isinstance(payload, bytes):
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", errors="replace")


# The separator lines before a copy of the returned message's headers (qmail,
# Yahoo, Exim, Exchange); Exim's is followed by the rest of its line.
_COPY_MARKER = re.compile(
    r"--- Below this line is a copy of the message\.|(------ This is a copy of the message)"
    r"|Original message headers:|----- Original message -----"
)
_BLANKS = re.compile(r"\s*")


def _copied_text(body: str) -> str | None:
    r"""What follows the first separator and the blank lines after it: group 1 of
    re.search(r"(?:<separator>|<Exim's>[^\n]*)\s*\n\s*\n?(.*)", body, re.S).

    That pattern tried every split of the blanks (with "[^\n]*" before them, every
    end of the line too) at every separator: quadratic in a run of blanks or of
    separators on one line (100 KB: 1.4 s). Its answer is the text after the run of
    blanks that starts at the separator's end (at the end of Exim's line), when that
    run holds a line end; else the search goes on at the next separator.
    """
    start = 0
    while (marker := _COPY_MARKER.search(body, start)) is not None:
        end = marker.end()
        if marker.group(1):
            end = body.find("\n", end)
            if end < 0:
                return None  # no line end follows: no later separator can match either
        blanks = _BLANKS.match(body, end)
        assert blanks is not None  # \s* matches the empty string
        if "\n" in blanks.group():
            return body[blanks.end() :]
        start = marker.start() + 1
    return None


def _returned_inline(body: str) -> ReturnedMessage | None:
    """Headers copied into the text after a separator line (qmail, Yahoo, Exim, Exchange)."""
    copied = _copied_text(body)
    if copied is None:
        return None
    headers = email.message_from_string(copied.lstrip())
    returned = returned_from_headers(headers)
    return returned if any(vars(returned).values()) else None


def _sender_mta(message: Message) -> tuple[str | None, str | None]:
    """No Reporting-MTA: the host that received it last (Received "by"), else the From domain."""
    for received in message.get_all("Received") or []:
        match = re.search(r"\bby\s+([A-Za-z0-9.-]+\.[A-Za-z]{2,})", str(received))
        if match:
            return match.group(1).lower(), "Received"
    domain = first_address(str(message.get("From", ""))).rpartition("@")[2]
    return (domain.lower(), "From") if domain else (None, None)


def _looks_automated(message: Message) -> bool:
    """A null-sender mail from a mailer daemon with a failure subject (RFC 5321 §4.5.5)."""
    sender = first_address(str(message.get("From", ""))).lower()
    subject = str(message.get("Subject", "")).lower()
    daemon = sender.startswith(("mailer-daemon@", "postmaster@")) or "mailer-daemon" in sender
    words = ("undeliver", "delivery status", "delivery failure", "returned mail",
             "failure notice", "non-delivery", "not delivered", "delivery has failed")
    return daemon and any(word in subject for word in words)


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


def _interpret(recipient: Recipient) -> BounceRecipient:
    status = recipient.status
    if status is None:
        # RFC 3463 §3.1: with only a basic code, X.0.0 of its class is all that is known.
        basic = recipient.smtp_code or find_basic(recipient.diagnostic)
        status = f"{basic[0]}.0.0" if basic else None
    return BounceRecipient(
        address=recipient.address,
        action=recipient.action,
        status=status,
        smtp_code=recipient.smtp_code,
        diagnostic=recipient.diagnostic,
        meaning=describe(status),
        cause=cause_of(status, recipient.diagnostic),
        original_recipient=recipient.original_recipient,
        remote_mta=recipient.remote_mta,
    )


def _explain(message: Message, own_domains: tuple[str, ...]) -> Bounce:
    problems: list[Text] = []
    dsn = parse_dsn(message)
    body = _body_text(message)
    text: TextReport | None = read_text(body)
    if dsn is None and text is None and not is_report(message) and not _looks_automated(message):
        return Bounce(is_bounce=False)
    recipients: tuple[Recipient, ...] = ()
    reporting, source, fmt = None, None, None
    if dsn is not None:
        recipients, fmt = dsn.recipients, "rfc3464"
        if dsn.reporting_mta:
            reporting, source = dsn.reporting_mta, "Reporting-MTA"
        if not recipients:
            problems.append(sentence(N_("delivery-status part names no recipient")))
    elif is_report(message):
        problems.append(sentence(N_("multipart/report without a delivery-status part")))
    if text is not None:
        fmt = fmt if recipients else text.mta
        recipients = recipients or text.recipients
        if reporting is None and text.reporting_mta:
            reporting, source = text.reporting_mta, "body"
    if reporting is None:
        reporting, source = _sender_mta(message)
    if not recipients:
        problems.append(sentence(N_("no recipient could be read")))
    returned = (dsn.returned if dsn else None) or returned_message(message)
    returned = returned or _returned_inline(body)
    return Bounce(
        is_bounce=True,
        format=fmt,
        reporting_mta=reporting,
        reporting_mta_source=source,
        own=_is_own(returned, own_domains),
        recipients=tuple(_interpret(r) for r in recipients),
        returned=returned,
        notes=tuple(problems),
    )


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
    """
    structure = structure if structure is not None else walk_mime(raw)
    if structure.too_deep or structure.truncated:
        return Bounce(is_bounce=False, notes=(
            sentence(N_("not read: MIME nested %(depth)s levels deep, %(parts)s parts"),
                 depth=structure.depth, parts=structure.parts),
        ))
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        return _explain(message, tuple(own_domains))
    except Exception as error:  # hostile input must not stop the CLI or the milter
        log.warning("bounce could not be read: %s", error)
        # The parser's own words, as the log has them.
        return Bounce(is_bounce=False, notes=(sentence(N_("unreadable: %(error)s"), error=error),))
