"""The client IP against DNS blocklists (RFC 5782; docs/rules.md §1).

At connect time every configured list is asked, concurrently, for the A
record of the client address in reversed form under the list's zone:
reversed octets for IPv4 (§2.1), reversed nibbles for IPv6 (§2.4). An
IPv4-mapped IPv6 client is asked as its IPv4 address. The reading of the
answers (listing, error codes, undecided lists) is shared with the URI
check in `blocklist.py`.

One result named ``dnsbl``: fail when any list lists the address (one
``dnsbl.listed`` finding per list, carrying the list's weight), else
temperror when a list could not be asked, else pass; none when no lists
are configured; skipped for loopback, private and link-local clients,
which no public list can judge and whose addresses should not leak to one.
`dnsbl.error_code` findings (score 0) record lists that refused to answer.
No TXT records are fetched. Nothing here raises for DNS conditions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.checks.blocklist import BlocklistConfig, ListQuery, ask_lists, summarise
from trustmilter.domains import client_address
from trustmilter.lookup.answer import reverse_name
from trustmilter.results import CheckResult, Outcome

if TYPE_CHECKING:
    from trustmilter.model import IPAddress

# Addresses that are never on a public list: asking would only leak them.
_UNLISTABLE = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.168.0.0/16", "::1/128", "::/128", "fc00::/7", "fe80::/10",
    )
)


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    lists: tuple[BlocklistConfig, ...] = ()


def is_listable(ip: IPAddress) -> bool:
    """False for loopback, private and link-local addresses."""
    return not any(ip.version == net.version and ip in net for net in _UNLISTABLE)


class DnsblCheck(BaseCheck[Config]):
    """Look the client IP up on each configured DNSBL."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "dnsbl", result="dnsbl", stage=Stage.CONNECT, waits_on="dns",
        findings={
            "dnsbl.listed": "the client IP is listed (carries the list's weight)",
            "dnsbl.error_code": "a blocklist answered with an error code (ignored)",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Ask every list at once and report listings, refusals and gaps."""
        ip = client_address(ctx.connection.ip)
        if not self.config.lists:
            return [CheckResult(self.name, Outcome.NONE, "no blocklists configured")]
        if not is_listable(ip):
            return [CheckResult(self.name, Outcome.SKIPPED, f"{ip} is not a public address")]
        queries = [
            ListQuery(blocklist, str(ip), reverse_name(ip, blocklist.zone))
            for blocklist in self.config.lists
        ]
        summary = summarise("dnsbl", ask_lists(ctx.dns, queries), with_subject=False)
        return [CheckResult(self.name, summary.outcome, summary.reason, summary.findings)]
