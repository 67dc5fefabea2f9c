"""Reading bounces: RFC 3464 reports, other MTAs' texts, RFC 3463 codes, causes."""

from __future__ import annotations

from trustmilter.bounce.causes import Cause
from trustmilter.bounce.explain import Bounce, BounceRecipient, explain
from trustmilter.bounce.status import StatusMeaning, describe

__all__ = ["Bounce", "BounceRecipient", "Cause", "StatusMeaning", "describe", "explain"]
