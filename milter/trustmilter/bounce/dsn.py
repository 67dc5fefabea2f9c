"""RFC 3464 delivery status notifications, read as real MTAs write them.

A DSN is ``multipart/report; report-type=delivery-status`` (RFC 6522): a
human-readable part, a ``message/delivery-status`` part (one per-message
block, then one block per recipient, RFC 3464 §2.2-2.3) and the returned
message or its headers. Real reports bend every rule, so the status part is
read here by our own lenient field parser rather than by the email
package's: found by its content type whatever the report-type says (or by
its first field when it is labelled text/plain), its transfer encoding
undone, line ends of any kind, blocks split at blank lines and also where a
new recipient starts without one, unknown address types (X.400, LOCAL,
``system;<>``) and comments tolerated. Everything tolerates truncated or
malformed reports: what can be read is returned, the rest stays None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from trustmilter.mail.mime import decode_text

_RETURNED_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                   "message/global", "message/global-headers")
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status",
                 # as `unwrapped_status_parts` renames them before parsing
                 "text/delivery-status", "text/global-delivery-status")
# The email package parses a message/delivery-status part into one Message per
# block: a part of a million blank lines took minutes. Renamed to text/, it is
# one string, read by `parse_fields` here.
_STATUS_TYPE = re.compile(rb"message/((?:global-)?delivery-status)", re.IGNORECASE)


def unwrapped_status_parts(raw: bytes) -> bytes:
    """`raw` with its delivery-status parts labelled text/... (see _STATUS_TYPE)."""
    return _STATUS_TYPE.sub(rb"text/\1", raw)
# A status part is read up to this many characters: real ones are a few KB.
STATUS_TEXT_LIMIT = 256_000
# Recipients read from one report; the rest are left out (bounds the work per bounce).
MAX_RECIPIENTS = 1000
# Fields of a returned message kept for later checks (whose mail it was).
RETURNED_FIELDS = 100
RETURNED_FIELD_LENGTH = 998  # RFC 5322 §2.1.1

_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)")
# An address in angle brackets, else a bare one (RFC 5321 forward-paths).
_BRACKETED = re.compile(r"<([^<>\s]*@[^<>\s]*)>")
# A quoted local part (RFC 5321 §4.1.2), at most 256 characters of it.
_QUOTED = re.compile(r'"(?:[^"\\\r\n]|\\.){0,256}"@[^\s<>()",;:]+')
# A match can only start where a run of address characters starts: searched
# from every character of a long run without "@", it would be quadratic.
_BARE = re.compile(r"(?<![^\s<>()\"',;:])[^\s<>()\"',;:]+@[^\s<>()\"',;:]+")
# X.400 addresses carry the Internet one as RFC-822=local(a)domain (RFC 2156 §4.2).
_X400_RFC822 = re.compile(r"/RFC-822=([^/]+)/", re.IGNORECASE)
# A line of a multi-line SMTP reply: its code, then "-" or a blank.
_REPLY_LINE = re.compile(r"[245]\d\d[- ]")
_ENHANCED_AT_START = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_BASIC_AT_START = re.compile(r"\s*([245][0-5]\d)(?!\d)")


@dataclass(frozen=True)
class Recipient:
    """One recipient a bounce reports on, as written (no interpretation yet).

    `address` is the failed address as the report names it (RFC 3464
    Final-Recipient); `original_recipient` the address the sender used
    where the report says (Original-Recipient, or "expanded from" in a
    text); `status` only the report's own Status field."""

    address: str
    action: str | None = None
    status: str | None = None  # enhanced code of the Status field, "5.1.1"
    smtp_code: str | None = None  # basic code, "550"
    diagnostic: str | None = None
    original_recipient: str | None = None
    remote_mta: str | None = None
    temporary: bool | None = None  # a text reader's opinion: a delay notice


@dataclass(frozen=True)
class ReturnedMessage:
    """The headers that identify the original mail (docs/rules.md §6), and all
    of its fields (bounded) for whoever must tell whose mail it was."""

    message_id: str | None = None
    subject: str | None = None
    from_: str | None = None
    to: str | None = None
    date: str | None = None
    return_path: str | None = None
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DsnReport:
    """What a delivery-status part said."""

    reporting_mta: str | None
    recipients: tuple[Recipient, ...]
    returned: ReturnedMessage | None


def _unfold(value: str | None) -> str | None:
    if value is None:
        return None
    text = " ".join(value.split())
    return text or None


def typed_value(value: str | None) -> str | None:
    """Drop the RFC 3464 §2.1.2 type prefix ("rfc822;", "dns;", "smtp;") and blanks."""
    text = _unfold(value)
    if text is None:
        return None
    prefix, separator, rest = text.partition(";")
    if separator and prefix.strip() and " " not in prefix.strip():
        text = rest.strip()
    return text or None


def address_of(value: str | None) -> str | None:
    """The Internet address in an RFC 3464 recipient field, whatever its type;
    None for one with none ("system;<>", an X.400 address without RFC-822=)."""
    text = _unfold(value)
    if text is None:
        return None
    kind, separator, rest = text.partition(";")
    if not separator:
        kind, rest = "", text
    if kind.strip().lower() == "x400":
        match = _X400_RFC822.search(rest + "/")
        return match.group(1).replace("(a)", "@") if match else None
    quoted = _QUOTED.search(rest)
    if quoted:
        return quoted.group(0)
    bracketed = _BRACKETED.search(rest)
    if bracketed and bracketed.group(1):
        return bracketed.group(1)
    bare = _BARE.search(rest)
    return bare.group(0).rstrip(".") if bare else None


def _action(value: str | None) -> str | None:
    """The action's keyword, lower case: "failed (Bad destination...)" -> "failed";
    the "failure" and "error" some MTAs write are read as "failed"."""
    text = typed_value(value)
    if text is None:
        return None
    word = re.sub(r"[^a-z]", "", text.split()[0].lower())
    if word in ("failure", "error", "fail"):
        return "failed"
    return word or None


def parse_fields(text: str) -> list[list[tuple[str, str]]]:
    """The field blocks of a delivery-status text (RFC 3464 §2.1): blocks end
    at blank lines, or where a recipient field repeats within one; folded
    lines are joined, and so are the unfolded lines of a multi-line reply;
    other lines that are no field are passed over."""
    blocks: list[list[tuple[str, str]]] = []
    # The open block's fields, each value as its lines (joined once it is
    # closed: joining line by line copied the value again for every line).
    block: list[tuple[str, list[str]]] = []
    names: set[str] = set()  # of the fields in `block`

    def close() -> None:
        if block:
            blocks.append([(name, " ".join(lines)) for name, lines in block])
            block.clear()
            names.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            close()
            continue
        if line[0] in " \t":
            if block:
                block[-1][1].append(line.strip())
            continue
        match = _FIELD.match(line)
        if match is None:
            if block and _REPLY_LINE.match(line):
                # A multi-line reply written on unfolded lines ("550-first",
                # "550 last", RFC 5321 §4.2.1): the rest of the field before it.
                block[-1][1].append(line.strip())
            continue
        name = match.group(1).lower()
        if name in ("final-recipient", "original-recipient") and name in names:
            close()
        block.append((name, [match.group(2).strip()]))
        names.add(name)
    close()
    return blocks


def _field(block: list[tuple[str, str]], name: str) -> str | None:
    for field, value in block:
        if field == name:
            return value
    return None


def _recipient(block: list[tuple[str, str]]) -> Recipient | None:
    final = address_of(_field(block, "final-recipient"))
    original = address_of(_field(block, "original-recipient"))
    address = final or original
    if address is None:
        return None
    diagnostic = typed_value(_field(block, "diagnostic-code"))
    # X.400 gateways put the remote server's reply in a field of their own.
    extra = typed_value(_field(block, "x400-supplementary-info"))
    if extra:
        diagnostic = f"{diagnostic} {extra}" if diagnostic else extra
    status_field = _field(block, "status") or ""
    status = _ENHANCED_AT_START.match(status_field)
    if not diagnostic and status is None and status_field.strip():
        # "Status: 553 Exceeded maximum inbound message size": a reply, not a code.
        diagnostic = _unfold(status_field)
    basic = _BASIC_AT_START.match(diagnostic or "") or _BASIC_AT_START.match(status_field)
    return Recipient(
        address=address,
        action=_action(_field(block, "action")),
        status=status.group(1) if status else None,
        smtp_code=basic.group(1) if basic else None,
        diagnostic=diagnostic,
        original_recipient=original,
        remote_mta=typed_value(_field(block, "remote-mta")),
    )


def unescaped(text: str) -> str:
    """Text the email package read from bytes (8-bit bytes kept as surrogates,
    compat32), as Unicode: UTF-8 where it is, else replacement characters."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _block_text(block: Message) -> str:
    """A block the email package parsed, as the lines it came from (its own
    serialisation would encode 8-bit values as RFC 2047 words)."""
    lines = [f"{name}: {value}" for name, value in block.raw_items()]
    body = block.get_payload()
    if isinstance(body, str) and body.strip():
        lines.append(body)
    return "\n".join(lines)


def _part_text(part: Message) -> str:
    """The text of a status part, its transfer encoding undone, 8-bit text read
    as UTF-8 (RFC 6533) where the part names no charset."""
    payload = part.get_payload()
    if isinstance(payload, list):  # a message the caller did not unwrap
        text = "\n\n".join(_block_text(block) for block in payload if isinstance(block, Message))
        return unescaped(text)[:STATUS_TEXT_LIMIT]
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return decode_text(data[: STATUS_TEXT_LIMIT * 4], part.get_content_charset() or "utf-8")[
        :STATUS_TEXT_LIMIT]


def _looks_like_status(part: Message) -> bool:
    """A text part that is really a status part (some MTAs label it text/plain)."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return False
    head = payload.lstrip()[:200].lower()
    return head.startswith(("reporting-mta:", "final-recipient:", "original-recipient:"))


def _header(message: Message, name: str) -> str | None:
    """A field's value as sent (raw_items: the email package would turn 8-bit
    bytes into replacement characters), unfolded."""
    wanted = name.lower()
    for field, value in message.raw_items():
        if field.lower() == wanted:
            return _unfold(unescaped(str(value)))
    return None


def returned_from_headers(headers: Message) -> ReturnedMessage:
    """The identifying headers of a returned message (or of its header block)."""
    fields = tuple(
        (str(name), unescaped(str(value))[:RETURNED_FIELD_LENGTH])
        for name, value in list(headers.raw_items())[:RETURNED_FIELDS]
    )
    return ReturnedMessage(
        message_id=_header(headers, "Message-ID"),
        subject=_header(headers, "Subject"),
        from_=_header(headers, "From"),
        to=_header(headers, "To"),
        date=_header(headers, "Date"),
        return_path=_header(headers, "Return-Path"),
        fields=fields,
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


# A field that only a status part's text has (RFC 3464 §2.2, §2.3) at the start of a line.
_STATUS_FIELD = re.compile(r"^(?:reporting-mta|final-recipient|original-recipient)[ \t]*:",
                           re.IGNORECASE | re.MULTILINE)


def has_status_fields(text: str) -> bool:
    """Whether `text` is a status part's text, not a person's words labelled so."""
    return _STATUS_FIELD.search(text) is not None


def is_status_part(part: Message) -> bool:
    """Whether `part` is labelled a delivery-status part (any of its spellings)."""
    return part.get_content_type() in _STATUS_TYPES


def delivery_status_part(message: Message) -> Message | None:
    """The delivery-status part (RFC 3464 §2), or a text part that is one; None.

    Of several parts labelled delivery-status, the first whose text has the
    fields of one: some MTAs (InterMail) label their human-readable part so
    too, before the real one."""
    labelled: Message | None = None
    found: Message | None = None
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in _STATUS_TYPES:
            if has_status_fields(_part_text(part)):
                return part
            labelled = labelled or part
        elif found is None and content_type == "text/plain" and _looks_like_status(part):
            found = part
    return found or labelled


def is_report(message: Message) -> bool:
    """True for RFC 6522 ``multipart/report; report-type=delivery-status``."""
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == "delivery-status"
    )


def parse_dsn(message: Message) -> DsnReport | None:
    """The DSN in ``message``; None when it carries no delivery-status part.

    Several blocks for one recipient (alias expansion writes one per
    target) are one recipient: the first block is kept."""
    part = delivery_status_part(message)
    if part is None:
        return None
    reporting_mta = None
    recipients: list[Recipient] = []
    seen: set[str] = set()
    for block in parse_fields(_part_text(part)):
        reporting_mta = reporting_mta or typed_value(_field(block, "reporting-mta"))
        recipient = _recipient(block)
        if recipient is None or len(recipients) >= MAX_RECIPIENTS:
            continue
        key = (recipient.original_recipient or recipient.address).lower()
        if key not in seen:
            seen.add(key)
            recipients.append(recipient)
    return DsnReport(reporting_mta, tuple(recipients), returned_message(message))
