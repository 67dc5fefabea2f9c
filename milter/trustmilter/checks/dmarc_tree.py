"""The DMARC DNS Tree Walk (RFC 9989 §4.10): policy discovery and Organizational Domains.

RFC 9989 replaced RFC 7489's public suffix list with a walk up the DNS: ask
``_dmarc.<name>`` TXT at the starting name and then at each parent, stop at
a record with ``psd=y`` or ``psd=n``. One walk answers both questions DMARC
asks of a name: which record governs it (§4.10.1) and what its
Organizational Domain is, for relaxed alignment (§4.10.2).

The walk is bounded (§4.10 step 4): a name of eight or more labels is asked
about itself and then, skipping labels, from its last seven labels up, so no
walk costs more than eight queries, however deep the name a sender makes up.

Per message the names are bounded: at most 8 per walk, one walk per From
domain (at most 5, `dmarc.MAX_AUTHOR_DOMAINS`) and per SPF/DKIM domain that
relaxed alignment compares (SPF's one, DKIM's at most `max_signatures`),
and each name asked once however many walks pass through it.

The top half is pure: `walk_targets`, `read_walk`, `organizational_domain`,
`policy_record`. `TreeWalks` puts the queries through the check's resolver
(`ctx.dns`, so they share its cache and its per-domain fairness) and asks
the names of every walk a message needs at once, concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trustmilter.checks.dmarc_record import Record, dmarc_txts, parse_record
from trustmilter.domains import normalise
from trustmilter.lookup import DnsAnswer, DnsStatus, Resolver
from trustmilter.lookup.parallel import query_many

# RFC 9989 §4.10: "Author Domains with more than eight labels do not result in
# more than eight DNS queries"; step 4 shortens such names to seven labels.
MAX_QUERIES = 8
_SHORTENED_LABELS = MAX_QUERIES - 1


def walk_targets(domain: str) -> list[str]:
    """The names a Tree Walk from `domain` asks about, in order (RFC 9989 §4.10).

    Step 1 asks the starting name; step 4 drops its left-most label, or for
    x >= 8 labels as many as leave seven; step 7 then drops one label at a
    time down to the last one (the TLD: a PSD may publish there, §5.2)."""
    name = normalise(domain)
    labels = name.split(".")
    if not all(labels):
        return [name] if name else []  # not a domain name: ask about it alone
    rest = labels[1:] if len(labels) < MAX_QUERIES else labels[-_SHORTENED_LABELS:]
    targets = [".".join(labels)]
    while rest:
        targets.append(".".join(rest))
        rest = rest[1:]
    return targets


@dataclass(frozen=True, slots=True)
class Found:
    """One name the walk asked about: its single valid record, if it has one."""

    domain: str
    record: Record | None = None
    several: bool = False  # several v=DMARC1 records: all discarded (§4.10 step 2)


@dataclass(frozen=True, slots=True)
class Walk:
    """What a Tree Walk from `start` found, up to where it stopped.

    `temperror` is set when a query failed transiently; the walk stops
    there, since the unanswered name might have held the deciding record."""

    start: str
    found: tuple[Found, ...] = ()
    temperror: str = ""
    failed_at: str = ""

    def records(self) -> list[Found]:
        """The names with a valid record, longest first."""
        return [f for f in self.found if f.record is not None]


def read_walk(start: str, answer_for: Callable[[str], DnsAnswer]) -> Walk:
    """Run the walk over TXT answers for ``_dmarc.<name>`` (steps 1-7 of §4.10)."""
    start = normalise(start)
    found: list[Found] = []
    for target in walk_targets(start):
        answer = answer_for(target)
        if answer.status is DnsStatus.TEMPERROR:
            return Walk(start, tuple(found), answer.error or "temporary DNS error", target)
        records = dmarc_txts(answer)
        # Steps 2/6: several records at one name are all discarded; the walk goes on.
        record = parse_record(records[0]) if len(records) == 1 else None
        found.append(Found(target, record, len(records) > 1))
        if record is not None and record.psd in ("y", "n"):
            break  # steps 2/6: a psd=y or psd=n record stops the walk
    return Walk(start, tuple(found))


def _one_label_below(name: str, ancestor: str) -> str:
    """The name one label below `ancestor` on the way to `name`."""
    return ".".join(name.split(".")[-(ancestor.count(".") + 2):])


def organizational_domain(walk: Walk) -> str | None:
    """The Organizational Domain the walk determines (RFC 9989 §4.10.2), or None
    when a failed query leaves it open.

    Among the names with records, longest to shortest: psd=n makes that name
    the Organizational Domain (rule 1); psd=y, except at the starting name,
    makes it the name one label below (rule 2); else the record with the
    fewest labels (rule 3). No record at all: the starting name itself."""
    records = walk.records()
    for found in records:
        assert found.record is not None
        if found.record.psd == "n":
            return found.domain
        if found.record.psd == "y" and found.domain != walk.start:
            return _one_label_below(walk.start, found.domain)
    if walk.temperror:
        return None
    return records[-1].domain if records else walk.start


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """Where policy discovery (RFC 9989 §4.10.1) ended for an Author Domain."""

    record: Record | None = None
    domain: str = ""  # where the record was found (without one: where several were)
    inherited: bool = False  # from the Organizational Domain or the PSD: sp=/np= apply
    from_psd: bool = False  # from a Public Suffix Domain (psd=y)
    org_domain: str | None = None
    several: bool = False  # a name held several records (all discarded)
    temperror: str = ""
    failed_at: str = ""


def policy_record(walk: Walk) -> PolicyRecord:
    """The record that applies to the walk's starting name (RFC 9989 §4.10.1).

    In order of preference: the Author Domain's own record, the
    Organizational Domain's, the Public Suffix Domain's (psd=y). A PSD's
    record never overrides an Organizational Domain that has one (§4.10.1,
    last note)."""
    several = next((f.domain for f in walk.found if f.several), "")
    org = organizational_domain(walk)
    own = walk.found[0] if walk.found and walk.found[0].domain == walk.start else None
    if own is not None and own.record is not None:
        return PolicyRecord(own.record, own.domain, org_domain=org)
    if org is None:
        return PolicyRecord(temperror=walk.temperror, failed_at=walk.failed_at)
    by_domain = {f.domain: f.record for f in walk.records()}
    if org in by_domain:
        return PolicyRecord(by_domain[org], org, inherited=True, org_domain=org)
    for found in walk.records():
        if found.record is not None and found.record.psd == "y" and found.domain != walk.start:
            return PolicyRecord(found.record, found.domain, inherited=True, from_psd=True,
                                org_domain=org)
    # No record applies; say where several were discarded, if anywhere.
    return PolicyRecord(domain=several, org_domain=org, several=bool(several))


class TreeWalks:
    """The Tree Walks of one message, through the check's resolver.

    Made per message and dropped after it (no state outlives the check's
    run). `ask` queries every name of the given walks at once: the names of
    a walk are fixed by its starting name, so they do not depend on each
    other's answers. A walk that a psd= record stops early has then asked a
    few names in vain; asking one at a time would make the common walk
    (three or four names) wait for each in turn."""

    def __init__(self, dns: Resolver) -> None:
        self._dns = dns
        self._answers: dict[str, DnsAnswer] = {}

    def ask(self, starts: Iterable[str]) -> None:
        """Query, concurrently, every name the walks from `starts` need that is not known yet."""
        names = [t for s in starts for t in walk_targets(s) if t not in self._answers]
        names = list(dict.fromkeys(names))
        answers = query_many(self._dns, [(f"_dmarc.{n}", "TXT") for n in names])
        self._answers.update(zip(names, answers, strict=True))

    def answer(self, name: str) -> DnsAnswer:
        """The TXT answer for ``_dmarc.<name>``, asked now if it was not asked yet."""
        if name not in self._answers:
            self._answers[name] = self._dns.query(f"_dmarc.{name}", "TXT")
        return self._answers[name]

    def walk(self, start: str) -> Walk:
        """The walk from `start` (its names asked together first)."""
        self.ask([start])
        return read_walk(start, self.answer)

    def org_domain(self, name: str) -> str | None:
        """The Organizational Domain of `name` (§4.10.2), None if the DNS left it open."""
        return organizational_domain(self.walk(name))
