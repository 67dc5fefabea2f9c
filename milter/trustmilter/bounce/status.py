"""RFC 3463 enhanced mail system status codes and what they mean.

A bounce is only as useful as the reading of its ``class.subject.detail``
code (SEED-RULES.md §6): the class says whether the relay will retry
(4 = persistent transient, 5 = permanent), the subject and detail say why.
The tables hold every code of RFC 3463 plus the later IANA registrations
("Simple Mail Transfer Protocol (SMTP) Enhanced Status Codes" registry).
``describe`` never raises: bounces are written by strangers, and a help desk
tool that stops at a malformed code explains nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 3463 §3.1: the class sub-code.
CLASSES: dict[int, tuple[str, str]] = {
    2: ("success", "Success"),
    4: ("temporary", "Persistent Transient Failure"),
    5: ("permanent", "Permanent Failure"),
}

# RFC 3463 §3.2: the subject sub-code.
SUBJECTS: dict[int, str] = {
    0: "Other or Undefined Status",
    1: "Addressing Status",
    2: "Mailbox Status",
    3: "Mail System Status",
    4: "Network and Routing Status",
    5: "Mail Delivery Protocol Status",
    6: "Message Content or Media Status",
    7: "Security or Policy Status",
}

# (subject, detail) -> (meaning, defining RFC). RFC 3463 §3.3-3.10 unless noted.
DETAILS: dict[tuple[int, int], tuple[str, str]] = {
    (0, 0): ("Other undefined Status", "RFC 3463"),
    (1, 0): ("Other address status", "RFC 3463"),
    (1, 1): ("Bad destination mailbox address", "RFC 3463"),
    (1, 2): ("Bad destination system address", "RFC 3463"),
    (1, 3): ("Bad destination mailbox address syntax", "RFC 3463"),
    (1, 4): ("Destination mailbox address ambiguous", "RFC 3463"),
    (1, 5): ("Destination address valid", "RFC 3463"),
    (1, 6): ("Destination mailbox has moved, No forwarding address", "RFC 3463"),
    (1, 7): ("Bad sender's mailbox address syntax", "RFC 3463"),
    (1, 8): ("Bad sender's system address", "RFC 3463"),
    (1, 9): ("Message relayed to non-compliant mailer", "RFC 3886"),
    (1, 10): ("Recipient address has null MX", "RFC 7505"),
    (2, 0): ("Other or undefined mailbox status", "RFC 3463"),
    (2, 1): ("Mailbox disabled, not accepting messages", "RFC 3463"),
    (2, 2): ("Mailbox full", "RFC 3463"),
    (2, 3): ("Message length exceeds administrative limit", "RFC 3463"),
    (2, 4): ("Mailing list expansion problem", "RFC 3463"),
    (3, 0): ("Other or undefined mail system status", "RFC 3463"),
    (3, 1): ("Mail system full", "RFC 3463"),
    (3, 2): ("System not accepting network messages", "RFC 3463"),
    (3, 3): ("System not capable of selected features", "RFC 3463"),
    (3, 4): ("Message too big for system", "RFC 3463"),
    (3, 5): ("System incorrectly configured", "RFC 3463"),
    (3, 6): ("Requested priority was changed", "RFC 6710"),
    (4, 0): ("Other or undefined network or routing status", "RFC 3463"),
    (4, 1): ("No answer from host", "RFC 3463"),
    (4, 2): ("Bad connection", "RFC 3463"),
    (4, 3): ("Directory server failure", "RFC 3463"),
    (4, 4): ("Unable to route", "RFC 3463"),
    (4, 5): ("Mail system congestion", "RFC 3463"),
    (4, 6): ("Routing loop detected", "RFC 3463"),
    (4, 7): ("Delivery time expired", "RFC 3463"),
    (5, 0): ("Other or undefined protocol status", "RFC 3463"),
    (5, 1): ("Invalid command", "RFC 3463"),
    (5, 2): ("Syntax error", "RFC 3463"),
    (5, 3): ("Too many recipients", "RFC 3463"),
    (5, 4): ("Invalid command arguments", "RFC 3463"),
    (5, 5): ("Wrong protocol version", "RFC 3463"),
    (5, 6): ("Authentication Exchange line is too long", "RFC 4954"),
    (6, 0): ("Other or undefined media error", "RFC 3463"),
    (6, 1): ("Media not supported", "RFC 3463"),
    (6, 2): ("Conversion required and prohibited", "RFC 3463"),
    (6, 3): ("Conversion required but not supported", "RFC 3463"),
    (6, 4): ("Conversion with loss performed", "RFC 3463"),
    (6, 5): ("Conversion Failed", "RFC 3463"),
    (6, 6): ("Message content not available", "RFC 4468"),
    (6, 7): ("Non-ASCII addresses not permitted for that sender/recipient", "RFC 6531"),
    (6, 8): ("UTF-8 string reply is required, but not permitted by the SMTP client",
             "RFC 6531"),
    (6, 9): ("UTF-8 header message cannot be transferred to one or more recipients",
             "RFC 6531"),
    (7, 0): ("Other or undefined security status", "RFC 3463"),
    (7, 1): ("Delivery not authorized, message refused", "RFC 3463"),
    (7, 2): ("Mailing list expansion prohibited", "RFC 3463"),
    (7, 3): ("Security conversion required but not possible", "RFC 3463"),
    (7, 4): ("Security features not supported", "RFC 3463"),
    (7, 5): ("Cryptographic failure", "RFC 3463"),
    (7, 6): ("Cryptographic algorithm not supported", "RFC 3463"),
    (7, 7): ("Message integrity failure", "RFC 3463"),
    (7, 8): ("Authentication credentials invalid", "RFC 4954"),
    (7, 9): ("Authentication mechanism is too weak", "RFC 4954"),
    (7, 10): ("Encryption Needed", "RFC 5248"),
    (7, 11): ("Encryption required for requested authentication mechanism", "RFC 4954"),
    (7, 12): ("A password transition is needed", "RFC 4954"),
    (7, 13): ("User Account Disabled", "RFC 5248"),
    (7, 14): ("Trust relationship required", "RFC 5248"),
    (7, 15): ("Priority Level is too low", "RFC 6710"),
    (7, 16): ("Message is too big for the specified priority", "RFC 6710"),
    (7, 17): ("Mailbox owner has changed", "RFC 7293"),
    (7, 18): ("Domain owner has changed", "RFC 7293"),
    (7, 19): ("RRVS test cannot be completed", "RFC 7293"),
    (7, 20): ("No passing DKIM signature found", "RFC 7372"),
    (7, 21): ("No acceptable DKIM signature found", "RFC 7372"),
    (7, 22): ("No valid author-matched DKIM signature found", "RFC 7372"),
    (7, 23): ("SPF validation failed", "RFC 7372"),
    (7, 24): ("SPF validation error", "RFC 7372"),
    (7, 25): ("Reverse DNS validation failed", "RFC 7372"),
    (7, 26): ("Multiple authentication checks failed", "RFC 7372"),
    (7, 27): ("Sender address has null MX", "RFC 7505"),
    (7, 29): ("ARC validation failure", "RFC 8617"),
    (7, 30): ("REQUIRETLS support required", "RFC 8689"),
}

# RFC 3463 §2: class "." subject "." detail, subject and detail 1-3 digits.
_CODE = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\s*$")
# An enhanced code inside reply text ("550 5.1.1 <a@b>: ..."), not part of an IP/version.
_IN_TEXT = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
# RFC 5321 §4.2: the three-digit basic reply code at the start of a reply line.
_BASIC = re.compile(r"(?<![\d.])([245][0-5]\d)(?:[ \-:]|$)")


@dataclass(frozen=True)
class StatusMeaning:
    """What one enhanced status code says; ``valid`` False for text that is no code."""

    code: str
    valid: bool
    klass: int | None = None
    class_name: str | None = None  # "success" | "temporary" | "permanent"
    class_meaning: str | None = None
    subject_meaning: str | None = None
    detail_meaning: str | None = None
    reference: str | None = None

    @property
    def permanent(self) -> bool:
        return self.klass == 5

    @property
    def temporary(self) -> bool:
        return self.klass == 4

    @property
    def known(self) -> bool:
        """True when the detail is in the registry (not only class and subject)."""
        return self.detail_meaning is not None


def describe(code: object) -> StatusMeaning:
    """The meaning of ``code`` ("5.1.1"); unknown parts are None, never an exception."""
    text = code if isinstance(code, str) else ""
    match = _CODE.match(text)
    if match is None:
        return StatusMeaning(code=text.strip(), valid=False)
    klass, subject, detail = (int(group) for group in match.groups())
    class_name, class_meaning = CLASSES[klass]
    entry = DETAILS.get((subject, detail))
    return StatusMeaning(
        code=f"{klass}.{subject}.{detail}",
        valid=True,
        klass=klass,
        class_name=class_name,
        class_meaning=class_meaning,
        subject_meaning=SUBJECTS.get(subject),
        detail_meaning=entry[0] if entry else None,
        reference=entry[1] if entry else None,
    )


def find_enhanced(text: str | None) -> str | None:
    """The first enhanced status code in free reply text, or None."""
    if not text:
        return None
    match = _IN_TEXT.search(text)
    return match.group(1) if match else None


def find_basic(text: str | None) -> str | None:
    """The first RFC 5321 three-digit reply code (2xx/4xx/5xx) in text, or None."""
    if not text:
        return None
    match = _BASIC.search(text)
    return match.group(1) if match else None


def all_codes() -> list[str]:
    """Every registered code in every class, for tests and documentation."""
    return [f"{k}.{s}.{d}" for k in sorted(CLASSES) for (s, d) in sorted(DETAILS)]
