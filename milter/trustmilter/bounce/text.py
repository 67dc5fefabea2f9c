"""The human-readable part of a bounce: its text, the report's own words, cues.

A bounce's text part says what its status part (if any) says in words,
often more: the remote server's reply, the recipients of a text bounce,
whether the sender is still trying, and a copy of the returned message's
headers. Every search here is linear in the text (see the linear-time tests).
"""

from __future__ import annotations

import email
import html
import re
from email.message import Message

from trustmilter.bounce.dsn import (
    ReturnedMessage,
    has_status_fields,
    is_status_part,
    returned_from_headers,
)
from trustmilter.mail.mime import decode_text

# Characters of human-readable text read for recipients, words and cues.
TEXT_LIMIT = 64_000

_DELAY = re.compile(
    r"has not yet been delivered|not yet been delivered|delivery (?:has been |is )?delayed|"
    r"message (?:has been |is )?delayed|delayed (?:mail|for)|will (?:continue|keep) (?:to )?"
    r"(?:try|attempt)|will be retried|will retry|retried until|warning message only|"
    r"this is a warning|warning only|is only a notification about a delay|"
    r"no action is required|do not need to (?:resend|take any action)|still being retried|"
    r"postponed|delivery incomplete|temporary problem delivering|attempts will continue|"
    r"will continue trying|has been delayed",
    re.IGNORECASE)
# "could not be delivered for 0 days, 12 hours" counts the time tried so far
# (Sendmail's and its imitators' warnings, "will be retried until ..."), not a
# failure: the final notice that shares the words says it is giving up ("will
# be deleted from queue").
_GIVEN_UP = re.compile(
    r"permanent (?:error|failure)|failed permanently|giving up|given up|gave up|"
    r"not going to try again|will not (?:try|retry)|has been returned|"
    r"could not be delivered(?! for \d)|will be deleted from (?:the )?queue|"
    r"was not delivered|cannot be delivered|wasn't delivered|unable to deliver|"
    r"not be delivered(?! for \d)|undeliverable",
    re.IGNORECASE)


def delay_notice(message: Message, report: str) -> bool:
    """The text (or subject) says delivery is still being tried, and nothing says it
    was given up: a delay notice (RFC 3464 "delayed")."""
    subject = str(message.get("Subject", ""))
    words = f"{subject}\n{report}"
    return bool(_DELAY.search(words)) and not _GIVEN_UP.search(report)


_SKIPPED = ("message/", "text/rfc822-headers")
_TAG = re.compile(r"<[^<>]*>")  # [^<>]: a run of "<" without ">" stays linear
_LINE_TAG = re.compile(r"<(?:br|/p|/tr|/div|/h\d)\b[^<>]*>", re.IGNORECASE)


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        data = payload[: TEXT_LIMIT * 4]
        text = decode_text(data, part.get_content_charset())
        if "\ufffd" in text:  # a mislabelled charset: UTF-8 is the usual truth
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return text
    raw = part.get_payload()
    return raw[: TEXT_LIMIT * 4] if isinstance(raw, str) else ""


def from_html(text: str) -> str:
    return html.unescape(_TAG.sub(" ", _LINE_TAG.sub("\n", text)))


def body_text(message: Message) -> str:
    """The human-readable report: the first text/plain part outside any returned
    message or status part, else the first text/html one as text, else a part
    labelled delivery-status that holds a person's words and no status fields
    (InterMail labels its human-readable part so)."""
    plain: str | None = None
    markup: str | None = None
    mislabelled: str | None = None
    stack = [message]
    while stack and plain is None:
        part = stack.pop()
        content_type = part.get_content_type()
        payload = part.get_payload()
        if mislabelled is None and is_status_part(part):
            words = _decoded(part)
            if words.strip() and not has_status_fields(words):
                mislabelled = words
            continue
        if part is not message and content_type.startswith(_SKIPPED):
            continue
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
        elif content_type == "text/plain" or (part is message and not message.is_multipart()
                                              and content_type != "text/html"):
            plain = _decoded(part)
        elif content_type == "text/html" and markup is None:
            markup = from_html(_decoded(part))
    text = plain if plain is not None else markup or mislabelled or ""
    return text.replace("\r\n", "\n").replace("\r", "\n")[:TEXT_LIMIT]


# The separator lines before a copy of the returned message (qmail, Yahoo,
# Exim, Exchange, Gmail, 1&1, Lotus Notes); Exim's and Notes' are followed by
# the rest of their line.
_COPY_MARKER = re.compile(
    r"--- Below this line is a copy of the message\.|(------ This is a copy of the message"
    r"|------- Returned Message)|Original message headers:|----- Original message -----"
)
_REPORT_END = re.compile(
    r"--- ?Below this line is a copy|------ This is a copy of the message|"
    r"Original message headers:|----- Original message -----|--- The header of the original|"
    r"---- START OF RETURNED MESSAGE|--------RETURNED MAIL FOLLOWS|Original message follows|"
    r"-------- Returned Mail --------|--- Enclosed is a copy|Message headers follow|"
    r"----- Message header follows|------- Returned Message",
    re.IGNORECASE)
_BLANKS = re.compile(r"\s*")


def copied_text(body: str) -> str | None:
    r"""What follows the first separator and the blank lines after it: group 1 of
    re.search(r"(?:<separator>|<Exim's or Notes'>[^\n]*)\s*\n\s*\n?(.*)", body, re.S).

    That pattern tried every split of the blanks (with "[^\n]*" before them, every
    end of the line too) at every separator: quadratic in a run of blanks or of
    separators on one line (100 KB: 1.4 s). Its answer is the text after the run of
    blanks that starts at the separator's end (at the end of Exim's or Notes' line), when
    that run holds a line end; else the search goes on at the next separator.
    """
    start = 0
    while (marker := _COPY_MARKER.search(body, start)) is not None:
        end = marker.end()
        if marker.group(1):
            end = body.find("\n", end)
            if end < 0:
                return None  # no line end follows: no later separator can match either
        blanks = _BLANKS.match(body, end)
        assert blanks is not None  # \s* matches the empty string
        if "\n" in blanks.group():
            return body[blanks.end() :]
        start = marker.start() + 1
    return None


def returned_inline(body: str) -> ReturnedMessage | None:
    """Headers copied into the text after a separator line (qmail, Yahoo, Exim, Exchange)."""
    copied = copied_text(body)
    if copied is None:
        return None
    headers = email.message_from_string(copied.lstrip())
    returned = returned_from_headers(headers)
    return returned if any(getattr(returned, name) for name in (
        "message_id", "subject", "from_", "to", "date", "return_path")) else None


def report_text(body: str) -> str:
    """The report's own words: the body up to the copy of the returned message."""
    end = _REPORT_END.search(body)
    return body[: end.start()] if end else body
