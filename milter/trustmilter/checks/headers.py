"""RFC 5322 header sanity (docs/rules.md §4: mail from web forms and scripts).

docs/rules.md §4 asks for RFC 5322 formatted mail with correct Subject, From,
To and Reply-To headers. One result named ``headers`` at end of message,
no DNS, no RFC 8601 method: pass without findings, fail with any,
skipped before the message is known. Findings:
- ``headers.from_missing`` / ``headers.from_multiple``: RFC 5322 §3.6
  wants exactly one From; ``headers.from_unparseable``: a From that is not
  an address list with at least one local@domain mailbox;
- ``headers.date_missing``; ``headers.date_invalid`` (unparseable, or
  more than one Date, §3.6);
- ``headers.subject_malformed``: more than one Subject (§3.6), control
  characters, 8-bit bytes that are not UTF-8, or an RFC 2047 encoded word
  that cannot be decoded (bad base64, unknown charset, invalid bytes);
- ``headers.to_malformed`` / ``headers.reply_to_malformed``: present but
  empty, unparseable, or repeated (§3.6);
- ``headers.subject_missing`` / ``headers.to_missing`` /
  ``headers.reply_to_missing``: the field is absent and the policy asks for
  it (`Config.required`). RFC 5322 requires none of them (§3.6: only From
  and Date; To may be left out for Bcc use), but mail from web forms and
  scripts should contain all of them, and plain mail without Reply-To is
  normal: so each is reported only when configured;
- ``headers.message_id_missing`` (§3.6.4 SHOULD);
- ``headers.nul_bytes``: a NUL anywhere in the message (§2.1, RFC 5321 §4.5.2);
- ``headers.line_too_long``: a line over 998 octets (§2.1.1);
- ``headers.mime_too_deep``: MIME parts nested deeper than
  `mail.mime.NESTING_LIMIT` levels (RFC 2046 sets no limit; no mail
  program nests like that, filter evasion does);
  ``headers.mime_too_many_parts``: more than `mail.mime.MAX_PARTS` parts,
  so the rest of the body was not read (by the URI check either);
- ``headers.8bit_unencoded``: header bytes that are not valid UTF-8.
  Valid UTF-8 in header values is accepted without a finding: RFC 6532
  allows it for SMTPUTF8 mail and the milter cannot tell whether the
  client used SMTPUTF8; raw Latin-1 and other legacy bytes are reported.
  The same rule decides raw 8-bit text in the Subject.

Every scan is linear in the message size: no backtracking regular
expressions, and the address fields come from the message's parsed views
(`Message.address_lists`, the one linear parser in mail/addresses.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.config.errors import InvalidField
from trustmilter.mail.addresses import AddressList
from trustmilter.mail.mime import MAX_PARTS, MimeStructure
from trustmilter.mail.text import clip
from trustmilter.model import Message
from trustmilter.results import CheckResult, Finding, Outcome

MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1, without the CRLF

# RFC 2047 §2 encoded-word; each part stops at the first "?" or space.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")


# The optional fields a policy may require, by their `required` spelling.
OPTIONAL_FIELDS = {"subject": "Subject", "to": "To", "reply_to": "Reply-To"}


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Header fields whose absence is a finding (headers.<field>_missing):
    # any of subject, to, reply_to. From and Date are always required.
    required: tuple[str, ...] = ("subject", "to")

    def __post_init__(self) -> None:
        for index, name in enumerate(self.required):
            if name not in OPTIONAL_FIELDS:
                raise InvalidField(("required", index), "one of subject, to, reply_to", name)


def longest_line(raw: bytes) -> tuple[int, int]:
    """(line number, length) of the first line over 998 octets, or (0, 0)."""
    if not _may_have_long_line(raw):  # the usual case
        return 0, 0
    for number, line in enumerate(raw.split(b"\n"), start=1):
        length = len(line) - line.endswith(b"\r")
        if length > MAX_LINE_OCTETS:
            return number, length
    return 0, 0


def _may_have_long_line(raw: bytes) -> bool:
    """Whether `raw` has a run of more than 998 octets without LF.

    Jumps from the last LF within each 999 octets to the next: a few find
    calls per message instead of one object per line (a 100 KB attachment
    has over a thousand lines).
    """
    start = 0  # where a line starts
    while len(raw) - start > MAX_LINE_OCTETS:
        newline = raw.rfind(b"\n", start, start + MAX_LINE_OCTETS + 1)
        if newline < 0:
            return True
        start = newline + 1
    return False


def _decode_word(charset: str, encoding: str, text: str) -> str:
    """The text of one RFC 2047 encoded word; raises ValueError if it has none."""
    charset = charset.split("*", 1)[0]  # RFC 2231 §5 language suffix
    if not text.isascii():
        raise ValueError("8-bit characters inside an encoded word")
    if encoding in "bB":
        try:
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error as error:
            raise ValueError(f"bad base64 ({error})") from None
    else:
        # RFC 2047 §4.2: "_" is a space; a2b_qp leaves bad =XX escapes as they are.
        data = binascii.a2b_qp(text.replace("_", " ").encode("ascii"))
    try:
        return data.decode(charset)
    except LookupError:
        raise ValueError(f"unknown charset {charset!r}") from None
    except UnicodeDecodeError:
        raise ValueError(f"bytes invalid in {charset}") from None


def subject_problem(value: str) -> str:
    """Why a Subject value is malformed, or ''."""
    if _SURROGATE.search(value):
        return "8-bit bytes that are neither UTF-8 nor RFC 2047 encoded"
    if _CONTROL.search(value):
        return "control characters"
    for word in _ENCODED_WORD.finditer(value):
        try:
            text = _decode_word(*word.groups())
        except ValueError as error:
            return f"undecodable encoded word {clip(word.group(), 60)!r}: {error}"
        if _CONTROL.search(text):
            return f"control characters inside {clip(word.group(), 60)!r}"
    return ""


def date_problem(value: str) -> str:
    """Why a Date value is not an RFC 5322 §3.3 date-time, or ''."""
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return f"cannot parse {clip(value)!r}"
    return ""


def _address_findings(name: str, field: str, parsed: tuple[AddressList, ...],
                      values: list[str]) -> list[Finding]:
    """The `name` finding when a To/Reply-To field is repeated, empty or unparseable."""
    if len(parsed) > 1:
        return [Finding(name, f"{len(parsed)} {field} fields")]  # RFC 5322 §3.6
    if not parsed:
        return []
    only, value = parsed[0], values[0]
    if not only.ok:
        return [Finding(name, f"{clip(value)!r}: {only.problems[0]}")]
    if not only.mailboxes and not only.groups:
        # §3.4: an address-list holds at least one address (a group counts).
        return [Finding(name, f"empty {field}")]
    return []


def _fields(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Values by lower-case field name."""
    fields: dict[str, list[str]] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    return fields


def missing_findings(fields: dict[str, list[str]], required: Iterable[str]) -> list[Finding]:
    """`headers.<field>_missing` for each required optional field the message lacks."""
    return [Finding(f"headers.{name}_missing", f"no {OPTIONAL_FIELDS[name]} field")
            for name in required if not fields.get(OPTIONAL_FIELDS[name].lower())]


def header_findings(message: Message, required: Iterable[str] = ()) -> list[Finding]:
    """Every finding for a message's raw bytes and its header fields."""
    raw, headers = message.raw, message.headers
    findings: list[Finding] = []
    nul = raw.find(b"\0")
    if nul >= 0:
        findings.append(Finding("headers.nul_bytes", f"first at octet {nul}"))
    number, length = longest_line(raw)
    if number:
        findings.append(Finding("headers.line_too_long", f"line {number}: {length} octets"))
    fields = _fields(headers)
    sender = fields.get("from", [])
    if not sender:
        findings.append(Finding("headers.from_missing"))
    elif len(sender) > 1:
        findings.append(Finding("headers.from_multiple", f"{len(sender)} From fields"))
    for value, parsed in zip(sender, message.from_lists, strict=True):
        if not parsed.ok or not parsed.mailboxes:
            why = parsed.problems[0] if parsed.problems else "no mailbox"
            findings.append(Finding("headers.from_unparseable", f"{clip(value)!r}: {why}"))
            break
    dates = fields.get("date", [])
    if not dates:
        findings.append(Finding("headers.date_missing"))
    elif len(dates) > 1:
        findings.append(Finding("headers.date_invalid", f"{len(dates)} Date fields"))
    elif problem := date_problem(dates[0]):
        findings.append(Finding("headers.date_invalid", problem))
    subjects = fields.get("subject", [])
    if len(subjects) > 1:
        findings.append(Finding("headers.subject_malformed", f"{len(subjects)} Subject fields"))
    elif subjects and (problem := subject_problem(subjects[0])):
        findings.append(Finding("headers.subject_malformed", problem))
    findings += _address_findings(
        "headers.to_malformed", "To", message.address_lists("To"), fields.get("to", [])
    )
    findings += _address_findings(
        "headers.reply_to_malformed", "Reply-To", message.address_lists("Reply-To"),
        fields.get("reply-to", []),
    )
    findings += missing_findings(fields, required)
    if not fields.get("message-id"):
        findings.append(Finding("headers.message_id_missing"))
    findings += structure_findings(message.mime)
    eight_bit = [name for name, value in headers if _SURROGATE.search(value)]
    if eight_bit:
        shown = ", ".join(dict.fromkeys(eight_bit))
        findings.append(Finding("headers.8bit_unencoded", f"not UTF-8 in {clip(shown)}"))
    return findings


def structure_findings(structure: MimeStructure) -> list[Finding]:
    """Findings for a MIME structure built to be too deep or too big to read."""
    findings = []
    if structure.too_deep:
        findings.append(Finding("headers.mime_too_deep",
                                f"parts nested {structure.depth} levels deep"))
    if structure.truncated:
        findings.append(Finding("headers.mime_too_many_parts",
                                f"more than {MAX_PARTS} parts; the rest was not read"))
    return findings


class HeadersCheck(BaseCheck[Config]):
    """Is the message formatted as RFC 5322 asks?"""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "headers", result="headers", stage=Stage.DATA, waits_on="dns",
        findings={
            "headers.from_missing": "no From header",
            "headers.from_multiple": "more than one From header",
            "headers.from_unparseable": "the From header is not a valid address list",
            "headers.date_missing": "no Date header",
            "headers.date_invalid": "the Date header is not an RFC 5322 date",
            "headers.subject_malformed": "the Subject header is malformed",
            "headers.to_malformed": "the To header is malformed",
            "headers.reply_to_malformed": "the Reply-To header is malformed",
            "headers.subject_missing": "no Subject header (reported only when required)",
            "headers.to_missing": "no To header (reported only when required)",
            "headers.reply_to_missing": "no Reply-To header (reported only when required)",
            "headers.message_id_missing": "no Message-ID header",
            "headers.nul_bytes": "the message contains NUL bytes",
            "headers.line_too_long": "a line is longer than 998 characters",
            "headers.8bit_unencoded": "a header contains raw 8-bit bytes",
            "headers.mime_too_deep": "MIME parts nested deeper than any mail program does",
            "headers.mime_too_many_parts": "more MIME parts than are read; the rest was not",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Report every header defect found; never raises for bad input."""
        message = ctx.message
        if message is None:
            return [CheckResult(self.name, Outcome.SKIPPED, "no message yet")]
        findings = tuple(header_findings(message, self.config.required))
        if not findings:
            return [CheckResult(self.name, Outcome.PASS, "headers well-formed")]
        what = ", ".join(dict.fromkeys(f.name.removeprefix("headers.") for f in findings))
        return [CheckResult(self.name, Outcome.FAIL, what, findings)]
