"""App: the shared services built once from a policy and passed in, never global.

The milter adapter and ``trustmilter check`` both drive the engine's
Transaction (engine/) with an App, so the command line runs exactly the
transaction the daemon runs.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from trustmilter import compat
from trustmilter.checks import all_check_names, build_checks
from trustmilter.checks.base import Check
from trustmilter.checks.forwarded import Config as ForwardedConfig
from trustmilter.checks.forwarded import ForwardedCheck, parse_forwarders
from trustmilter.checks.registry import attached_check_names
from trustmilter.checks.upstream import UpstreamCheck
from trustmilter.config.checks import ChecksConfig
from trustmilter.config.settings import Settings
from trustmilter.domains import DomainTools
from trustmilter.lookup import Resolver
from trustmilter.lookup.resolver import build_resolver
from trustmilter.mail.identity import Identities
from trustmilter.pipeline import Pipeline
from trustmilter.policy.model import Policy
from trustmilter.state.base import StateStore

log = logging.getLogger(__name__)

# Enough threads for every check of a few concurrent messages to wait on DNS at once.
DEFAULT_WORKERS = 64


@dataclass(frozen=True, slots=True)
class App:
    """The settings as loaded (never rewritten), the policy they carry, the values
    derived from them, and the services built from them."""

    settings: Settings
    dns: Resolver
    domains: DomainTools
    pipeline: Pipeline
    executor: Executor
    authserv_id: str
    # Rate counters and reputation; None for offline evaluation (`trustmilter check`).
    state: StateStore | None = None
    clock: Callable[[], float] = field(default=time.time)
    # How sender addresses are undressed (the policy's address_separators).
    identities: Identities = field(default=Identities())

    @property
    def policy(self) -> Policy:
        """What decides the verdicts: scores, rules, thresholds, actions, headers."""
        return self.settings.policy

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        executor: Executor | None = None,
        state: StateStore | None = None,
        clock: Callable[[], float] = time.time,
        domains: DomainTools | None = None,
    ) -> App:
        """Build every service the policy asks for; raises StartupError if one cannot run.

        `domains` is the caller's when it already built one for `resolver`
        (building the public suffix list costs a tenth of a second or more).
        """
        compat.install()  # library patches, checked against the installed versions
        # Without a root dot: RFC 8601 readers take the id as a dot-atom.
        authserv_id = (settings.authserv_id or socket.getfqdn()).removesuffix(".")
        for trusted in settings.trusted_authserv_ids:
            if isinstance(trusted, str):
                # Said at every start: a plain id no longer counts from every client.
                log.info("trusted_authserv_ids: %s is believed only on mail from the client "
                         "verified as %s (give its networks to trust it by address)",
                         trusted, trusted)
        domains = domains if domains is not None else DomainTools()
        return cls(
            settings=settings,
            dns=resolver if resolver is not None else build_resolver(settings.dns, domains=domains),
            domains=domains,
            pipeline=Pipeline.build(
                # Trusted gateways' A-R: a check whose setting is the policy's own,
                # built only when there are gateways (it would report nothing).
                (*build_checks(effective_checks(settings, authserv_id)),
                 *([UpstreamCheck.trusting(settings.trusted_authserv_ids)]
                   if settings.trusted_authserv_ids else []),
                 *forwarded_checks(settings)),
                all_check_names() | attached_check_names(),
            ),
            executor=executor or ThreadPoolExecutor(DEFAULT_WORKERS, "trustmilter-check"),
            authserv_id=authserv_id,
            state=state,
            clock=clock,
            identities=Identities(settings.address_separators),
        )


def forwarded_checks(settings: Settings) -> tuple[Check, ...]:
    """The check of the hop before a trusted forwarder, when any forwarder is trusted
    (none otherwise: ordinary mail meets no trace of it), re-running the
    connection checks whose sections are enabled."""
    forwarders = parse_forwarders(settings.trusted_forwarders)
    if not forwarders:
        return ()
    checks = settings.checks
    return (ForwardedCheck(ForwardedConfig(
        forwarders,
        checks.iprev if checks.iprev.enabled else None,
        checks.helo if checks.helo.enabled else None,
        checks.spf if checks.spf.enabled else None,
    )),)


def effective_checks(settings: Settings, authserv_id: str) -> ChecksConfig:
    """The checks' settings with what is derived filled in: our loop marker carries
    our authserv-id unless the settings name another. A copy for building the
    checks; the settings themselves stay as loaded."""
    loops = settings.checks.loops.with_marker_id(authserv_id)
    return replace(settings.checks, loops=loops)
