"""Small shared helpers for the check tests (append-only: several people add here)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import cache

from trustmilter.checks.base import CheckContext
from trustmilter.domains import DomainTools
from trustmilter.lookup import Resolver
from trustmilter.model import Connection, Envelope, Facts, Message
from trustmilter.results import CheckResult, Results


@cache
def domain_tools() -> DomainTools:
    """One DomainTools for the session (loading the suffix list takes a moment)."""
    return DomainTools()


def make_ctx(
    resolver: Resolver,
    ip: str = "192.0.2.1",
    helo: str | None = None,
    mail_from: str = "",
    rcpt_to: Iterable[str] = (),
    message: bytes | None = None,
    results: Iterable[CheckResult] = (),
    hostname: str | None = None,
    authenticated_as: str | None = None,
) -> CheckContext:
    """A CheckContext from plain test values."""
    facts = Facts(
        Connection(ipaddress.ip_address(ip), hostname, helo, authenticated_as),
        Envelope(mail_from, tuple(rcpt_to)),
        Message(message) if message is not None else None,
    )
    return CheckContext(facts, resolver, domain_tools(), Results(results))
