"""Amazon SES bounce notifications: JSON in the body, not a delivery status report.

SES reports a bounce of mail it sent to the sender's Amazon SNS topic, and a
topic with an e-mail subscription mails it on: a text/plain message from
SNS whose body is the SES notification as JSON, either bare (the "email"
protocol, followed by SNS's unsubscribe footer) or as the string "Message"
of SNS's own JSON envelope ("email-json"). The format is Amazon's
documented one ("Amazon SNS notification contents for Amazon SES"):
``notificationType`` (``eventType`` from event publishing) is ``Bounce``,
``Complaint`` or ``Delivery``; a bounce has ``bounceType`` (``Permanent``,
``Transient``, ``Undetermined``), ``bounceSubType``, ``reportingMTA``,
``remoteMtaIp`` and ``bouncedRecipients``, each with ``emailAddress`` and,
where the remote server sent a DSN, ``action``, ``status`` and
``diagnosticCode``; ``mail`` describes the message that bounced
(``source``, ``commonHeaders``, ``headers``).

Whatever its bounceType, a bounce notification reports a message SES has
given up on (a soft bounce is retried first): every recipient in it failed
(RFC 3464 §2.3.3 "failed"); the type says only how likely a later message
is to get through. Complaints and delivery notices are not bounces.

Mail relays break long lines (Sendmail's "!", a line end and a blank
inside a 990-character line), and in JSON a raw line end can only be such
a break: those are taken out, and line ends left inside strings are
tolerated. Only the first `JSON_LIMIT` characters are read; the decoder is
linear and its nesting is bounded by the interpreter (a RecursionError is a
reading that failed, like any other).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.message import Message
from typing import Any

from trustmilter.bounce.dsn import (
    MAX_RECIPIENTS,
    RETURNED_FIELD_LENGTH,
    RETURNED_FIELDS,
    Recipient,
    ReturnedMessage,
    address_of,
    typed_value,
)
from trustmilter.mail.mime import decode_text

# SNS delivers a message of at most 256 KB; nothing of a notification is read past it.
JSON_LIMIT = 262_144
# The words that must be in the body before any JSON is decoded.
_MARKERS = ('"notificationType"', '"eventType"', '\\"notificationType\\"', '\\"eventType\\"')
# Sendmail's break of an over-long line: "!", the line end, one blank.
_LINE_BREAK = re.compile(r"!\r?\n ")
# What SES's bounceSubType means, in the words its documentation uses; the
# words go where the remote server's reply would be when there is none.
_SUBTYPE_WORDS = {
    "noemail": "the target email address does not exist",
    "mailboxfull": "the recipient's mailbox is full",
    "messagetoolarge": "the message is too large",
    "contentrejected": "content rejected",
    "attachmentrejected": "content rejected (an attachment)",
    "suppressed": "the address is on the Amazon SES suppression list",
    "onaccountsuppressionlist": "the address is on the account's suppression list",
}


@dataclass(frozen=True)
class SesNotification:
    """What an SES notification said: its kind ("bounce", "complaint",
    "delivery", ...), and for a bounce the reporter, recipients and the
    message that bounced."""

    kind: str
    reporting_mta: str | None = None
    recipients: tuple[Recipient, ...] = ()
    returned: ReturnedMessage | None = None


def _text(message: Message) -> str | None:
    """The body of a one-part text/plain message (SNS sends nothing else)."""
    if message.is_multipart() or message.get_content_type() != "text/plain":
        return None
    data = message.get_payload(decode=True)
    if not isinstance(data, bytes):
        return None
    return decode_text(data[: JSON_LIMIT * 4], message.get_content_charset() or "utf-8")[
        :JSON_LIMIT]


def _decoded(text: str) -> Any:
    """The first JSON object in `text`, or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder(strict=False).raw_decode(text, start)
    except (ValueError, RecursionError):
        return None
    return value


def _notification(text: str) -> dict[str, Any] | None:
    """The SES notification in a body: bare, or inside SNS's envelope."""
    document = _decoded(_LINE_BREAK.sub("", text))
    if isinstance(document, dict) and isinstance(document.get("Message"), str):
        document = _decoded(_LINE_BREAK.sub("", document["Message"]))
    if isinstance(document, dict) and (
            isinstance(document.get("notificationType"), str)
            or isinstance(document.get("eventType"), str)):
        return document
    return None


def _string(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _recipient(entry: Any, bounce: dict[str, Any]) -> Recipient | None:
    if not isinstance(entry, dict):
        return None
    address = address_of(_string(entry.get("emailAddress")))
    if address is None:
        return None
    diagnostic = typed_value(_string(entry.get("diagnosticCode")))
    if diagnostic is None:
        subtype = (_string(bounce.get("bounceSubType")) or "").lower()
        diagnostic = _SUBTYPE_WORDS.get(subtype)
    status = _string(entry.get("status"))
    return Recipient(
        address=address,
        action=(_string(entry.get("action")) or "failed").lower(),
        status=status if status and re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status) else None,
        diagnostic=diagnostic,
        remote_mta=_string(bounce.get("remoteMtaIp")),
    )


def _returned(mail: Any) -> ReturnedMessage | None:
    """The message that bounced, as SES describes it (its headers, and the
    envelope sender it was sent with as its Return-Path)."""
    if not isinstance(mail, dict):
        return None
    common = mail.get("commonHeaders")
    common = common if isinstance(common, dict) else {}

    def first(key: str) -> str | None:
        value = common.get(key)
        if isinstance(value, list):
            value = ", ".join(v for v in value if isinstance(v, str))
        return _string(value)

    return ReturnedMessage(
        message_id=first("messageId"),
        subject=first("subject"),
        from_=first("from"),
        to=first("to"),
        date=first("date"),
        return_path=_string(mail.get("source")),
        fields=_fields(mail.get("headers")),
    )


def _fields(headers: Any) -> tuple[tuple[str, str], ...]:
    """The header fields SES lists (``[{"name": .., "value": ..}]``), bounded."""
    found: list[tuple[str, str]] = []
    for item in (headers if isinstance(headers, list) else [])[:RETURNED_FIELDS]:
        if not isinstance(item, dict):
            continue
        name, value = item.get("name"), item.get("value")
        if isinstance(name, str) and isinstance(value, str):
            found.append((name[:RETURNED_FIELD_LENGTH], value[:RETURNED_FIELD_LENGTH]))
    return tuple(found)


def read_ses(message: Message) -> SesNotification | None:
    """The SES notification `message` carries, or None when it carries none."""
    text = _text(message)
    if text is None or not any(marker in text for marker in _MARKERS):
        return None
    document = _notification(text)
    if document is None:
        return None
    kind = (_string(document.get("notificationType")) or _string(document.get("eventType"))
            or "").lower()
    if kind != "bounce":
        return SesNotification(kind)
    bounce = document.get("bounce")
    bounce = bounce if isinstance(bounce, dict) else {}
    listed = bounce.get("bouncedRecipients")
    recipients = [r for r in (_recipient(entry, bounce) for entry in (
        listed if isinstance(listed, list) else [])[:MAX_RECIPIENTS]) if r is not None]
    return SesNotification(
        kind="bounce",
        reporting_mta=typed_value(_string(bounce.get("reportingMTA"))),
        recipients=tuple(recipients),
        returned=_returned(document.get("mail")),
    )
