"""RFC 3463 enhanced mail system status codes and what they mean.

A bounce is only as useful as the reading of its ``class.subject.detail``
code (docs/rules.md §6): the class says whether the relay will retry
(4 = persistent transient, 5 = permanent), the subject and detail say why.
The tables hold every code of RFC 3463 plus the later IANA registrations
("Simple Mail Transfer Protocol (SMTP) Enhanced Status Codes" registry).
``describe`` never raises: bounces are written by strangers, and a help desk
tool that stops at a malformed code explains nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustmilter.i18n import N_

# The meanings are marked N_ for the catalogs of the readable report (i18n.py) and
# translated where shown; the values stay English (``--json``).

# RFC 3463 §3.1: the class sub-code.
CLASSES: dict[int, tuple[str, str]] = {
    2: ("success", N_("Success")),
    4: ("temporary", N_("Persistent Transient Failure")),
    5: ("permanent", N_("Permanent Failure")),
}

# RFC 3463 §3.2: the subject sub-code.
SUBJECTS: dict[int, str] = {
    0: N_("Other or Undefined Status"),
    1: N_("Addressing Status"),
    2: N_("Mailbox Status"),
    3: N_("Mail System Status"),
    4: N_("Network and Routing Status"),
    5: N_("Mail Delivery Protocol Status"),
    6: N_("Message Content or Media Status"),
    7: N_("Security or Policy Status"),
}

# (subject, detail) -> (meaning, defining RFC). RFC 3463 §3.3-3.10 unless noted.
DETAILS: dict[tuple[int, int], tuple[str, str]] = {
    (0, 0): (N_("Other undefined Status"), "RFC 3463"),
    (1, 0): (N_("Other address status"), "RFC 3463"),
    (1, 1): (N_("Bad destination mailbox address"), "RFC 3463"),
    (1, 2): (N_("Bad destination system address"), "RFC 3463"),
    (1, 3): (N_("Bad destination mailbox address syntax"), "RFC 3463"),
    (1, 4): (N_("Destination mailbox address ambiguous"), "RFC 3463"),
    (1, 5): (N_("Destination address valid"), "RFC 3463"),
    (1, 6): (N_("Destination mailbox has moved, No forwarding address"), "RFC 3463"),
    (1, 7): (N_("Bad sender's mailbox address syntax"), "RFC 3463"),
    (1, 8): (N_("Bad sender's system address"), "RFC 3463"),
    (1, 9): (N_("Message relayed to non-compliant mailer"), "RFC 3886"),
    (1, 10): (N_("Recipient address has null MX"), "RFC 7505"),
    (2, 0): (N_("Other or undefined mailbox status"), "RFC 3463"),
    (2, 1): (N_("Mailbox disabled, not accepting messages"), "RFC 3463"),
    (2, 2): (N_("Mailbox full"), "RFC 3463"),
    (2, 3): (N_("Message length exceeds administrative limit"), "RFC 3463"),
    (2, 4): (N_("Mailing list expansion problem"), "RFC 3463"),
    (3, 0): (N_("Other or undefined mail system status"), "RFC 3463"),
    (3, 1): (N_("Mail system full"), "RFC 3463"),
    (3, 2): (N_("System not accepting network messages"), "RFC 3463"),
    (3, 3): (N_("System not capable of selected features"), "RFC 3463"),
    (3, 4): (N_("Message too big for system"), "RFC 3463"),
    (3, 5): (N_("System incorrectly configured"), "RFC 3463"),
    (3, 6): (N_("Requested priority was changed"), "RFC 6710"),
    (4, 0): (N_("Other or undefined network or routing status"), "RFC 3463"),
    (4, 1): (N_("No answer from host"), "RFC 3463"),
    (4, 2): (N_("Bad connection"), "RFC 3463"),
    (4, 3): (N_("Directory server failure"), "RFC 3463"),
    (4, 4): (N_("Unable to route"), "RFC 3463"),
    (4, 5): (N_("Mail system congestion"), "RFC 3463"),
    (4, 6): (N_("Routing loop detected"), "RFC 3463"),
    (4, 7): (N_("Delivery time expired"), "RFC 3463"),
    (5, 0): (N_("Other or undefined protocol status"), "RFC 3463"),
    (5, 1): (N_("Invalid command"), "RFC 3463"),
    (5, 2): (N_("Syntax error"), "RFC 3463"),
    (5, 3): (N_("Too many recipients"), "RFC 3463"),
    (5, 4): (N_("Invalid command arguments"), "RFC 3463"),
    (5, 5): (N_("Wrong protocol version"), "RFC 3463"),
    (5, 6): (N_("Authentication Exchange line is too long"), "RFC 4954"),
    (6, 0): (N_("Other or undefined media error"), "RFC 3463"),
    (6, 1): (N_("Media not supported"), "RFC 3463"),
    (6, 2): (N_("Conversion required and prohibited"), "RFC 3463"),
    (6, 3): (N_("Conversion required but not supported"), "RFC 3463"),
    (6, 4): (N_("Conversion with loss performed"), "RFC 3463"),
    (6, 5): (N_("Conversion Failed"), "RFC 3463"),
    (6, 6): (N_("Message content not available"), "RFC 4468"),
    (6, 7): (N_("Non-ASCII addresses not permitted for that sender/recipient"), "RFC 6531"),
    (6, 8): (N_("UTF-8 string reply is required, but not permitted by the SMTP client"),
             "RFC 6531"),
    (6, 9): (N_("UTF-8 header message cannot be transferred to one or more recipients"),
             "RFC 6531"),
    (7, 0): (N_("Other or undefined security status"), "RFC 3463"),
    (7, 1): (N_("Delivery not authorized, message refused"), "RFC 3463"),
    (7, 2): (N_("Mailing list expansion prohibited"), "RFC 3463"),
    (7, 3): (N_("Security conversion required but not possible"), "RFC 3463"),
    (7, 4): (N_("Security features not supported"), "RFC 3463"),
    (7, 5): (N_("Cryptographic failure"), "RFC 3463"),
    (7, 6): (N_("Cryptographic algorithm not supported"), "RFC 3463"),
    (7, 7): (N_("Message integrity failure"), "RFC 3463"),
    (7, 8): (N_("Authentication credentials invalid"), "RFC 4954"),
    (7, 9): (N_("Authentication mechanism is too weak"), "RFC 4954"),
    (7, 10): (N_("Encryption Needed"), "RFC 5248"),
    (7, 11): (N_("Encryption required for requested authentication mechanism"), "RFC 4954"),
    (7, 12): (N_("A password transition is needed"), "RFC 4954"),
    (7, 13): (N_("User Account Disabled"), "RFC 5248"),
    (7, 14): (N_("Trust relationship required"), "RFC 5248"),
    (7, 15): (N_("Priority Level is too low"), "RFC 6710"),
    (7, 16): (N_("Message is too big for the specified priority"), "RFC 6710"),
    (7, 17): (N_("Mailbox owner has changed"), "RFC 7293"),
    (7, 18): (N_("Domain owner has changed"), "RFC 7293"),
    (7, 19): (N_("RRVS test cannot be completed"), "RFC 7293"),
    (7, 20): (N_("No passing DKIM signature found"), "RFC 7372"),
    (7, 21): (N_("No acceptable DKIM signature found"), "RFC 7372"),
    (7, 22): (N_("No valid author-matched DKIM signature found"), "RFC 7372"),
    (7, 23): (N_("SPF validation failed"), "RFC 7372"),
    (7, 24): (N_("SPF validation error"), "RFC 7372"),
    (7, 25): (N_("Reverse DNS validation failed"), "RFC 7372"),
    (7, 26): (N_("Multiple authentication checks failed"), "RFC 7372"),
    (7, 27): (N_("Sender address has null MX"), "RFC 7505"),
    (7, 29): (N_("ARC validation failure"), "RFC 8617"),
    (7, 30): (N_("REQUIRETLS support required"), "RFC 8689"),
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
