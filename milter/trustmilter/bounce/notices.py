"""Notices dressed as bounces that report no failure.

Some automated messages are built like a bounce (a multipart/report with a
delivery-status part, the null sender, a returned copy) but say that
nothing failed, or that nothing was refused:

- a success notice: every recipient the report names was delivered,
  relayed or expanded (RFC 3464 §2.3.3 Action; RFC 3461 NOTIFY=SUCCESS, or
  Sendmail's return receipt), which no one has to act on;
- a challenge of a challenge-response filter: the recipient's filter holds
  the message until the sender confirms (a "guest list", "pre-approved"
  senders). Nothing was refused: the mail will be delivered once the
  sender answers, and the address is not in doubt.

Neither is a bounce: a bounce reports a failure or a delay. The searches
here are literal alternations with bounded gaps (linear time).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from trustmilter.bounce.dsn import Recipient
from trustmilter.bounce.status import describe

# RFC 3464 §2.3.3: the Action values that report no failure.
SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})

# The words of a challenge: the message is held ("waitlisted") until the
# sender confirms or adds themselves to the recipient's list of senders.
_CHALLENGE = re.compile(
    r"\bwaitlisted\b|not pre-?approved|\bguest list\b|challenge[- ]response|"
    r"add yourself to (?:my|the|our|his|her|their) [^\n]{0,30}list|"
    r"(?:held|waiting|kept) (?:until|pending) (?:you |your |the sender )?"
    r"(?:confirm|verif|repl|respon)",
    re.IGNORECASE)


def all_succeeded(recipients: Sequence[Recipient]) -> bool:
    """Every recipient the report names was delivered, relayed or expanded."""
    return bool(recipients) and all(r.action in SUCCESS_ACTIONS for r in recipients)


def is_challenge(report: str, recipients: Sequence[Recipient]) -> bool:
    """The notice's words (or a report's diagnostics) hold a challenge, and no
    recipient has a permanent code: a filter that holds the mail, not a
    server that refused it."""
    if any(describe(r.status).klass == 5 for r in recipients):
        return False
    words = "\n".join((report, *(r.diagnostic or "" for r in recipients)))
    return _CHALLENGE.search(words) is not None
