"""Results recorded by trusted upstream gateways (RFC 8601 §5, §7.1).

A gateway in front of us (a filtering service, the organisation's own
edge MTA) may have authenticated the message before it reached us and
written an Authentication-Results field with its authserv-id. We believe
such a field only when that authserv-id is in the policy's
`trusted_authserv_ids`, and only the topmost field of each trusted id
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
from typing import ClassVar

import authres

from trustmilter.authresults import HEADER_NAME, parse_header_value
from trustmilter.checks import explained
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.results import CheckResult, Outcome

PREFIX = "upstream"


class UpstreamCheck(BaseCheck[frozenset[str]]):
    """The trusted gateways' results, at end of message.

    Its setting is the policy's own `trusted_authserv_ids` (lower-cased), not
    a section of `checks`, so App.build adds it to every pipeline. Its
    results are named by the gateway's methods, which the signal catalogue
    accepts by shape (``upstream.<method>.<outcome>``, signals.py).
    """

    # It waits on nothing at all, so it may run in the calling thread ("dns":
    # every lookup it makes, none, is a cache hit).
    spec: ClassVar[CheckSpec] = CheckSpec(PREFIX, result=PREFIX, stage=Stage.DATA, waits_on="dns")

    @classmethod
    def trusting(cls, trusted_ids: Iterable[str]) -> UpstreamCheck:
        return cls(frozenset(t.lower() for t in trusted_ids))

    def explainable(self) -> tuple[str, ...]:
        """With trusted ids, a recorded pass may explain local SPF, DKIM, DMARC failures."""
        return explained.ALL if self.config else ()

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        if ctx.message is None or not self.config:
            return []
        return upstream_results(ctx.message.headers, self.config)


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
