"""The one place that assembles a message's header edits at end of message.

What goes: every incoming field only we write — an Authentication-Results
field claiming our authserv-id (RFC 8601 §5), and any copy of our
verdict, shadow and bounce headers (a forged one could teach a release or
mislead the help desk). What comes: our Authentication-Results field,
then the headers the policy's verdict asks for, in that order, at the top.
Checked and unchecked (our own clients') mail go through here alike.

One Auto-Submitted field at most (RFC 3834 §5): when the verdict asks for
ours, a message that already says it is automatic (``auto-replied``, a
bounce's ``auto-generated``) keeps its own field and gets none of ours; one
that says ``no`` (the same as no field at all) has it replaced by ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trustmilter.app import App
from trustmilter.authresults import (
    HEADER_NAME,
    ForgedHeader,
    build_header_values,
    find_forged,
    find_named,
)
from trustmilter.model import Message
from trustmilter.results import Results

AUTO_SUBMITTED = "Auto-Submitted"


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """Fields to insert at the top (in order) and fields to remove."""

    add: tuple[tuple[str, str], ...]
    # The forged fields and any Auto-Submitted field ours replaces.
    remove: tuple[ForgedHeader, ...]
    # Our Authentication-Results value on one line, when we add one (also shown by `check`).
    authentication_results: str | None = None
    # The forged fields alone (the verdict line names them).
    forged: tuple[ForgedHeader, ...] = ()


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
    `verdict_headers` in. Our A-R is added folded (it is often 400
    characters); `HeaderEdits.authentication_results` keeps it on one line."""
    value, folded = (build_header_values(app.authserv_id, results) if authentication_results
                     else (None, None))
    ours = ((HEADER_NAME, folded),) if folded is not None else ()
    added, replaced = _one_auto_submitted(message, verdict_headers)
    forged = forged_headers(app, message)
    return HeaderEdits(
        add=(*ours, *added),
        remove=(*forged, *replaced),
        authentication_results=value,
        forged=forged,
    )


def _one_auto_submitted(
    message: Message, verdict_headers: Sequence[tuple[str, str]]
) -> tuple[tuple[tuple[str, str], ...], tuple[ForgedHeader, ...]]:
    """`verdict_headers` as they may be added, and the message's Auto-Submitted
    fields ours replaces (RFC 3834 §5: ``no`` equals no field; any other keyword
    already stops auto-responders, and the sender's own is the more precise)."""
    asked = [pair for pair in verdict_headers if pair[0].lower() == AUTO_SUBMITTED.lower()]
    present = find_named(message.headers, AUTO_SUBMITTED) if asked else []
    if not present:
        return tuple(verdict_headers), ()
    if all(_keyword(field.value) == "no" for field in present):
        return tuple(verdict_headers), tuple(present)
    return tuple(pair for pair in verdict_headers if pair not in asked), ()


def _keyword(value: str) -> str:
    """The keyword of an Auto-Submitted value, without parameters or comments."""
    return value.strip().split(";", 1)[0].split("(", 1)[0].strip().lower()
