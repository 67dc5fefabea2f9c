"""RFC 3464 delivery status notifications, read with the stdlib ``email`` package.

A DSN is ``multipart/report; report-type=delivery-status`` (RFC 6522): a
human-readable part, a ``message/delivery-status`` part (one per-message
block, then one block per recipient, RFC 3464 §2.2-2.3) and the returned
message or its headers (``message/rfc822`` / ``text/rfc822-headers``).
Everything here tolerates truncated or malformed reports: what can be read
is returned, the rest stays None.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from trustmilter.bounce.status import find_basic, find_enhanced

_RETURNED_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


@dataclass(frozen=True)
class Recipient:
    """One recipient a bounce reports on, as written (no interpretation yet)."""

    address: str
    action: str | None = None
    status: str | None = None  # enhanced code, "5.1.1"
    smtp_code: str | None = None  # basic code, "550"
    diagnostic: str | None = None
    original_recipient: str | None = None
    remote_mta: str | None = None


@dataclass(frozen=True)
class ReturnedMessage:
    """The headers that identify the original mail (docs/rules.md §6)."""

    message_id: str | None = None
    subject: str | None = None
    from_: str | None = None
    to: str | None = None
    date: str | None = None
    return_path: str | None = None


@dataclass(frozen=True)
class DsnReport:
    """What a ``message/delivery-status`` part said."""

    reporting_mta: str | None
    recipients: tuple[Recipient, ...]
    returned: ReturnedMessage | None


def _typed_value(value: str | None) -> str | None:
    """Drop the RFC 3464 §2.1.2 type prefix ("rfc822;", "dns;", "smtp;") and whitespace."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if ";" in text:
        prefix, rest = text.split(";", 1)
        if prefix.strip() and " " not in prefix.strip():
            text = rest.strip()
    return text or None


def _address(value: str | None) -> str | None:
    text = _typed_value(value)
    return text.strip("<>") if text else None


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part; stdlib parses them, else we split."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    parser = HeaderParser()
    chunks = [c for c in text.replace("\r\n", "\n").split("\n\n") if c.strip()]
    return [parser.parsestr(chunk.strip("\n") + "\n") for chunk in chunks]


def _recipient(block: Message) -> Recipient | None:
    address = _address(block.get("Final-Recipient")) or _address(block.get("Original-Recipient"))
    if address is None:
        return None
    diagnostic = _typed_value(block.get("Diagnostic-Code"))
    status_field = _typed_value(block.get("Status"))
    status = find_enhanced(status_field) if status_field else None
    return Recipient(
        address=address,
        action=(_typed_value(block.get("Action")) or "").lower() or None,
        status=status or find_enhanced(diagnostic),
        smtp_code=find_basic(diagnostic),
        diagnostic=diagnostic,
        original_recipient=_address(block.get("Original-Recipient")),
        remote_mta=_typed_value(block.get("Remote-MTA")),
    )


def _header(message: Message, name: str) -> str | None:
    value = message.get(name)
    return " ".join(str(value).split()) or None if value is not None else None


def returned_from_headers(headers: Message) -> ReturnedMessage:
    """The identifying headers of a returned message (or of its header block)."""
    return ReturnedMessage(
        message_id=_header(headers, "Message-ID"),
        subject=_header(headers, "Subject"),
        from_=_header(headers, "From"),
        to=_header(headers, "To"),
        date=_header(headers, "Date"),
        return_path=_header(headers, "Return-Path"),
    )


def returned_message(message: Message) -> ReturnedMessage | None:
    """The returned message attached to a report, if one is."""
    for part in message.walk():
        if part.get_content_type() not in _RETURNED_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return returned_from_headers(payload[0])
        if isinstance(payload, str) and payload.strip():
            return returned_from_headers(HeaderParser().parsestr(payload.lstrip("\r\n")))
    return None


def delivery_status_part(message: Message) -> Message | None:
    """The ``message/delivery-status`` part (RFC 3464 §2), or None."""
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            return part
    return None


def is_report(message: Message) -> bool:
    """True for RFC 6522 ``multipart/report; report-type=delivery-status``."""
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == "delivery-status"
    )


def parse_dsn(message: Message) -> DsnReport | None:
    """The DSN in ``message``; None when it carries no delivery-status part."""
    part = delivery_status_part(message)
    if part is None:
        return None
    blocks = _blocks(part)
    reporting_mta = None
    recipients: list[Recipient] = []
    for block in blocks:
        reporting_mta = reporting_mta or _typed_value(block.get("Reporting-MTA"))
        recipient = _recipient(block)
        if recipient is not None:
            recipients.append(recipient)
    return DsnReport(reporting_mta, tuple(recipients), returned_message(message))
