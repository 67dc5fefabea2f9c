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

from trustmilter.bounce.causes import Cause, cause_from_words
from trustmilter.bounce.dsn import MAX_RECIPIENTS, Recipient
from trustmilter.bounce.status import find_basic
from trustmilter.bounce.text import report_text

_ADDRESS = r"[^\s<>@()\"',;]+@[^\s<>@()\"',;:]+"
# The first address in free text. A search for _ADDRESS alone retried from every
# character of a long run of local-part characters with no "@" after it
# (quadratic: 100 KB took 16 s); a match can only start where such a run starts,
# and there the search finds the same leftmost match.
_FIRST_ADDRESS = re.compile(rf"(?<![^\s<>@()\"',;]){_ADDRESS}")
# Gmail's "The response was:", the reply taken after the blanks that follow.
_GMAIL_REPLY_LEAD = re.compile(r"The response (?:from the remote server )?was:")
_BLANKS = re.compile(r"\s*")
# Postfix's "<address>" at the start of a line, and the reply after it up to an
# empty line (or the end).
_POSTFIX_HEAD = re.compile(rf"<({_ADDRESS})>")
_TO_EMPTY_LINE = re.compile(r"(.*?)(?=\n\s*\n|\Z)", re.S)


def addresses_in(text: str) -> set[str]:
    """Every address `text` names, lower case, without a trailing dot."""
    return {m.group(0).rstrip(".").lower() for m in _FIRST_ADDRESS.finditer(text)}


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
        smtp_code=find_basic(text),
        diagnostic=text or None,
    )


# Where Exim's list of failed addresses begins: after "A message sent by\n\n
# <sender>\n\ncould not be delivered to one or more of its recipients" (a
# message it forwarded names its sender, indented as a recipient would be).
_EXIM_LIST_LEAD = re.compile(r"(?:could not be|has not yet been) delivered to one or more of its")


def _exim(body: str) -> TextReport | None:
    if "This message was created automatically by mail delivery software" not in body:
        return None
    temporary = "has not yet been delivered" in body or "temporary error" in body
    recipients: list[Recipient] = []
    address: str | None = None
    detail: list[str] = []
    lead = _EXIM_LIST_LEAD.search(body)
    # Exim lists each address indented two spaces, its host and reply indented further.
    for line in body[lead.start() if lead else 0 :].split("\n"):
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
    # Blanks before the address stay on its line: "^\s*" also crossed empty lines,
    # and was tried from each of them (quadratic in a run of empty lines: 100 KB
    # took over 20 s). An address can only start a line's first non-blank
    # character either way, so the matches are the same.
    pattern = (
        rf"(?m)^[^\S\n]*<?({_ADDRESS})>?\s*\n(?:Remote Server returned '([^\n]*)'|#([^\n]*))"
    )
    recipients = [
        _recipient(m.group(1), (m.group(2) or m.group(3) or "").rstrip("#' "), False)
        for m in re.finditer(pattern, diagnostic_part)
    ]
    if not recipients:  # only the user-facing list: "addr (addr)" or "addr"
        listed = body.split("Delivery has failed to these recipients or groups", 1)[1]
        first = _FIRST_ADDRESS.search(listed)
        recipients = [_recipient(first.group(0), None, False)] if first else []
    return TextReport("exchange", server.group(1) if server else None, tuple(recipients))


def _gmail(body: str) -> TextReport | None:
    temporary = "Delivery incomplete" in body or "There was a temporary problem" in body
    if not ("Address not found" in body or "Message not delivered" in body or temporary):
        return None
    addresses = re.findall(
        rf"(?:wasn't delivered to|delivering your message to|"
        rf"Your message couldn't be delivered to)\s+<?({_ADDRESS})>?", body)
    diagnostic = _gmail_reply(body)
    if not addresses:
        return None
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
        _recipient(address, reply, temporary) for address, reply in _postfix_replies(body)
    ]
    return TextReport("postfix", match.group(1), tuple(recipients), temporary)


def _gmail_reply(body: str) -> str | None:
    r"""Group 1 of re.search(r"The response (?:from the remote server )?was:\s*\n?\s*([^\n]+)",
    body), in linear time.

    Its three runs of blanks could share one run every possible way, and when
    the run ended the text it tried them all (100 KB of line ends: over 20 s).
    The reply is the rest of the line from the first character after the run;
    a run that ends the text gives way back to its last blank that is no line end.
    """
    for lead in _GMAIL_REPLY_LEAD.finditer(body):
        blanks = _BLANKS.match(body, lead.end())
        assert blanks is not None  # \s* matches the empty string
        start = blanks.end()
        if start == len(body):
            start = len(body.rstrip("\n")) - 1
            if start < lead.end():
                continue  # only line ends after the lead: no reply there
        line_end = body.find("\n", start)
        return body[start : line_end if line_end >= 0 else len(body)]
    return None


def _postfix_replies(body: str) -> list[tuple[str, str]]:
    r"""(address, reply) for each match of
    re.finditer(rf"(?m)^<({_ADDRESS})>(?: \([^)]*\))?: (.*?)(?=\n\s*\n|\Z)", body, re.S),
    in linear time.

    "[^)]*" looked for the next ")" afresh from every line starting "<address> (",
    across lines: quadratic in such lines with no ")" after them (100 KB: over
    20 s). Here each line start is tried in turn as finditer does, and the next
    ")" is looked for only past the last one found.
    """
    found: list[tuple[str, str]] = []
    close = -1  # the first ")" at or after where one was last looked for; len(body): none
    line = 0
    while True:
        head = _POSTFIX_HEAD.match(body, line)
        reply_at = -1
        if head is not None:
            after = head.end()
            if body.startswith(" (", after):
                if close < after + 2:
                    close = body.find(")", after + 2)
                    if close < 0:
                        close = len(body)
                if close < len(body) and body.startswith(": ", close + 1):
                    reply_at = close + 3
            elif body.startswith(": ", after):
                reply_at = after + 2
        if head is not None and reply_at >= 0:
            reply = _TO_EMPTY_LINE.match(body, reply_at)
            assert reply is not None  # (.*?) up to \Z always matches
            found.append((head.group(1), reply.group(1)))
            # A match ends before a line end (or at the end), never at a line start.
            line = body.find("\n", reply.end())
        else:
            line = body.find("\n", line)
        if line < 0:
            return found
        line += 1


# A failed address alone on its line ("<a@example.jp>", "a@example.jp:").
_ADDRESS_LINE = re.compile(rf"(?m)^[^\S\n]*<?({_ADDRESS})>?[^\S\n]*:?[^\S\n]*$")
# A line that names a failed address after a label: au's (KDDI) "Recipient:
# <a@example.jp>" (its SMTP transcript follows), au one net's "Could not be
# delivered to: <a@example.jp>" (the reason follows).
_LABELLED_ADDRESS = re.compile(
    rf"[^\S\n]*(?:Recipient|Could not be delivered to):[^\S\n]*<?({_ADDRESS})>?[^\S\n]*",
    re.IGNORECASE)


def _listed_recipients(text: str) -> list[Recipient]:
    """The recipients of a notice that lists each failed address on a line of
    its own (alone, or after a label), each with the lines that follow it up
    to an empty line as its reason: the remote server's replies ("<<< 550
    ...") where the notice copies the SMTP session, else the text (our own
    commands, ">>> RCPT TO:...", are not the reason)."""
    found: list[Recipient] = []
    address: str | None = None
    reason: list[str] = []
    for line in text.split("\n"):
        head = _ADDRESS_LINE.fullmatch(line) or _LABELLED_ADDRESS.fullmatch(line)
        if head is not None:
            if address is not None:
                found.append(_recipient(address, _reason(reason), False))
            if len(found) >= MAX_RECIPIENTS:
                return found
            address, reason = head.group(1), []
        elif address is not None and line.strip():
            reason.append(line.strip())
        elif address is not None and reason:
            found.append(_recipient(address, _reason(reason), False))
            address, reason = None, []
    if address is not None:
        found.append(_recipient(address, _reason(reason), False))
    return found


def _reason(lines: list[str]) -> str:
    """The remote server's replies among `lines` ("<<< ..."), else the lines
    that are not our own commands (">>> ...")."""
    replies = [line[3:].strip() for line in lines if line.startswith("<<<")]
    return "\n".join(replies or [line for line in lines if not line.startswith(">>>")])


# The texts of Japanese mobile carriers (au/KDDI ezweb, NTT docomo, SoftBank)
# and the MTAs of Japanese providers: "the message to the following address
# could not be sent/delivered", then the addresses, one per line, alone or
# after a label, each with its reason (in English) after it.
_JAPANESE_MARKER = re.compile(
    "(?:送信|配信|配送|お届け)(?:することが)?できませんでした|届きませんでした|宛先不明")


def _japanese(body: str) -> TextReport | None:
    if _JAPANESE_MARKER.search(body) is None:
        return None
    text = body.split("--- Below this line is a copy of the message.")[0]
    recipients = _listed_recipients(text)
    return TextReport("japanese", None, tuple(recipients)) if recipients else None


# Characters of a reason shared by all the recipients a notice lists.
_REASON_LIMIT = 1000


def _notes(body: str) -> TextReport | None:
    """Lotus Notes / Domino's own notice: the reason and the failed addresses
    between "------- Failure Reasons --------" and "------- Returned Message"."""
    start = body.find("------- Failure Reasons")
    if start < 0:
        return None
    line_end = body.find("\n", start)
    if line_end < 0:  # nothing after the marker's line
        return TextReport("notes", None, ())
    end = body.find("------- Returned Message", line_end)
    block = body[line_end + 1 : end if end >= 0 else len(body)]
    addresses = [m.group(1) for m in _ADDRESS_LINE.finditer(block)]
    reason = " ".join(line.strip() for line in block.split("\n")
                      if line.strip() and _ADDRESS_LINE.fullmatch(line) is None)
    return TextReport("notes", None, tuple(
        _recipient(a, reason[:_REASON_LIMIT], False) for a in addresses[:MAX_RECIPIENTS]))


# Notices that name one address and the reason right after a fixed sentence.
# Each sentence is followed by a window of at most _REACH characters, and the
# address and reason are read inside it only (linear in the text).
_REACH = 600
_ATTEMPTS_MARKER = "Delivery failed "
_ONE_ADDRESS_NOTICES = (
    # "Sorry, unable to deliver your message to a@example.com for the following
    # reason:\n\n 552 Quota violation for b@example.com"
    ("unable to deliver your message to ", re.compile(
        rf"<?(?P<address>{_ADDRESS})>?\s{{1,5}}for\s{{1,5}}the\s{{1,5}}following\s{{1,5}}"
        r"reason:(?P<reason>.*)", re.S)),
    # 'Delivery of email to this address\n\n"a@example.ch"\n\nhas failed due to a full mailbox.'
    ("Delivery of email to this address", re.compile(
        rf"\s{{0,20}}\"?<?(?P<address>{_ADDRESS})>?\"?\s{{0,20}}(?P<reason>has failed.*)", re.S)),
    # "Delivery failed 10 attempts: a@example.net" on a line of its own: the
    # count of attempts is all the reason it gives.
    (_ATTEMPTS_MARKER, re.compile(
        rf"(?P<reason>(?:after )?\d{{1,4}} attempts?):[^\S\n]{{0,5}}<?(?P<address>{_ADDRESS})>?"
        r"[^\S\n]*(?:\n|\Z)")),
)


def _one_address(body: str) -> TextReport | None:
    """The first of `_ONE_ADDRESS_NOTICES` that `body` is: its address and reason."""
    for marker, pattern in _ONE_ADDRESS_NOTICES:
        at = body.find(marker)
        if at < 0:
            continue
        start = at + len(marker)
        match = pattern.match(body[start : start + _REACH])
        if match is None:
            continue
        reason = match.group("reason").strip().split("\n\n")[0]
        if marker == _ATTEMPTS_MARKER:
            reason = marker + reason
        return TextReport("text", None, (_recipient(match.group("address"), reason, False),))
    return None


def _interscan(body: str) -> TextReport | None:
    """Trend Micro InterScan VirusWall's notice, which names no recipient."""
    if "Message from InterScan E-Mail VirusWall" not in body or (
            "could not be delivered" not in body):
        return None
    return TextReport("interscan", None, ())


# au's (KDDI) older notice in English only: the failed addresses on lines of
# their own, above or below this sentence, before the returned headers that
# follow a line of dashes.
_AU_REJECTED = re.compile(
    r"Each of the following recipients was rejected by a remote\s{1,5}mail server")
_DASHES = re.compile(r"(?m)^-{10,}[^\S\n]*$")


def _au_rejected(body: str) -> TextReport | None:
    if _AU_REJECTED.search(body) is None:
        return None
    end = _DASHES.search(body)
    recipients = _listed_recipients(body[: end.start() if end else len(body)])
    return TextReport("japanese", None, tuple(recipients)) if recipients else None


# A notice in labelled lines (a German provider's own): "reject reason:
# Mailbox full" and "target mail address: a@example.net". Both labels must be
# there: one alone is too common in ordinary mail.
_LABELLED_REASON = re.compile(r"(?im)^[^\S\n]*(?:reject|rejection|bounce|failure) reason:"
                              r"[^\S\n]*([^\n]{1,300})$")
_LABELLED_TARGET = re.compile(
    rf"(?im)^[^\S\n]*(?:target|recipient|failed)(?: e-?mail| mail)? address:[^\S\n]*"
    rf"<?({_ADDRESS})>?[^\S\n]*$")


def _labelled(body: str) -> TextReport | None:
    text = report_text(body)
    reason = _LABELLED_REASON.search(text)
    target = _LABELLED_TARGET.search(text) if reason else None
    if reason is None or target is None:
        return None
    return TextReport("text", None, (_recipient(target.group(1), reason.group(1), False),))


# GroupWise's "The message that you sent was undeliverable to the following:",
# then each address on its line with the reason in brackets after it
# ("recipient@example.net (user not found)"), up to an empty line.
_UNDELIVERABLE_TO = re.compile(
    r"(?:was|were) undeliverable to the following(?: recipients?| addresses)?:")
_ADDRESS_WITH_REASON = re.compile(
    rf"[^\S\n]*<?({_ADDRESS})>?(?:[^\S\n]{{1,10}}\(([^()\n]{{0,300}})\))?[^\S\n]*")


def _undeliverable_to(body: str) -> TextReport | None:
    lead = _UNDELIVERABLE_TO.search(body)
    if lead is None:
        return None
    recipients: list[Recipient] = []
    for line in body[lead.end() :].split("\n")[1:]:
        listed = _ADDRESS_WITH_REASON.fullmatch(line)
        if listed is not None:
            recipients.append(_recipient(listed.group(1), listed.group(2), False))
            if len(recipients) >= MAX_RECIPIENTS:
                break
        elif line.strip() or recipients:  # the list ends at its first other line
            break
    return TextReport("groupwise", None, tuple(recipients)) if recipients else None


# A refusal sent after the mail was accepted, worded as a note to the sender
# (some sites send it dressed as an auto-reply: From <>, Auto-Submitted:
# auto-replied): "You sent mail to a@example.net. That's not a valid user here."
# Read only when the words after the address say it cannot take mail: an
# auto-reply that says "You sent mail to a@example.net; I am away" is none.
_YOU_SENT_TO = re.compile(
    rf"\b[Yy]ou sent (?:mail|a message|an e-?mail|e-?mail) to <?({_ADDRESS})>?")
_DEAD_ADDRESS = frozenset({
    Cause.USER_UNKNOWN, Cause.HOST_UNKNOWN, Cause.MAILBOX_DISABLED, Cause.MAILBOX_FULL})


def _you_sent_to(body: str) -> TextReport | None:
    named = _YOU_SENT_TO.search(body)
    if named is None:
        return None
    reason = body[named.end() : named.end() + _REACH].split("\n\n")[0].lstrip(".,: \n")
    if cause_from_words(reason) not in _DEAD_ADDRESS:
        return None
    return TextReport("text", None, (_recipient(named.group(1), reason, False),))


READERS: tuple[Callable[[str], TextReport | None], ...] = (
    _postfix, _exim, _qmail, _exchange, _gmail, _yahoo, _sendmail, _notes, _one_address,
    _interscan, _japanese, _au_rejected, _labelled, _undeliverable_to, _you_sent_to,
)


def read_text(body: str) -> TextReport | None:
    """The first reader that recognises ``body``, or None for no known bounce text."""
    text = body.replace("\r\n", "\n")
    for reader in READERS:
        report = reader(text)
        if report is not None:
            return report
    return None
