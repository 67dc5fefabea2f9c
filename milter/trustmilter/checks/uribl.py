"""Domains of links in the message body against URI blocklists (RFC 5782 §2.3).

Spam with "spammy links, for example in a signature" is to be suspended.
At end of message every text/plain and text/html part (nested ones too,
however deep, signatures included: the whole text is read) is taken from
the message's one MIME walk (`Message.mime`, `mail/mime.py`: no recursion,
linear), decoded from its transfer encoding and charset, leniently, and
scanned for link hosts:
- http, https and ftp URLs (``scheme://[user@]host[:port]``);
- bare ``www.`` names, ``mailto:`` addresses, and in HTML the
  protocol-relative ``href="//host"`` / ``src="//host"`` forms; HTML
  character references are decoded first (``&#104;ttp://``).
Hosts are percent-decoded, IDNA-encoded and reduced to their registered
domain (`DomainTools.org_domain`); names under TLDs the public suffix list
does not know are dropped. IP-address hosts are ignored: URI lists index
domains, and the client IP is the DNSBL check's business.

Distinct domains, in order of first appearance, are looked up on every
list concurrently as ``<domain>.<zone>`` A, at most `max_domains` of them
(``uribl.lookup_limit`` says when more were found). Answers are read by the
rules shared with the DNSBL check (`blocklist.py`): fail on a listing (one
``uribl.listed`` per list, carrying its weight, naming the domains), else
temperror if a list could not be asked, else pass; none without lists or
links. Cost is linear in the message: the walk reads at most
`mail.mime.MAX_PARTS` parts (the `headers` check reports more as
``headers.mime_too_many_parts``, and nesting past its limit as
``headers.mime_too_deep``),
and MAX_SCAN_BYTES decoded bytes of each text part are scanned, with regular
expressions that never backtrack. Nothing here raises for bad MIME or DNS
conditions.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import unquote

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.checks.blocklist import (
    BlocklistConfig,
    ListQuery,
    ask_lists,
    query_name,
    summarise,
)
from trustmilter.domains import ascii_name, is_host_name
from trustmilter.results import CheckResult, Finding, Outcome

if TYPE_CHECKING:
    from trustmilter.domains import DomainTools
    from trustmilter.mail.mime import MimeStructure

# Decoded bytes scanned per text part: links past the first megabyte of
# one part are not worth the time (spam puts them up front).
MAX_SCAN_BYTES = 1_000_000

_HOST = r"""[^\s/?#"'<>()\[\]{}\\|^`,;]+"""
_LINK = re.compile(
    rf"""
      \b(?:https?|ftp)://(?P<url>{_HOST})
    | \b(?P<www>www\d{{0,3}}\.{_HOST})
    | \bmailto:(?P<mail>{_HOST})
    | \b(?:href|src)\s*=\s*["']?//(?P<rel>{_HOST})
    """,
    re.IGNORECASE | re.VERBOSE,
)
_TRAILING = ".:!?'\")*"
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+))*\Z", re.I)


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    lists: tuple[BlocklistConfig, ...] = ()
    # At most this many distinct registered domains are looked up per message.
    max_domains: int = field(default=20, metadata={"min": 1, "max": 500})


def link_hosts(content_type: str, text: str) -> Iterator[str]:
    """The raw host of each link in one part's text."""
    if content_type == "text/html":
        text = html.unescape(text)
    for match in _LINK.finditer(text):
        url, www, mail, rel = match.group("url", "www", "mail", "rel")
        if mail:
            yield mail.rpartition("@")[2]
        else:
            # RFC 3986 §3.2: authority = [ userinfo "@" ] host [ ":" port ]
            yield (url or www or rel or "").rpartition("@")[2].partition(":")[0]


def link_domain(host: str, tools: DomainTools) -> str | None:
    """The registered domain a URI blocklist is asked about, or None."""
    host = unquote(host).strip().rstrip(_TRAILING).rstrip(".").lower()
    if not host or _NUMERIC_HOST.match(host):
        return None  # an IP address in dotted, decimal or hex form
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    name = ascii_name(host)
    if name is None or not is_host_name(name) or not tools.has_known_tld(name):
        return None
    return tools.org_domain(name)


def link_domains(structure: MimeStructure, tools: DomainTools) -> list[str]:
    """Distinct registered domains of the message's links, in order of appearance."""
    domains: dict[str, None] = {}
    hosts: dict[str, str | None] = {}  # the same link repeated is judged once
    for leaf in structure.text_leaves():
        for host in link_hosts(leaf.content_type, leaf.text(MAX_SCAN_BYTES)):
            if host not in hosts:
                hosts[host] = link_domain(host, tools)
            domain = hosts[host]
            if domain:
                domains.setdefault(domain)
    return list(domains)


class UriblCheck(BaseCheck[Config]):
    """Look the registered domains of the message's links up on URI blocklists."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "uribl", result="uribl", stage=Stage.DATA, waits_on="dns",
        findings={
            "uribl.listed": "a linked domain is listed (carries the list's weight)",
            "uribl.error_code": "a URI blocklist answered with an error code (ignored)",
            "uribl.lookup_limit":
                "more linked domains than the lookup limit; the rest were skipped",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Collect link domains, ask every list about each at once, report."""
        if not self.config.lists:
            return [CheckResult(self.name, Outcome.NONE, "no URI blocklists configured")]
        message = ctx.message
        if message is None:
            return [CheckResult(self.name, Outcome.SKIPPED, "no message yet")]
        found = link_domains(message.mime, ctx.domains)
        if not found:
            return [CheckResult(self.name, Outcome.NONE, "no link domains")]
        domains = found[: self.config.max_domains]
        queries = [
            ListQuery(blocklist, domain, query_name(blocklist.zone, domain))
            for domain in domains
            for blocklist in self.config.lists
        ]
        summary = summarise("uribl", ask_lists(ctx.dns, queries), with_subject=True)
        findings = summary.findings
        if len(found) > len(domains):
            findings += (
                Finding("uribl.lookup_limit",
                        f"{len(found)} domains, looked up the first {len(domains)}"),
            )
        return [CheckResult(self.name, summary.outcome, summary.reason, findings)]
