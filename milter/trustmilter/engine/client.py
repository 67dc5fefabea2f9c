"""Who is sending: the SMTP client's facts, and the trust zone they put it in.

The zone decides how much of the engine runs: our own hosts (the
policy's trusted networks, and local submission without an address) and,
where the policy says so, SASL-authenticated users are not judged; every
other client is. Our own clients' mail is outbound: with
`milter.outbound_checks` it runs the checks made for outbound mail (a
notification to a support address is refused before it leaves), without
being judged. The zone also picks the answer given when trustmilter
itself fails (`milter.on_error`, one per zone, as authentication_milter's
tempfail_on_error_* knobs).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from trustmilter.checks.base import Direction
from trustmilter.model import Connection, IPAddress

if TYPE_CHECKING:
    from trustmilter.config.daemon import MilterConfig, OnErrorConfig


class ClientKind(StrEnum):
    EXTERNAL = "external"
    AUTHENTICATED = "authenticated"
    TRUSTED = "trusted"


@dataclass(frozen=True, slots=True)
class Client:
    """The SMTP client as the MTA reported it; `ip` is None for local submission."""

    ip: IPAddress | None
    # The name the MTA verified for the client (Postfix's client_name), if any.
    hostname: str | None = None
    helo: str | None = None
    # Submitted without SMTP (sendmail(1) through Postfix's non_smtpd_milters):
    # the MTA can refuse such a message only as a whole, at end of message.
    non_smtp: bool = False

    def connection(self) -> Connection:
        """The facts the checks see; only external clients (with an address) are checked."""
        if self.ip is None:
            raise ValueError("a client without an address is never checked")
        return Connection(ip=self.ip, hostname=self.hostname, helo=self.helo)

    def outbound_connection(self, authenticated_as: str | None) -> Connection:
        """The facts outbound checks see: our own client, with its SASL login.

        Local submission without an address is shown as Postfix shows
        sendmail(1)'s mail to its non_smtpd_milters: from localhost [127.0.0.1].
        """
        return Connection(ip=self.ip or LOCAL_SUBMISSION,
                          hostname=self.hostname or (None if self.ip else "localhost"),
                          helo=self.helo, authenticated_as=authenticated_as)


# Where Postfix says mail submitted with sendmail(1) comes from.
LOCAL_SUBMISSION: IPAddress = ipaddress.ip_address("127.0.0.1")


def classify(config: MilterConfig, client: Client, authenticated_as: str | None) -> ClientKind:
    """Trusted networks and local submission, then SASL users, then everyone else."""
    ip = client.ip
    if ip is None or any(ip.version == net.version and ip in net for net in config.networks()):
        return ClientKind.TRUSTED
    if authenticated_as and config.skip_authenticated:
        return ClientKind.AUTHENTICATED
    return ClientKind.EXTERNAL


def direction_of(config: MilterConfig, kind: ClientKind) -> Direction | None:
    """Strangers' mail is inbound (judged); our own clients' is outbound when the
    policy runs the outbound checks, else None: passed with no check at all."""
    if kind is ClientKind.EXTERNAL:
        return Direction.INBOUND
    return Direction.OUTBOUND if config.outbound_checks else None


def on_error(config: MilterConfig, kind: ClientKind) -> OnErrorConfig:
    """The configured answer when trustmilter itself fails, for this kind of client."""
    answer: OnErrorConfig = getattr(config.on_error, kind.value)
    return answer
