"""The help desk's digest: one mail listing what was held since the last one.

NAME
    digest - compose the digest mail of newly held messages

DESCRIPTION
    `compose_digest` turns the held messages of one window (from the last
    digest up to now) into an `EmailMessage` for the help-desk team: for
    each message its queue ID, arrival and age, envelope sender, recipients,
    subject and the reasons trustmilter held it for, in words (the checks'
    finding texts, translated through the catalogs), with a link to its page
    on the review page, and a link to the list. The language is the policy's
    `review.default_language`: a digest has no browser to ask.

    Everything taken from a held message is a stranger's text: it goes into
    the body only, with control characters escaped (no CR or LF can start a
    header field or a new line the reader would take for ours) and bounded
    in length. The header section holds only our own words and the policy's
    addresses. The stdlib email package encodes the subject (RFC 2047) and
    the text (RFC 2045) as each needs.

    The digest marks itself `Auto-Submitted: auto-generated` (RFC 3834 §5)
    and `X-Auto-Response-Suppress: All`, so that the help desk's own ticket
    system does not answer it: that would be the loop this project exists
    to stop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, make_msgid

from trustmilter.command_support import age, printable, utc
from trustmilter.config.review import ReviewConfig
from trustmilter.i18n import N_
from trustmilter.quarantine.review import HeldMessage
from trustmilter.signals import FINDINGS

Translate = Callable[[str], str]

# At most this many messages are listed one by one; the rest are counted
# (a spam wave must not make a mail of megabytes). The page shows them all.
MAX_LISTED = 300
# A subject, address or reason text from a held message is cut at this many
# characters (escapes included): enough to recognise it, never a wall of text.
MAX_FIELD = 200
# Recipients of one held message listed by name; the rest are counted.
MAX_RECIPIENTS = 10

# The stdlib's modern policy: RFC 2047 subjects, a header value with CR or LF
# refused outright, and LF line ends, which sendmail(1) expects locally.
WIRE_POLICY = default


@dataclass(frozen=True, slots=True)
class PageLinks:
    """The review page's addresses: the list, and one message's page."""

    base: str  # ends in "/"

    def message(self, queue_id: str) -> str:
        # A queue ID has only letters and digits (quarantine/postfix.py checks
        # it before anything): nothing in it needs escaping in a URL path.
        return f"{self.base}message/{queue_id}"


def page_links(review: ReviewConfig) -> PageLinks:
    """review.url (the reverse proxy's https:// address), else http://<listen>/."""
    base = review.url or f"http://{review.listen}/"
    return PageLinks(base if base.endswith("/") else base + "/")


@dataclass(frozen=True, slots=True)
class Window:
    """The held messages a digest lists: those that arrived in [start, end).

    start is None for the first digest (everything held before `end`). end
    is a whole second: Postfix reports arrival times in whole seconds, so a
    message arriving later in the second the digest ran is left to the next
    one, listed once and never lost.
    """

    start: float | None
    end: int

    def holds(self, message: HeldMessage) -> bool:
        arrived = message.entry.arrival_time
        return (self.start is None or arrived >= self.start) and arrived < self.end


def reason_words(reason: str, tr: Translate) -> str:
    """A reason (a signal name from the verdict header) with what it means.

    A finding has a text (the checks' specs, `policy show`); a result's
    outcome (``spf.mailfrom.fail``) or an unknown name stays as it is.
    """
    meaning = FINDINGS.get(reason)
    return f"{reason}: {tr(meaning)}" if meaning else reason


def compose_digest(
    messages: Sequence[HeldMessage],
    window: Window,
    review: ReviewConfig,
    tr: Translate,
    now: float,
) -> EmailMessage:
    """The digest for `messages` (those of `window`, oldest first)."""
    config = review.digest
    mail = EmailMessage(policy=WIRE_POLICY)
    mail["From"] = _address(config.sender)
    if config.recipients:  # none only in a --dry-run of a digest not set up yet
        mail["To"] = [_address(rcpt) for rcpt in config.recipients]
    mail["Subject"] = (
        tr(N_("Held mail: %(count)s new since %(since)s")) % {
            "count": len(messages), "since": utc(window.start)}
        if window.start is not None
        else tr(N_("Held mail (first digest): %(count)s")) % {"count": len(messages)})
    mail["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    domain = _domain(config.sender)
    if domain:  # else the MTA adds one (make_msgid would ask DNS for our name)
        mail["Message-ID"] = make_msgid("trustmilter-digest", domain=domain)
    # RFC 3834 §5: not to be answered automatically; Exchange's own switch too.
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Auto-Response-Suppress"] = "All"
    mail.set_content(_body(messages, window, page_links(review), tr), charset="utf-8")
    # RFC 3282; after set_content, which replaces every Content-* field.
    mail["Content-Language"] = review.default_language
    return mail


def _body(messages: Sequence[HeldMessage], window: Window, links: PageLinks,
          tr: Translate) -> str:
    lines = [
        tr(N_("Held since %(since)s: %(count)s.")) % {
            "since": utc(window.start), "count": len(messages)}
        if window.start is not None
        else tr(N_("Held now (the first digest): %(count)s.")) % {
            "count": len(messages)},
        tr(N_("Review them on the page: %(url)s")) % {"url": links.base},
        "",
    ]
    for number, message in enumerate(messages[:MAX_LISTED], start=1):
        lines += _entry(number, message, links, tr)
    if len(messages) > MAX_LISTED:
        lines += [tr(N_("... and %(count)s more: see the page.")) % {
            "count": len(messages) - MAX_LISTED}, ""]
    lines += [
        "-- ",
        tr(N_("trustmilter sends this digest to the help desk only, never to the senders.")),
        tr(N_("Nothing in it was opened: the texts are the messages' own, "
              "with control characters escaped.")),
    ]
    return "\n".join(lines) + "\n"


def _entry(number: int, message: HeldMessage, links: PageLinks, tr: Translate) -> list[str]:
    recipients = message.entry.recipients
    shown = ", ".join(f"<{_field(r)}>" for r in recipients[:MAX_RECIPIENTS])
    if len(recipients) > MAX_RECIPIENTS:
        shown += " " + tr(N_("and %(count)s more")) % {
            "count": len(recipients) - MAX_RECIPIENTS}
    sender = f"<{_field(message.sender)}>" if message.sender else tr(N_("<> (a bounce)"))
    lines = [
        f"{number}. {message.queue_id}  " + tr(N_("arrived %(time)s (%(age)s ago)")) % {
            "time": utc(message.entry.arrival_time), "age": age(message.age)},
        "   " + tr(N_("Sender:")) + " " + sender,
        "   " + tr(N_("Recipients:")) + " " + shown,
        "   " + tr(N_("Subject:")) + " " + (_field(message.subject) or "-"),
    ]
    if message.held_by_trustmilter:
        score = message.mark.score if message.mark is not None else None
        lines.append("   " + tr(N_("Held by trustmilter, score %(score)s, because:")) % {
            "score": f"{score:g}" if score is not None else "-"})
        lines += [f"     - {_field(reason_words(r, tr))}" for r in message.reasons]
        if not message.reasons:
            lines.append("     - " + tr(N_("no reason recorded")))
    else:
        lines.append("   " + tr(N_("Not held by trustmilter (no verdict header): "
                                   "held by Postfix or another filter.")))
    lines += ["   " + tr(N_("Open:")) + " " + links.message(message.queue_id), ""]
    return lines


def _field(text: str) -> str:
    """A stranger's text for one line: control characters escaped, bounded."""
    shown = printable(text)
    return shown if len(shown) <= MAX_FIELD else shown[:MAX_FIELD - 1] + "…"


def _address(address: str) -> Address:
    """An address of the policy (help@example.com, or a bare local part the
    MTA completes with its own domain, as Postfix does for local mail)."""
    return Address(addr_spec=address) if "@" in address else Address(username=address)


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""
