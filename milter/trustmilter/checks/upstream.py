"""Results recorded by trusted upstream gateways (RFC 8601 §5, §7.1).

A gateway in front of us (a filtering service, the organisation's own
edge MTA) may have authenticated the message before it reached us and
written an Authentication-Results field with its authserv-id. We believe
such a field only when that authserv-id is in the policy's
`trusted_authserv_ids` *and* the message comes to us from that gateway
(its networks, or the client the MTA verified by the id's name:
config/gateways.py): the gateway removes forgeries of its id only from
mail that passes through it (RFC 8601 §5), so on mail sent to us directly
its id proves nothing. Only the topmost field of each trusted id counts
(older ones may be a sender's own). Each clause becomes a result named
``upstream.<method>`` (``upstream.dmarc`` pass, ...), so rules can
exempt mail a trusted gateway authenticated (``unless: [upstream.dmarc.pass]``).

A recorded pass explains the local failure of the same method
(`CheckResult.explains`, checks/explained.py): ``upstream.dmarc`` pass
takes dmarc.fail out of the score and the rules, ``upstream.spf`` pass the
SPF failures the gateway's own address caused, ``upstream.dkim`` pass a
signature broken after the gateway saw it intact.

No DNS, no state: it reads header fields. Fields that do not parse are
ignored rather than trusted. With no trusted ids it reports nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import authres

from trustmilter.authresults import HEADER_NAME, parse_header_value
from trustmilter.checks import explained
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.config.gateways import GatewayConfig
from trustmilter.config.networks import IPNetwork
from trustmilter.mail.authres_syntax import same_authserv_id
from trustmilter.model import Connection
from trustmilter.results import CheckResult, Outcome

PREFIX = "upstream"


@dataclass(frozen=True, slots=True)
class TrustedGateway:
    """A gateway's authserv-id (lower-case) and where its mail comes from: its
    networks, or (none given) the client the MTA verified by the id's name."""

    authserv_id: str
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, entry: str | GatewayConfig) -> TrustedGateway:
        if isinstance(entry, str):
            return cls(entry.lower())
        return cls(entry.id.lower(), entry.parsed_networks())

    def sent(self, connection: Connection) -> bool:
        """Whether this connection is the gateway (RFC 8601 §7.1: the trust boundary)."""
        if self.networks:
            ip = connection.ip
            return any(ip.version == net.version and ip in net for net in self.networks)
        # The MTA's verified name (Postfix's client_name: PTR and A agree), which
        # only the owner of the id's DNS can give an address.
        return connection.hostname is not None and same_authserv_id(
            connection.hostname, self.authserv_id
        )


class UpstreamCheck(BaseCheck[tuple[TrustedGateway, ...]]):
    """The trusted gateways' results, at end of message.

    Its setting is the policy's own `trusted_authserv_ids`, not a section of
    `checks`, so App.build adds it to every pipeline. Its results are named
    by the gateway's methods, which the signal catalogue accepts by shape
    (``upstream.<method>.<outcome>``, signals.py).
    """

    # It waits on nothing at all, so it may run in the calling thread ("dns":
    # every lookup it makes, none, is a cache hit).
    spec: ClassVar[CheckSpec] = CheckSpec(PREFIX, result=PREFIX, stage=Stage.DATA, waits_on="dns")

    @classmethod
    def trusting(cls, trusted: Iterable[str | GatewayConfig]) -> UpstreamCheck:
        return cls(tuple(TrustedGateway.of(entry) for entry in trusted))

    def explainable(self) -> tuple[str, ...]:
        """With trusted ids, a recorded pass may explain local SPF, DKIM, DMARC failures."""
        return explained.ALL if self.config else ()

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        if ctx.message is None or not self.config:
            return []
        # Ids of gateways that are not this client are believed no more than a stranger's.
        here = [g.authserv_id for g in self.config if g.sent(ctx.connection)]
        return upstream_results(ctx.message.headers, here)


def upstream_results(
    headers: Iterable[tuple[str, str]], trusted_ids: Iterable[str]
) -> list[CheckResult]:
    """Results recorded by trusted upstream gateways, as ``upstream.<method>`` results.

    Only the topmost A-R of each trusted authserv-id counts: older ones
    may be a sender's own (RFC 8601 §7.1). Headers that do not parse are
    ignored rather than trusted.
    """
    trusted = {t.lower() for t in trusted_ids}
    if not trusted:
        return []
    seen: set[str] = set()
    found: list[CheckResult] = []
    for name, value in headers:
        if name.lower() != HEADER_NAME.lower():
            continue
        try:
            parsed = parse_header_value(value)
        except (authres.AuthResError, ValueError, IndexError, RecursionError):
            continue
        if parsed.authserv_id not in trusted or parsed.authserv_id in seen:
            continue
        seen.add(parsed.authserv_id)
        for clause in parsed.results:
            try:
                outcome = Outcome(clause.result)
            except ValueError:
                continue
            found.append(
                CheckResult(
                    check=f"{PREFIX}.{clause.method}",
                    outcome=outcome,
                    reason=f"recorded by {parsed.authserv_id}",
                    props=tuple(
                        (f"{p.type}.{p.name}", str(p.value)) for p in clause.properties
                    ),
                    explains=(
                        explained.explained_by((str(clause.method),))
                        if outcome is Outcome.PASS else frozenset()
                    ),
                )
            )
    return found
