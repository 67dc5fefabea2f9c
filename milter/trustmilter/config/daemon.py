"""The daemon's sections of policy.yaml: `milter`, `logging`, `metrics`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from trustmilter.config.errors import InvalidField
from trustmilter.config.networks import IPNetwork, check_networks, parsed_networks
from trustmilter.config.socket import SocketSpecError, parse_socket
from trustmilter.policy.rules import ReplyConfig
from trustmilter.verdict import Action, Reply


@dataclass(frozen=True, slots=True)
class OnErrorConfig:
    """What the MTA is told when trustmilter itself fails on a message."""

    # tempfail: the sender retries later (nothing is lost); accept: deliver
    # unchecked (for clients you trust more than you fear a missed check).
    action: Literal["tempfail", "accept"] = "tempfail"
    # RFC 3463 4.3.0: other or undefined mail system status.
    reply: ReplyConfig = field(
        default_factory=lambda: ReplyConfig(
            451, "4.3.0", "Temporary local problem, please try again later"
        )
    )

    def __post_init__(self) -> None:
        if self.reply.code // 100 != 4:
            raise InvalidField(
                ("reply", "code"), "a 4xx code (a temporary failure)", self.reply.code
            )

    def answer(self) -> tuple[Action, Reply | None]:
        """What the MTA is told: accept, or tempfail with the configured reply."""
        if self.action == "accept":
            return Action.ACCEPT, None
        return Action.TEMPFAIL, self.reply.reply()


@dataclass(frozen=True, slots=True)
class ErrorReplies:
    """`on_error` per kind of client, as authentication_milter separates them."""

    external: OnErrorConfig = field(default_factory=OnErrorConfig)
    authenticated: OnErrorConfig = field(default_factory=OnErrorConfig)
    trusted: OnErrorConfig = field(default_factory=OnErrorConfig)


@dataclass(frozen=True, slots=True)
class MilterConfig:
    # Where to listen, as Postfix writes it: unix:/path, inet:PORT@HOST, inet6:PORT@HOST.
    socket: str = "inet:8894@127.0.0.1"
    # Clients in these networks (your own hosts) skip the trust checks.
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # SASL-authenticated submission ({auth_authen}) skips the trust checks.
    skip_authenticated: bool = True
    # Mail from those clients (trusted networks, local submission, SASL users)
    # is outbound: it is not judged, but the checks made for outbound mail run
    # on it (a notification to a support address is refused before it leaves).
    outbound_checks: bool = True
    on_error: ErrorReplies = field(default_factory=ErrorReplies)
    # Seconds one message may wait on trustmilter in all, DNS included; checks
    # still undecided then count as temperror.
    message_timeout: float = field(default=20.0, metadata={"min": 0.5, "max": 600})
    # Larger messages are rejected 552 5.3.4 (RFC 3463: message too big); 0: no limit.
    max_message_size: int = field(default=50 * 1024 * 1024, metadata={"min": 0})
    # Bytes of one message kept in memory while it arrives; the rest spools to a
    # temporary file (mode 0600).
    spool_memory_limit: int = field(default=1024 * 1024, metadata={"min": 0})
    # A message over spool_memory_limit is read back whole at end of message
    # (DKIM, ARC and the body checks need it whole), costing 5 to 10 times its
    # size while it is checked. At most this many such messages are checked
    # at once per process, so that memory stays below about slots x
    # max_message_size x 10; the others wait for a slot within their
    # message_timeout, else they are tempfailed 451 4.3.2 and retried. (A
    # check still waiting on DNS at the deadline keeps its message until it
    # ends, within the resolver's lifetime, after the slot is given back.)
    large_message_slots: int = field(default=4, metadata={"min": 1, "max": 1024})
    # Concurrent SMTP sessions' checks run on this many threads (per process).
    check_threads: int = field(default=64, metadata={"min": 1, "max": 1024})
    # Milter processes sharing the socket: Python runs one thread at a time,
    # so a busy MTA wants about one per CPU core. Each has its own DNS cache;
    # metrics (metrics.listen) add up over all of them (daemon/sharedmetrics.py).
    # One that dies is replaced (daemon/workers.py; the first: by a restart of all).
    processes: int = field(default=1, metadata={"min": 1, "max": 64})

    def __post_init__(self) -> None:
        try:
            parse_socket(self.socket)
        except SocketSpecError as error:
            raise InvalidField(("socket",), error.expected, self.socket) from None
        check_networks("trusted_networks", self.trusted_networks)

    def networks(self) -> tuple[IPNetwork, ...]:
        return parsed_networks(self.trusted_networks)


_FACILITY = re.compile(r"(mail|daemon|user|local[0-7])\Z")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    # auto: syslog when /dev/log exists and stderr is not a terminal, else stderr.
    destination: Literal["auto", "syslog", "stderr"] = "auto"
    # The syslog facility: mail puts our lines beside Postfix's own.
    facility: str = "mail"
    level: Literal["debug", "info", "warning", "error"] = "info"
    syslog_socket: str = "/dev/log"

    def __post_init__(self) -> None:
        if _FACILITY.match(self.facility) is None:
            raise InvalidField(("facility",), "mail, daemon, user or local0-7", self.facility)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # "HOST:PORT" for the Prometheus endpoint (/metrics); empty: off. One
    # endpoint for all milter.processes: the first process serves their sum.
    listen: str = ""

    def __post_init__(self) -> None:
        if not self.listen:
            return
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidField(("listen",), "HOST:PORT, e.g. 127.0.0.1:9425", self.listen)
