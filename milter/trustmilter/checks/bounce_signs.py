"""Could this message be a bounce? The cheap test before a body is parsed (as
autoreply_signs.py is for automatic replies).

Shared by the bounce check (which then reads the bounce) and the replies
check (which then looks for our token in the returned header), so both
take the same messages for bounces.
"""

from __future__ import annotations

from trustmilter.checks.automation import report_type
from trustmilter.model import Message

# Senders of bounces that do not use the null sender (RFC 5321 §4.5.5 says they should).
DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster"})


def may_be_bounce(mail_from: str, message: Message) -> bool:
    """The null sender, a multipart/report, or a From of MAILER-DAEMON or postmaster."""
    if not mail_from:  # the null sender (RFC 5321 §4.5.5)
        return True
    if any(report_type(value) is not None for value in message.header_values("Content-Type")):
        return True
    return any(m.local.lower() in DAEMON_LOCAL_PARTS for m in message.from_mailboxes)
