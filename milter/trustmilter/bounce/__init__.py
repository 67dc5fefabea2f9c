"""Reading bounces (issue 5): RFC 3464 reports, other MTAs' texts, RFC 3463 codes."""

from __future__ import annotations

from trustmilter.bounce.explain import Bounce, BounceRecipient, Cause, explain
from trustmilter.bounce.status import StatusMeaning, describe

__all__ = ["Bounce", "BounceRecipient", "Cause", "StatusMeaning", "describe", "explain"]
