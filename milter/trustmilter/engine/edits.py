"""The one place that assembles a message's header edits at end of message.

What goes: every incoming field only we write — an Authentication-Results
field claiming our authserv-id (RFC 8601 §5), and any copy of our
verdict, shadow and bounce headers (a forged one could teach a release or
mislead the help desk). What comes: our Authentication-Results field,
then the headers the policy's verdict asks for, in that order, at the top.
Checked and unchecked (our own clients') mail go through here alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trustmilter.app import App
from trustmilter.authresults import (
    HEADER_NAME,
    ForgedHeader,
    build_header_value,
    find_forged,
    find_named,
)
from trustmilter.model import Message
from trustmilter.results import Results


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """Fields to insert at the top (in order) and forged fields to remove."""

    add: tuple[tuple[str, str], ...]
    remove: tuple[ForgedHeader, ...]
    # Our Authentication-Results value, when we add one (also shown by `check`).
    authentication_results: str | None = None


def forged_headers(app: App, message: Message) -> tuple[ForgedHeader, ...]:
    """Incoming header fields that only we write."""
    forged = find_forged(message.headers, app.authserv_id)
    headers = app.policy.headers
    for name in (headers.trust_header, headers.shadow_header, app.settings.checks.bounce.header):
        if name:
            forged.extend(find_named(message.headers, name))
    return tuple(forged)


def header_edits(
    app: App,
    message: Message,
    results: Results,
    verdict_headers: Sequence[tuple[str, str]] = (),
    *,
    authentication_results: bool = True,
) -> HeaderEdits:
    """The edits for a delivered message: forgeries out, A-R (if asked) and
    `verdict_headers` in."""
    value = build_header_value(app.authserv_id, results) if authentication_results else None
    ours = ((HEADER_NAME, value),) if value is not None else ()
    return HeaderEdits(
        add=(*ours, *verdict_headers),
        remove=forged_headers(app, message),
        authentication_results=value,
    )
