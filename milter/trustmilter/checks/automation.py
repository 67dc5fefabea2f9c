"""Automated mail: no-reply senders, bulk and list mail, auto-replies, other
help desks' output, bounces.

docs/rules.md §5 and §7: bulk mail and machine-generated mail create no
ticket by default (they go to the suspended queue), and neither does mail
from "no-reply" style addresses; bounces that come in from outside belong
there too (§6). Answering any of them automatically is how loops start,
above all an automatic reply or another help desk's acknowledgement:
two machines answering each other for ever.
Two checks, both reporting results named ``automation``:
- `AutomationSenderCheck` (``automation.envelope``, at MAIL): the null
  sender is a bounce (RFC 5321 §4.5.5) -> ``auto.bounce``; a no-reply
  style envelope sender -> ``auto.noreply_sender``.
- `AutomationMessageCheck` (``automation.message``, at end of message):
  a no-reply style From (``auto.noreply_sender``); bulk or list mail
  (``auto.bulk``: Precedence bulk/junk/list, List-Id (RFC 2919),
  List-Unsubscribe (RFC 2369)); an automatic reply (``auto.autoreply``:
  RFC 3834 ``auto-replied``, X-Autoreply and kin, Exchange's inbox-rule
  replies, an auto-reply Subject in English, German, French, Japanese and
  more: see autoreply_signs.py, which says where each sign comes from);
  another help desk's or list robot's output (``auto.helpdesk``: X-Loop,
  X-OTRS-Loop, X-RT-Loop-Prevention, X-Zendesk-From-Account-Id...);
  other machine-generated mail (``auto.machine_generated``: Auto-Submitted
  other than "no" or "auto-replied" (RFC 3834 §5), X-Auto-Response-Suppress
  asking to suppress all responses, a multipart/report other than a
  delivery report); a delivery status report (``auto.bounce``:
  multipart/report; report-type=delivery-status, RFC 3464 §2, RFC 6522).
  A report is never an automatic reply: its Auto-Submitted counts as
  machine-generated, as a DSN's "auto-replied" from Postfix always did.
  An automatic reply is not reported as machine-generated besides.

Outcome fail with any finding, else pass; skipped before the message is
known. The parsing functions below are pure and take plain values, so the
policy rules can be tested without a milter; `is_autoreply` is the one
answer to "is this an automatic reply?" for other checks and rules. No
DNS, no state; nothing raises for odd input (a malformed header simply
does not match), and everything is linear in the header's size.
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from trustmilter.checks.autoreply_signs import (
    autoreply_header_reasons,
    autoreply_subject,
    helpdesk_reasons,
    suppresses_all,
    token,
)
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage, skipped
from trustmilter.config.errors import InvalidField
from trustmilter.mail.text import clip
from trustmilter.model import Message
from trustmilter.results import CheckResult, Finding, Outcome

RESULT = "automation"

# Local parts of no-reply style senders (docs/rules.md §5). Matched as a whole
# word of the local part, so "noreply", "no-reply+4711", "info.noreply",
# "do_not_reply" and "MAILER-DAEMON" match, "snoreplyx" does not.
_SEP = r"[-_.]?"
BUILT_IN_NOREPLY = re.compile(
    rf"(?:^|[^a-z0-9])(?:no{_SEP}reply|do{_SEP}not{_SEP}reply|mailer{_SEP}daemon)(?:$|[^a-z0-9])",
    re.IGNORECASE,
)
# RFC 3834 §5 / RFC 2076: Precedence values that mark bulk and list mail.
BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
# List header fields: RFC 2919 (List-Id), RFC 2369 (List-Unsubscribe).
LIST_HEADERS = ("List-Id", "List-Unsubscribe")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Extra regular expressions (Python syntax, case-insensitive), searched
    # in the sender's local part, on top of the built-in no-reply words.
    noreply_patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for index, pattern in enumerate(self.noreply_patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                raise InvalidField(
                    ("noreply_patterns", index), f"a regular expression ({error})", pattern
                ) from None

    def compiled(self) -> tuple[re.Pattern[str], ...]:
        """The built-in pattern and the configured ones, compiled."""
        return (BUILT_IN_NOREPLY, *(re.compile(p, re.IGNORECASE) for p in self.noreply_patterns))


# ---- pure parsing ------------------------------------------------------------


def local_part(address: str) -> str:
    """The local part of an envelope address or a mailbox ('' for the null sender)."""
    return address.rpartition("@")[0] if "@" in address else address


def is_noreply(address: str, patterns: tuple[re.Pattern[str], ...]) -> bool:
    """True if the local part of `address` matches a no-reply pattern."""
    local = local_part(address)
    return bool(local) and any(p.search(local) for p in patterns)


def bulk_reasons(headers: tuple[tuple[str, str], ...]) -> list[str]:
    """Why the header marks bulk or list mail (empty: it does not)."""
    reasons = []
    for name, value in headers:
        lower = name.lower()
        if lower == "precedence" and token(value) in BULK_PRECEDENCE:
            reasons.append(f"Precedence: {token(value)}")
        elif lower in (h.lower() for h in LIST_HEADERS):
            reasons.append(f"{name} present")
    return list(dict.fromkeys(reasons))


def auto_submitted(value: str) -> bool:
    """RFC 3834 §5: any Auto-Submitted value other than "no" marks automated mail."""
    keyword = token(value)
    # §5: "no" alone means written by a human; an empty value is malformed, so
    # it is treated as the sender's claim of automation rather than ignored.
    return keyword != "no"


def machine_reasons(headers: tuple[tuple[str, str], ...], *, replied: bool = False) -> list[str]:
    """Why the header marks machine-generated mail (empty: it does not).

    "Auto-Submitted: auto-replied" counts only with `replied` (a report's);
    otherwise it marks an automatic reply, `autoreply_reasons`' business.
    """
    reasons = []
    for name, value in headers:
        lower = name.lower()
        if (lower == "auto-submitted" and auto_submitted(value)
                and (replied or token(value) != "auto-replied")):
            reasons.append(f"Auto-Submitted: {clip(token(value) or value, 40)}")
        elif lower == "x-auto-response-suppress" and suppresses_all(value):
            # [MS-OXCMAIL] §2.1.3.2.20: a request to responders. "All" is what
            # notification senders write (GitHub, GitLab, Zendesk); Outlook puts
            # "DR, RN, NRN, OOF, AutoReply" on mail people write: no sign.
            reasons.append("X-Auto-Response-Suppress: All")
    return list(dict.fromkeys(reasons))


def autoreply_reasons(headers: tuple[tuple[str, str], ...], subject: str | None) -> list[str]:
    """Why the header fields and Subject mark an automatic reply (empty: they do not)."""
    reasons = autoreply_header_reasons(headers)
    words = autoreply_subject(subject) if subject else None
    if words is not None:
        reasons.append(f"Subject {words!r}")
    return reasons


def is_autoreply(message: Message) -> tuple[str, ...]:
    """Why `message` is an automatic reply (RFC 3834), or () when it is not.

    A report (multipart/report: a bounce, a read receipt) is never one:
    it is answered by nobody, and the bounce check reads it.
    """
    if report_type(message.header("Content-Type")) is not None:
        return ()
    return tuple(autoreply_reasons(message.headers, message.header("Subject")))


def report_type(content_type: str | None) -> str | None:
    """The report-type of a multipart/report Content-Type (RFC 6522 §3), else None.

    "" for a multipart/report without report-type. Parsed by the standard
    library's MIME header code, which tolerates any input.
    """
    if not content_type:
        return None
    holder = email.message.Message()
    holder["Content-Type"] = content_type
    if holder.get_content_type() != "multipart/report":
        return None
    value = holder.get_param("report-type")
    if isinstance(value, tuple):  # RFC 2231 encoded: (charset, language, text)
        value = value[2]
    return str(value or "").strip().lower()


def message_findings(
    message: Message, patterns: tuple[re.Pattern[str], ...]
) -> list[Finding]:
    """Every automation finding the message header gives."""
    findings: list[Finding] = []
    noreply = [m.address for m in message.from_mailboxes if is_noreply(m.address, patterns)]
    if noreply:
        findings.append(Finding("auto.noreply_sender", f"From {clip(', '.join(noreply))}"))
    headers = message.headers
    bulk = bulk_reasons(headers)
    if bulk:
        findings.append(Finding("auto.bulk", clip("; ".join(bulk))))
    autoreply = is_autoreply(message)
    if autoreply:
        findings.append(Finding("auto.autoreply", clip("; ".join(autoreply))))
    helpdesk = helpdesk_reasons(headers)
    if helpdesk:
        findings.append(Finding("auto.helpdesk", clip("; ".join(helpdesk))))
    kind = report_type(message.header("Content-Type"))
    # A report's "auto-replied" (Postfix writes it on its DSNs) is machine-made.
    machine = [] if autoreply else machine_reasons(headers, replied=kind is not None)
    if kind == "delivery-status":
        # RFC 3464 §2: a DSN is multipart/report; report-type=delivery-status.
        findings.append(Finding("auto.bounce", "multipart/report; report-type=delivery-status"))
    elif kind is not None:
        # Read receipts (RFC 8098), abuse reports (RFC 5965)...: all generated.
        machine.append(f"multipart/report; report-type={clip(kind, 40) or '(none)'}")
    if machine:
        findings.append(Finding("auto.machine_generated", clip("; ".join(machine))))
    return findings


def _result(findings: list[Finding]) -> CheckResult:
    if findings:
        reason = "; ".join(f"{f.name.removeprefix('auto.')}: {f.detail}" for f in findings)
        return CheckResult(RESULT, Outcome.FAIL, clip(reason), tuple(findings))
    return CheckResult(RESULT, Outcome.PASS, "no sign of automated mail")


# What each finding means; each check reports those it can see.
FINDINGS: Mapping[str, str] = MappingProxyType({
    "auto.noreply_sender": "the sender's local part is no-reply style (noreply, mailer-daemon...)",
    "auto.bulk": "bulk or list mail (Precedence bulk/junk/list, List-Id, List-Unsubscribe)",
    "auto.autoreply": "an automatic reply (RFC 3834 auto-replied, X-Autoreply, Exchange's"
                      " out-of-office, an auto-reply Subject in English, German, French,"
                      " Japanese...)",
    "auto.helpdesk": "another help desk's or list robot's own output (X-Loop, X-OTRS-Loop,"
                     " X-RT-Loop-Prevention, X-Zendesk-From-Account-Id...)",
    "auto.machine_generated": "machine-generated, not a reply (Auto-Submitted auto-generated,"
                              " X-Auto-Response-Suppress: All, a report other than a DSN)",
    "auto.bounce": "a bounce: the null sender, or a multipart/report delivery-status report",
})


# ---- the checks ----------------------------------------------------------------


class AutomationSenderCheck(BaseCheck[Config]):
    """The envelope sender: the null sender, or a no-reply address."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "automation.envelope", result=RESULT, stage=Stage.MAIL, waits_on="dns",
        findings={n: FINDINGS[n] for n in ("auto.noreply_sender", "auto.bounce")},
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.patterns = config.compiled()

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Classify MAIL FROM."""
        sender = ctx.envelope.mail_from
        findings = []
        if ctx.envelope.null_sender:
            # RFC 5321 §4.5.5: notifications (bounces) use the null reverse-path.
            findings.append(Finding("auto.bounce", "null sender"))
        elif is_noreply(sender, self.patterns):
            findings.append(Finding("auto.noreply_sender", f"MAIL FROM {clip(sender)}"))
        return [_result(findings)]


class AutomationMessageCheck(BaseCheck[Config]):
    """The header: no-reply From, bulk, machine-generated, delivery reports."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "automation.message", result=RESULT, stage=Stage.DATA, waits_on="dns", findings=FINDINGS,
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.patterns = config.compiled()

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Report every sign of automation in the header."""
        if ctx.message is None:
            return [skipped(RESULT, "no message yet")]
        return [_result(message_findings(ctx.message, self.patterns))]
