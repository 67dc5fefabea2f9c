"""Bounces that are no RFC 3464 report: the body texts of common MTAs.

Each reader looks for a marker sentence the MTA has printed for years, then
pulls each failed address and the server's reply out of the text. Markers are
whole sentences so that a person writing about "delivery" is not taken for a
bounce. Postfix always sends an RFC 3464 part (dsn.py reads it); the
Postfix reader here only names the MTA when that part is missing or broken.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from trustmilter.bounce.dsn import Recipient
from trustmilter.bounce.status import find_basic, find_enhanced

_ADDRESS = r"[^\s<>@()\"',;]+@[^\s<>@()\"',;:]+"


@dataclass(frozen=True)
class TextReport:
    """What the body text of a non-standard bounce said."""

    mta: str
    reporting_mta: str | None
    recipients: tuple[Recipient, ...]
    temporary: bool = False


def _recipient(address: str, diagnostic: str | None, temporary: bool) -> Recipient:
    text = " ".join(diagnostic.split()) if diagnostic else None
    return Recipient(
        address=address.strip("<>").rstrip("."),
        action="delayed" if temporary else "failed",
        status=find_enhanced(text),
        smtp_code=find_basic(text),
        diagnostic=text or None,
    )


def _exim(body: str) -> TextReport | None:
    if "This message was created automatically by mail delivery software" not in body:
        return None
    temporary = "has not yet been delivered" in body or "temporary error" in body
    recipients: list[Recipient] = []
    address: str | None = None
    detail: list[str] = []
    # Exim lists each address indented two spaces, its host and reply indented further.
    for line in body.split("\n"):
        if line.startswith("------ This is a copy"):
            break
        head = re.fullmatch(rf"  <?({_ADDRESS})>?\s*", line)
        if head:
            if address:
                recipients.append(_recipient(address, "\n".join(detail), temporary))
            address, detail = head.group(1), []
        elif address and line.startswith("    "):
            detail.append(line)
        elif address and line.strip():
            recipients.append(_recipient(address, "\n".join(detail), temporary))
            address, detail = None, []
    if address:
        recipients.append(_recipient(address, "\n".join(detail), temporary))
    return TextReport("exim", None, tuple(recipients), temporary)


def _qmail(body: str) -> TextReport | None:
    match = re.search(r"Hi\. This is the qmail-send program at ([^\s.]+(?:\.[^\s.]+)*)", body)
    if match is None:
        return None
    temporary = "temporary" in body.split("\n\n", 2)[0].lower() and "permanent" not in body
    text = body.split("--- Below this line is a copy of the message.")[0]
    recipients = [
        _recipient(m.group(1), m.group(2), temporary)
        for m in re.finditer(rf"(?m)^<({_ADDRESS})>:\n(.*?)(?=\n\s*\n|\Z)", text, re.S)
    ]
    return TextReport("qmail", match.group(1), tuple(recipients), temporary)


def _exchange(body: str) -> TextReport | None:
    if "Delivery has failed to these recipients or groups" not in body:
        return None
    server = re.search(r"Generating server:\s*(\S+)", body)
    diagnostic_part = body.split("Diagnostic information for administrators", 1)[-1]
    diagnostic_part = diagnostic_part.split("Original message headers", 1)[0]
    # "addr\nRemote Server returned '550 5.1.1 ...'" (2013+) or "addr\n#550 5.1.1 ... ##" (2010).
    pattern = rf"(?m)^\s*<?({_ADDRESS})>?\s*\n(?:Remote Server returned '([^\n]*)'|#([^\n]*))"
    recipients = [
        _recipient(m.group(1), (m.group(2) or m.group(3) or "").rstrip("#' "), False)
        for m in re.finditer(pattern, diagnostic_part)
    ]
    if not recipients:  # only the user-facing list: "addr (addr)" or "addr"
        listed = body.split("Delivery has failed to these recipients or groups", 1)[1]
        first = re.search(_ADDRESS, listed)
        recipients = [_recipient(first.group(0), None, False)] if first else []
    return TextReport("exchange", server.group(1) if server else None, tuple(recipients))


def _gmail(body: str) -> TextReport | None:
    temporary = "Delivery incomplete" in body or "There was a temporary problem" in body
    if not ("Address not found" in body or "Message not delivered" in body or temporary):
        return None
    addresses = re.findall(
        rf"(?:wasn't delivered to|delivering your message to|"
        rf"Your message couldn't be delivered to)\s+<?({_ADDRESS})>?", body)
    reply = re.search(r"The response (?:from the remote server )?was:\s*\n?\s*([^\n]+)", body)
    if not addresses:
        return None
    diagnostic = reply.group(1) if reply else None
    recipients = [_recipient(a.rstrip("."), diagnostic, temporary) for a in addresses]
    return TextReport("gmail", None, tuple(recipients), temporary)


def _yahoo(body: str) -> TextReport | None:
    marker = "Sorry, we were unable to deliver your message to the following address"
    if marker not in body:
        return None
    text = body.split(marker, 1)[1].split("--- Below this line is a copy of the message.")[0]
    recipients = [
        _recipient(m.group(1), m.group(2), False)
        for m in re.finditer(rf"(?m)^<({_ADDRESS})>:\n(.*?)(?=\n\s*\n|\Z)", text, re.S)
    ]
    return TextReport("yahoo", None, tuple(recipients))


def _sendmail(body: str) -> TextReport | None:
    section = re.search(
        r"----- The following addresses had (permanent fatal|transient non-fatal) errors -----\n"
        r"(.*?)(?=\n\s*\n|\n\s*-----|\Z)", body, re.S)
    if section is None:
        return None
    temporary = section.group(1).startswith("transient")
    recipients: list[Recipient] = []
    for m in re.finditer(rf"(?m)^<?({_ADDRESS})>?[ \t]*\n?(?:[ \t]+\(reason: ([^\n]*)\))?",
                         section.group(2)):
        recipients.append(_recipient(m.group(1), m.group(2), temporary))
    return TextReport("sendmail", None, tuple(recipients), temporary)


def _postfix(body: str) -> TextReport | None:
    match = re.search(r"This is the mail system at host ([^\s.]+(?:\.[^\s.]+)*)", body)
    if match is None:
        return None
    temporary = "This is a warning message only" in body
    # Postfix repeats each reply in the text part: "<addr>: host X said: 550 ..."
    recipients = [
        _recipient(m.group(1), m.group(2), temporary)
        for m in re.finditer(rf"(?m)^<({_ADDRESS})>(?: \([^)]*\))?: (.*?)(?=\n\s*\n|\Z)",
                             body, re.S)
    ]
    return TextReport("postfix", match.group(1), tuple(recipients), temporary)


READERS: tuple[Callable[[str], TextReport | None], ...] = (
    _postfix, _exim, _qmail, _exchange, _gmail, _yahoo, _sendmail,
)


def read_text(body: str) -> TextReport | None:
    """The first reader that recognises ``body``, or None for no known bounce text."""
    text = body.replace("\r\n", "\n")
    for reader in READERS:
        report = reader(text)
        if report is not None:
            return report
    return None
