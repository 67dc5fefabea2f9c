"""What the IP (DNSBL) and domain (URI) blocklist checks share.

`BlocklistConfig` describes one list. `ask_lists` looks up any number of
(list, subject) pairs concurrently and reads each answer the RFC 5782 way;
`summarise` turns the readings into the check's outcome, reason and
findings (``<prefix>.listed``, ``<prefix>.error_code``). The DNSBL check
asks reversed IP names, the URI check registered domains; everything else
is the same and lives here.

How an answer is read (RFC 5782 §2.1, §2.3, §5):
- NXDOMAIN or NODATA: not listed.
- A records all inside 127.0.0.0/8, none an error code: listed. The
  list's `codes` give each address a meaning, otherwise "listed".
- Any address in the list's `error_codes`, 127.0.0.1 (§5: a list must
  never hold it, and several lists answer it for refused queries), or an
  address outside 127.0.0.0/8 (a wildcarded or hijacked zone): the whole
  answer is an error, reported with score 0 and never as a listing.
- TEMPERROR: undecided for that list.
TXT records are not fetched: the A record already carries the meaning.
Nothing here raises for DNS conditions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from trustmilter.domains import normalise
from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.parallel import query_many
from trustmilter.results import Finding, Outcome

if TYPE_CHECKING:
    from trustmilter.lookup.answer import DnsAnswer, Resolver

# Return codes the big list operators use to say "your query was refused or
# is misconfigured", not "listed" (e.g. Spamhaus 127.255.255.252/254/255).
DEFAULT_ERROR_CODES: tuple[str, ...] = ("127.255.255.252", "127.255.255.254", "127.255.255.255")

# RFC 5782 §2.1: listings are A records in 127.0.0.0/8; §5: never 127.0.0.1.
_LISTING_NET = ipaddress.ip_network("127.0.0.0/8")
_NEVER_LISTED = ipaddress.ip_address("127.0.0.1")

# Listed subjects named in one finding's detail; the rest are counted.
MAX_DETAIL_SUBJECTS = 5


@dataclass(frozen=True, slots=True)
class BlocklistConfig:
    """One DNS blocklist zone and how to read its answers."""

    zone: str
    # Score points a listing adds to the message (the list's weight).
    weight: float = field(default=1.0, metadata={"min": 0})
    # Answer address -> meaning, e.g. {"127.0.0.2": "spam source"}. An answer
    # inside 127.0.0.0/8 that is not mapped still counts as a listing.
    codes: dict[str, str] = field(default_factory=dict)
    # Answers meaning "query refused / error": logged and ignored, never a listing.
    error_codes: tuple[str, ...] = DEFAULT_ERROR_CODES
    # Short name for logs and findings; defaults to the zone.
    name: str = ""

    @property
    def label(self) -> str:
        """The list's name for findings and logs."""
        return self.name or normalise(self.zone)


class Listing(StrEnum):
    """How one list answered for one subject."""

    LISTED = "listed"
    CLEAR = "clear"
    ERROR = "error"  # an error code or an impossible answer: ignored
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Ask `blocklist` about `subject` (an IP or a domain) under `qname`."""

    blocklist: BlocklistConfig
    subject: str
    qname: str


@dataclass(frozen=True, slots=True)
class ListAnswer:
    """One list's reading for one subject; `detail` names the codes and meanings."""

    query: ListQuery
    listing: Listing
    detail: str = ""


def query_name(zone: str, prefix: str) -> str:
    """``<prefix>.<zone>``, lower-case, without a trailing dot."""
    return f"{prefix.strip('.')}.{normalise(zone)}".lower()


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as an address, or None when it is not one."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _address_set(texts: Sequence[str]) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The valid addresses among `texts` (config strings)."""
    return frozenset(a for a in map(_address, texts) if a is not None)


def read_answer(query: ListQuery, answer: DnsAnswer) -> ListAnswer:
    """What `answer` says about `query.subject` (see the module docstring)."""
    if answer.status is DnsStatus.TEMPERROR:
        return ListAnswer(query, Listing.TEMPERROR, answer.error or "temporary DNS error")
    if not answer.ok:
        return ListAnswer(query, Listing.CLEAR)
    blocklist = query.blocklist
    errors = _address_set(blocklist.error_codes)
    meanings = {a: text for key, text in blocklist.codes.items() if (a := _address(key))}
    found = [a for a in map(_address, answer.addresses()) if a is not None]
    if not found:
        return ListAnswer(query, Listing.ERROR, "answer holds no address")
    bad = [a for a in found if a in errors or a == _NEVER_LISTED or a not in _LISTING_NET]
    if bad:
        # One impossible address makes the whole answer untrustworthy.
        shown = ", ".join(str(a) for a in bad)
        return ListAnswer(query, Listing.ERROR, f"{shown} (error or refusal code, ignored)")
    detail = ", ".join(f"{a} {meanings.get(a, 'listed')}" for a in sorted(set(found)))
    return ListAnswer(query, Listing.LISTED, detail)


def ask_lists(resolver: Resolver, queries: Sequence[ListQuery]) -> list[ListAnswer]:
    """Look up every query's A record concurrently and read the answers."""
    answers = query_many(resolver, [(q.qname, "A") for q in queries])
    return [read_answer(q, a) for q, a in zip(queries, answers, strict=True)]


@dataclass(frozen=True, slots=True)
class Summary:
    """The outcome, reason and findings a blocklist check reports."""

    outcome: Outcome
    reason: str
    findings: tuple[Finding, ...]


def _describe(answers: Sequence[ListAnswer], with_subject: bool) -> str:
    """'<list>: <detail>' for one list's answers, subjects named if asked."""
    label = answers[0].query.blocklist.label
    parts = [f"{a.query.subject} {a.detail}" if with_subject else a.detail for a in answers]
    extra = len(parts) - MAX_DETAIL_SUBJECTS
    text = "; ".join(parts[:MAX_DETAIL_SUBJECTS])
    if extra > 0:
        text += f"; and {extra} more"
    return f"{label}: {text}"


def summarise(prefix: str, answers: Sequence[ListAnswer], with_subject: bool) -> Summary:
    """Fail on any listing, else temperror if a list was undecided, else pass.

    Each list gives at most one ``<prefix>.listed`` finding carrying the
    list's weight, however many subjects it lists, so one list cannot
    outvote the policy by listing many domains of one message.
    """
    by_list: dict[int, list[ListAnswer]] = {}
    for answer in answers:
        by_list.setdefault(id(answer.query.blocklist), []).append(answer)
    findings: list[Finding] = []
    listed_on: list[str] = []
    undecided: list[str] = []
    for group in by_list.values():
        blocklist = group[0].query.blocklist
        hits = [a for a in group if a.listing is Listing.LISTED]
        if hits:
            listed_on.append(blocklist.label)
            findings.append(
                Finding(f"{prefix}.listed", _describe(hits, with_subject), blocklist.weight)
            )
        errors = [a for a in group if a.listing is Listing.ERROR]
        if errors:
            findings.append(Finding(f"{prefix}.error_code", _describe(errors, with_subject)))
        temp = [a for a in group if a.listing is Listing.TEMPERROR]
        if temp and not hits:
            undecided.append(f"{blocklist.label} ({temp[0].detail})")
    if listed_on:
        return Summary(Outcome.FAIL, "listed on " + ", ".join(listed_on), tuple(findings))
    if undecided:
        return Summary(
            Outcome.TEMPERROR, "no answer from " + ", ".join(undecided), tuple(findings)
        )
    return Summary(Outcome.PASS, f"not listed on {len(by_list)} list(s)", tuple(findings))
