"""RFC 5322 header sanity (SEED-RULES §4: mail from web forms and scripts).

SEED-RULES §4 asks for RFC 5322 formatted mail with correct Subject, From,
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
  empty, unparseable, or repeated (§3.6); a missing To is fine (Bcc use);
- ``headers.message_id_missing`` (§3.6.4 SHOULD);
- ``headers.nul_bytes``: a NUL anywhere in the message (§2.1, RFC 5321 §4.5.2);
- ``headers.line_too_long``: a line over 998 octets (§2.1.1);
- ``headers.8bit_unencoded``: header bytes that are not valid UTF-8.
  Valid UTF-8 in header values is accepted without a finding: RFC 6532
  allows it for SMTPUTF8 mail and the milter cannot tell whether the
  client used SMTPUTF8; raw Latin-1 and other legacy bytes are reported.
  The same rule decides raw 8-bit text in the Subject.

Every scan is linear in the message size: no backtracking regular
expressions, and the address parser here (not email.headerregistry, whose
parser is quadratic on long or unbalanced input) consumes its input once.
`parse_address_list` is shared with the names check.
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
from trustmilter.memo import remembered_when
from trustmilter.results import CheckResult, Finding, Outcome

MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1, without the CRLF
MAX_DETAIL = 120  # characters of header text quoted in a finding

_SPACE = re.compile(r"\s+")
# An atom here is any run of characters that are not RFC 5322 specials or
# space; dots stay inside so dot-atoms come out whole.
_ATOM = re.compile(r'[^\s"(),:;<>@\[\]\\]+')
# Quoted-string / domain-literal bodies with backslash escapes, unrolled so
# matching is linear.
_QUOTED_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_LITERAL_BODY = re.compile(r"[^\]\\]*(?:\\.[^\]\\]*)*", re.DOTALL)
_COMMENT_PIECE = re.compile(r"[^()\\]+|\\.|[()]|\\\Z", re.DOTALL)
_SPECIALS = frozenset(",:;<>@")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9_-]+\Z")
# RFC 2047 §2 encoded-word; each part stops at the first "?" or space.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One local@domain with its display name, as written."""

    local: str
    domain: str
    display: str = ""

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"


@dataclass(frozen=True, slots=True)
class AddressList:
    """What `parse_address_list` found; `problems` is empty for a valid list."""

    mailboxes: tuple[Mailbox, ...]
    problems: tuple[str, ...]
    groups: int = 0  # named groups, which may be empty ("undisclosed-recipients:;")

    @property
    def ok(self) -> bool:
        return not self.problems


Token = tuple[str, str]  # (kind, text): kind is "atom", "quoted", "literal" or a special


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """`text` shortened for a finding's detail."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "..."


def _tokens(value: str) -> tuple[list[Token], list[str]]:
    """Split an address field into RFC 5322 §3.2 tokens; comments are dropped."""
    tokens: list[Token] = []
    problems: list[str] = []
    i, end = 0, len(value)
    while i < end:
        char = value[i]
        if char.isspace():
            space = _SPACE.match(value, i)
            i = space.end() if space else i + 1
        elif char in _SPECIALS:
            tokens.append((char, char))
            i += 1
        elif char == '"':
            body = _QUOTED_BODY.match(value, i + 1)
            assert body is not None  # the pattern matches the empty string
            if body.end() >= end:
                problems.append("unterminated quoted string")
                break
            tokens.append(("quoted", body.group()))
            i = body.end() + 1
        elif char == "[":
            body = _LITERAL_BODY.match(value, i + 1)
            assert body is not None
            if body.end() >= end:
                problems.append("unterminated domain literal")
                break
            tokens.append(("literal", "[" + body.group() + "]"))
            i = body.end() + 1
        elif char == "(":
            i = _comment_end(value, i)
            if i < 0:
                problems.append("unterminated comment")
                break
        elif char in ")]\\":
            problems.append(f"stray {char!r}")
            i += 1
        else:
            atom = _ATOM.match(value, i)
            assert atom is not None
            tokens.append(("atom", atom.group()))
            i = atom.end()
    return tokens, problems


def _comment_end(value: str, start: int) -> int:
    """The index after the comment opening at `start` (comments nest, §3.2.2), or -1."""
    depth = 0
    for piece in _COMMENT_PIECE.finditer(value, start):
        text = piece.group()
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth == 0:
                return piece.end()
    return -1


def _valid_domain(domain: str) -> bool:
    """A dot-atom domain of non-empty labels (RFC 6532 U-labels allowed), or a literal."""
    if domain.startswith("["):
        return domain.endswith("]")
    labels = domain.split(".")
    return all(
        label and (_DOMAIN_LABEL.match(label) or (not label.isascii() and
                                                   not _SURROGATE.search(label)))
        for label in labels
    )


def _addr_spec(tokens: list[Token], problems: list[str], display: str = "") -> Mailbox | None:
    """local-part "@" domain (RFC 5322 §3.4.1), or None with a problem noted."""
    text = "".join(t for _, t in tokens)
    ats = [i for i, (kind, _) in enumerate(tokens) if kind == "@"]
    if not ats:
        problems.append(f"no @ in {clip(text)!r}")
        return None
    at = ats[-1]
    local, domain = tokens[:at], tokens[at + 1 :]
    if not local or any(kind not in ("atom", "quoted") for kind, _ in local):
        problems.append(f"bad local part in {clip(text)!r}")
        return None
    if len(domain) != 1 or domain[0][0] not in ("atom", "literal") or not _valid_domain(
        domain[0][1]
    ):
        problems.append(f"bad domain in {clip(text)!r}")
        return None
    return Mailbox("".join(t for _, t in local), domain[0][1], display)


def _mailbox(item: list[Token], problems: list[str]) -> Mailbox | None:
    """One name-addr or addr-spec (RFC 5322 §3.4)."""
    kinds = [kind for kind, _ in item]
    if "<" not in kinds:
        return _addr_spec(item, problems)
    left = kinds.index("<")
    if ">" not in kinds[left:]:
        problems.append("unclosed <")
        return None
    right = left + kinds[left:].index(">")
    if item[right + 1 :]:
        problems.append("text after >")
    display = " ".join(t for _, t in item[:left])
    inside = item[left + 1 : right]
    colons = [i for i, (kind, _) in enumerate(inside) if kind == ":"]
    if colons and inside[0][0] == "@":
        inside = inside[colons[0] + 1 :]  # RFC 5322 §4.4 obs-route: ignored
    if not inside:
        problems.append("empty <>")
        return None
    return _addr_spec(inside, problems, display)


# Address lists up to this long are remembered (several checks read each
# message's From, and senders repeat); longer ones are parsed each time.
MEMO_VALUE_CHARS = 512


@remembered_when(lambda value: len(value) <= MEMO_VALUE_CHARS, maxsize=2048)
def parse_address_list(value: str) -> AddressList:
    """The mailboxes of an RFC 5322 §3.4 address-list (groups included), leniently.

    Linear in len(value). Empty list elements and a group without its
    closing ";" are tolerated (both are common and harmless); everything
    else that is not an address is a problem.
    """
    tokens, problems = _tokens(value)
    mailboxes: list[Mailbox] = []
    item: list[Token] = []
    in_angle = in_group = False
    groups = 0

    def finish() -> None:
        if item:
            mailbox = _mailbox(item, problems)
            if mailbox is not None:
                mailboxes.append(mailbox)
            item.clear()

    for token in tokens:
        kind = token[0]
        if kind == "<":
            if in_angle:
                problems.append("nested <")
            in_angle = True
            item.append(token)
        elif kind == ">":
            if not in_angle:
                problems.append("stray >")
            in_angle = False
            item.append(token)
        elif in_angle:
            item.append(token)
        elif kind == ":":
            # group = display-name ":" [group-list] ";" (RFC 5322 §3.4)
            if in_group or not item:
                problems.append("misplaced :")
            item.clear()
            in_group = True
            groups += 1
        elif kind == ";":
            if not in_group:
                problems.append("stray ;")
            finish()
            in_group = False
        elif kind == ",":
            finish()
        else:
            item.append(token)
    if in_angle:
        problems.append("unclosed <")
    finish()
    return AddressList(tuple(mailboxes), tuple(problems), groups)


def longest_line(raw: bytes) -> tuple[int, int]:
    """(line number, length) of the first line over 998 octets, or (0, 0)."""
    if len(raw) <= MAX_LINE_OCTETS:
        return 0, 0
    lines = raw.split(b"\n")
    if max(map(len, lines)) <= MAX_LINE_OCTETS:  # the usual case, at C speed
        return 0, 0
    for number, line in enumerate(lines, start=1):
        length = len(line) - line.endswith(b"\r")
        if length > MAX_LINE_OCTETS:
            return number, length
    return 0, 0


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


def _address_findings(name: str, field: str, values: list[str]) -> list[Finding]:
    """The `name` finding when a To/Reply-To field is repeated, empty or unparseable."""
    if len(values) > 1:
        return [Finding(name, f"{len(values)} {field} fields")]  # RFC 5322 §3.6
    if not values:
        return []
    parsed = parse_address_list(values[0])
    if not parsed.ok:
        return [Finding(name, f"{clip(values[0])!r}: {parsed.problems[0]}")]
    if not parsed.mailboxes and not parsed.groups:
        # §3.4: an address-list holds at least one address (a group counts).
        return [Finding(name, f"empty {field}")]
    return []


def _fields(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Values by lower-case field name."""
    fields: dict[str, list[str]] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    return fields


def header_findings(raw: bytes, headers: tuple[tuple[str, str], ...]) -> list[Finding]:
    """Every finding for a message's raw bytes and its (name, value) header fields."""
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
    for value in sender:
        parsed = parse_address_list(value)
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
    findings += _address_findings("headers.to_malformed", "To", fields.get("to", []))
    findings += _address_findings(
        "headers.reply_to_malformed", "Reply-To", fields.get("reply-to", [])
    )
    if not fields.get("message-id"):
        findings.append(Finding("headers.message_id_missing"))
    eight_bit = [name for name, value in headers if _SURROGATE.search(value)]
    if eight_bit:
        shown = ", ".join(dict.fromkeys(eight_bit))
        findings.append(Finding("headers.8bit_unencoded", f"not UTF-8 in {clip(shown)}"))
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
            "headers.message_id_missing": "no Message-ID header",
            "headers.nul_bytes": "the message contains NUL bytes",
            "headers.line_too_long": "a line is longer than 998 characters",
            "headers.8bit_unencoded": "a header contains raw 8-bit bytes",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Report every header defect found; never raises for bad input."""
        message = ctx.message
        if message is None:
            return [CheckResult(self.name, Outcome.SKIPPED, "no message yet")]
        findings = tuple(header_findings(message.raw, message.headers))
        if not findings:
            return [CheckResult(self.name, Outcome.PASS, "headers well-formed")]
        what = ", ".join(dict.fromkeys(f.name.removeprefix("headers.") for f in findings))
        return [CheckResult(self.name, Outcome.FAIL, what, findings)]
