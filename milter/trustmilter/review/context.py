"""What the page's views share: made once by the app factory, read by every request.

Kept in ``app.extensions`` (`CONTEXT_KEY`) rather than in module globals,
so two apps (tests build many) never see each other's queue or database.
"""

from __future__ import annotations

import gettext
import ipaddress
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from flask import current_app

from trustmilter.config.settings import Settings
from trustmilter.quarantine.queue import HoldQueue
from trustmilter.quarantine.review import QuarantineReview
from trustmilter.review.accounts import Accounts
from trustmilter.review.attempts import LoginAttempts
from trustmilter.review.audit import AuditLog
from trustmilter.state.base import StateStore

CONTEXT_KEY = "trustmilter_review"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ReviewContext:
    settings: Settings
    queue: HoldQueue
    review: QuarantineReview
    # Opens the policy's state store for one action (closed after it).
    open_state: Callable[[], AbstractContextManager[StateStore]]
    clock: Callable[[], float]
    accounts: Accounts
    audit: AuditLog
    attempts: LoginAttempts
    catalogs: Mapping[str, gettext.NullTranslations]
    trusted_proxies: tuple[Network, ...]


def context() -> ReviewContext:
    """The context of the app serving the current request."""
    found: ReviewContext = current_app.extensions[CONTEXT_KEY]
    return found
