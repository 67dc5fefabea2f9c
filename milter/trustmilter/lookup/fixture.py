"""Zone-style DNS fixtures: parse, answer like a server, record and dump.

One text format serves the test DNS server (tests/dnsserver.py), offline
replay (`trustmilter check --dns-fixture`) and recording (`--record-dns`)::

    ; comment
    example.com.       300 IN TXT  "v=spf1 ip4:192.0.2.1 -all"   name [TTL] [IN] TYPE rdata
    www.example.com.   300 IN CNAME example.com.
    *.wild.example.    300 IN A    192.0.2.7
    $NXDOMAIN  gone.example.com.
    $NODATA    example.com. AAAA
    $SERVFAIL  broken.example.net. [TYPE]    (no TYPE: every type fails)
    $TIMEOUT   slow.example.net. [TYPE]      (the server never answers)

Names are absolute with or without the final dot; there is no $ORIGIN, '@'
or multi-line parentheses. Rdata is parsed by dnspython, so every type it
knows works, generic ``\\# len hex`` included. TTL defaults to 300.

A lookup of (name, type), in this order: a $SERVFAIL/$TIMEOUT directive
gives TEMPERROR; records of that type give ANSWER; $NODATA for that type
gives NODATA; $NXDOMAIN gives NXDOMAIN; a CNAME is followed (inside the
fixture, at most 16 links; a loop is TEMPERROR); a name that owns anything,
or has descendants (an empty non-terminal), gives NODATA; a wildcard at the
closest encloser answers for a name that does not exist (RFC 4592 §3.3.1);
anything else is NXDOMAIN. Exact records are tried before $NXDOMAIN and
CNAMEs so that a recording with contradictory answers (a flattened CNAME
next to the CNAME itself) replays each answer as it was seen.

Negative answers carry an SOA (RFC 2308 §3): the fixture's own SOA at the
name or its closest ancestor, else a made-up one for the name's last two
labels with TTL and MINIMUM 300. Their TTL is min(SOA TTL, MINIMUM).

It does not do DNAME, DNSSEC or delegations. `Fixture.parse` raises
FixtureError naming the source and line; `Fixture.load` also raises OSError.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.ttl

from trustmilter.lookup.answer import DnsAnswer, DnsStatus, Resolver
from trustmilter.lookup.resolver import name_key, plain_name, to_name, type_text

DEFAULT_TTL = 300
DEFAULT_NEGATIVE_TTL = 300  # the made-up SOA's TTL and MINIMUM
MAX_CNAME_CHAIN = 16  # links followed before calling it a loop
TIMEOUT = "timeout"  # DnsAnswer.error of a $TIMEOUT, as NetworkResolver reports it
SERVFAIL = "SERVFAIL"

_ALL_TYPES = ""  # failure-directive key meaning "every type"


class FixtureError(ValueError):
    """A fixture line that cannot be understood; the message names source:line."""


@dataclass(frozen=True, slots=True)
class RecordSet:
    """Records of one owner and type: what one answer-section RRset holds."""

    owner: str  # answer-name form: lower-case, no trailing dot
    rdtype: str
    ttl: int
    rdatas: tuple[dns.rdata.Rdata, ...]


@dataclass(frozen=True, slots=True)
class Resolution:
    """What an authoritative server holding the fixture would reply."""

    name: str
    rdtype: str
    status: DnsStatus
    chain: tuple[RecordSet, ...] = ()  # answer section: CNAMEs followed, then the records
    soa: RecordSet | None = None  # authority section of a negative answer
    error: str = ""  # TEMPERROR: "timeout", "SERVFAIL", "CNAME loop"

    def answer(self) -> DnsAnswer:
        """The flattened answer a stub resolver makes of this reply."""
        ttls = [rs.ttl for rs in self.chain]
        if self.status is DnsStatus.ANSWER:
            return DnsAnswer(self.name, self.rdtype, self.status, self.chain[-1].rdatas, min(ttls))
        if self.soa is not None:
            ttls.append(_negative_ttl(self.soa))
        ttl = min(ttls) if ttls and self.status is not DnsStatus.TEMPERROR else 0
        return DnsAnswer(self.name, self.rdtype, self.status, (), ttl, self.error)


class Fixture:
    """An immutable set of records and scripted failures; safe to share across threads."""

    __slots__ = ("_existing", "_failures", "_nodata", "_nxdomain", "_records")

    def __init__(
        self,
        records: Mapping[tuple[str, str], RecordSet] | None = None,
        nodata: Iterable[tuple[str, str]] = (),
        nxdomain: Iterable[str] = (),
        failures: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self._records = dict(records or {})
        self._nodata = frozenset(nodata)
        self._nxdomain = frozenset(nxdomain)
        self._failures = dict(failures or {})  # (name, type or "") -> error
        existing: set[str] = set()
        for owner in [name for name, _ in self._records] + [name for name, _ in self._nodata]:
            # An owner and every ancestor exist: ancestors are empty
            # non-terminals (RFC 8020), answered NODATA rather than NXDOMAIN.
            labels = owner.split(".")
            existing.update(".".join(labels[i:]) for i in range(len(labels)))
        self._existing = frozenset(existing)

    # ---- reading -------------------------------------------------------

    @classmethod
    def parse(cls, text: str, source: str = "<fixture>") -> Fixture:
        """Parse fixture text; raises FixtureError naming `source` and the line."""
        records: dict[tuple[str, str], list[tuple[int, dns.rdata.Rdata]]] = {}
        nodata: list[tuple[str, str]] = []
        nxdomain: list[str] = []
        failures: dict[tuple[str, str], str] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            try:
                if line.startswith("$"):
                    directive, name, kind = _parse_directive(line)
                    if directive == "$NXDOMAIN":
                        nxdomain.append(name)
                    elif directive == "$NODATA":
                        nodata.append((name, kind))
                    else:
                        failures[(name, kind)] = TIMEOUT if directive == "$TIMEOUT" else SERVFAIL
                else:
                    owner, ttl, kind, rdata = _parse_record(line)
                    found = records.setdefault((owner, kind), [])
                    if all(rdata != seen for _, seen in found):
                        found.append((ttl, rdata))
            except FixtureError as error:
                raise FixtureError(f"{source}:{number}: {error}") from None
        rrsets = {
            key: RecordSet(key[0], key[1], min(ttl for ttl, _ in found), tuple(r for _, r in found))
            for key, found in records.items()
        }
        return cls(rrsets, nodata, nxdomain, failures)

    @classmethod
    def load(cls, path: Path | str) -> Fixture:
        """Read and parse a fixture file; raises OSError or FixtureError."""
        return cls.parse(Path(path).read_text(encoding="utf-8"), source=str(path))

    # ---- answering -----------------------------------------------------

    def lookup(self, name: str, rdtype: str) -> DnsAnswer:
        """The answer a stub resolver would get for `rdtype` records of `name`."""
        return self.resolve(name, rdtype).answer()

    def resolve(self, name: str, rdtype: str) -> Resolution:
        """The full server reply (CNAME chain, SOA) for `rdtype` records of `name`."""
        kind = type_text(rdtype)
        qname = to_name(name)
        if qname is None:
            return Resolution(plain_name(name), kind, DnsStatus.NXDOMAIN, error="invalid name")
        asked = name_key(qname)
        chain: list[RecordSet] = []
        current = asked
        while True:
            failure = self._failures.get((current, kind), self._failures.get((current, _ALL_TYPES)))
            if failure:
                return Resolution(asked, kind, DnsStatus.TEMPERROR, error=failure)
            status, records = self._node(current, kind)
            if records is None:  # NXDOMAIN or NODATA at the end of the chain
                return Resolution(asked, kind, status, tuple(chain), self._soa(current))
            if records.rdtype == kind:
                return Resolution(asked, kind, status, (*chain, records))
            # A CNAME: RFC 1034 §3.6.2, restart the lookup at its target.
            chain.append(records)
            target = records.rdatas[0]
            assert isinstance(target, dns.rdtypes.ANY.CNAME.CNAME)  # parse() made it one
            current = name_key(target.target)
            if len(chain) > MAX_CNAME_CHAIN or current in {rs.owner for rs in chain}:
                return Resolution(asked, kind, DnsStatus.TEMPERROR, error="CNAME loop")

    def _node(self, name: str, kind: str) -> tuple[DnsStatus, RecordSet | None]:
        """What `name` holds for `kind`: its records, its CNAME, or a negative status."""
        records = self._records.get((name, kind))
        if records is not None:
            return DnsStatus.ANSWER, records
        if (name, kind) in self._nodata:
            return DnsStatus.NODATA, None
        if name in self._nxdomain:
            return DnsStatus.NXDOMAIN, None
        cname = self._records.get((name, "CNAME")) if kind != "CNAME" else None
        if cname is not None:
            return DnsStatus.ANSWER, cname
        if name in self._existing:
            return DnsStatus.NODATA, None
        return self._wildcard(name, kind)

    def _wildcard(self, name: str, kind: str) -> tuple[DnsStatus, RecordSet | None]:
        """Synthesize from ``*.<closest encloser>`` for a name that does not exist (RFC 4592)."""
        labels = name.split(".")
        for i in range(1, len(labels)):
            encloser = ".".join(labels[i:])
            if encloser not in self._existing:
                continue
            source = "*." + encloser
            if source not in self._existing:
                break  # only the closest encloser's wildcard applies (RFC 4592 §3.3.1)
            records = self._records.get((source, kind))
            if records is None and kind != "CNAME":
                records = self._records.get((source, "CNAME"))
            if records is None:
                return DnsStatus.NODATA, None
            return DnsStatus.ANSWER, RecordSet(name, records.rdtype, records.ttl, records.rdatas)
        return DnsStatus.NXDOMAIN, None

    def _soa(self, name: str) -> RecordSet:
        """The SOA of the zone holding `name`: the fixture's own, else a made-up one."""
        labels = name.split(".")
        for i in range(len(labels)):
            soa = self._records.get((".".join(labels[i:]), "SOA"))
            if soa is not None:
                return soa
        zone = ".".join(labels[-2:])
        text = f"ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 {DEFAULT_NEGATIVE_TTL}"
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, text)
        return RecordSet(zone, "SOA", DEFAULT_NEGATIVE_TTL, (rdata,))


def _negative_ttl(soa: RecordSet) -> int:
    """min(SOA TTL, SOA MINIMUM): how long a negative answer lives (RFC 2308 §5)."""
    rdata = soa.rdatas[0]
    minimum = rdata.minimum if isinstance(rdata, dns.rdtypes.ANY.SOA.SOA) else soa.ttl
    return min(soa.ttl, int(minimum))


def _owner(text: str) -> str:
    """A fixture owner name in answer-name form; FixtureError if it is not a DNS name."""
    name = to_name(text)
    if name is None:
        raise FixtureError(f"{text!r} is not a valid DNS name")
    return name_key(name)


def _kind(text: str) -> str:
    """A record type mnemonic; FixtureError if dnspython does not know it."""
    try:
        return type_text(text)
    except ValueError as error:
        raise FixtureError(str(error)) from None


def _parse_directive(line: str) -> tuple[str, str, str]:
    """``$DIRECTIVE name [TYPE]`` -> (directive, owner, type or "")."""
    words = line.split(";", 1)[0].split()
    directive = words[0].upper()
    arity = {"$NXDOMAIN": (1, 1), "$NODATA": (2, 2), "$SERVFAIL": (1, 2), "$TIMEOUT": (1, 2)}
    if directive not in arity:
        raise FixtureError(f"unknown directive {words[0]!r}")
    low, high = arity[directive]
    if not low <= len(words) - 1 <= high:
        usage = "name TYPE" if low == 2 else "name" if high == 1 else "name [TYPE]"
        raise FixtureError(f"{directive} takes {usage}")
    kind = _kind(words[2]) if len(words) > 2 else _ALL_TYPES
    return directive, _owner(words[1]), kind


def _parse_record(line: str) -> tuple[str, int, str, dns.rdata.Rdata]:
    """``name [TTL] [IN] TYPE rdata`` -> (owner, ttl, type, rdata)."""
    owner_text, rest = _split(line)
    ttl: int | None = None
    klass_seen = False
    while True:
        word, remainder = _split(rest)
        if not word:
            raise FixtureError("missing record type")
        if ttl is None and word[0].isdigit():
            try:
                ttl = int(dns.ttl.from_text(word))
            except dns.exception.DNSException:
                raise FixtureError(f"bad TTL {word!r}") from None
        elif not klass_seen and word.upper() in ("IN", "CH", "HS", "CS"):
            if word.upper() != "IN":
                raise FixtureError(f"class {word} is not supported, only IN")
            klass_seen = True
        else:
            break
        rest = remainder
    kind = _kind(word)
    if not remainder:
        raise FixtureError(f"missing {kind} rdata")
    try:
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, kind, remainder, origin=dns.name.root, relativize=False
        )
    except Exception as error:  # dnspython raises many types for bad rdata text
        raise FixtureError(f"bad {kind} rdata {remainder!r}: {error}") from None
    return _owner(owner_text), DEFAULT_TTL if ttl is None else ttl, kind, rdata


def _split(text: str) -> tuple[str, str]:
    """The first whitespace-separated word of `text` and the stripped rest."""
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


# ---- writing ---------------------------------------------------------


def dump(answers: Iterable[DnsAnswer]) -> str:
    """Fixture text that replays `answers` (the first per name and type wins)."""
    lines = ["; trustmilter DNS fixture (format: trustmilter.lookup.fixture)"]
    seen: set[tuple[str, str]] = set()
    for answer in answers:
        key = (answer.name, answer.rdtype)
        if key in seen:
            continue
        seen.add(key)
        if to_name(answer.name) is None:
            continue  # not a DNS name: replay answers NXDOMAIN without a line
        owner = answer.name + "."
        if answer.status is DnsStatus.ANSWER and answer.rdatas:
            lines.extend(
                f"{owner} {answer.ttl} IN {answer.rdtype} {rdata.to_text()}"
                for rdata in answer.rdatas
            )
        elif answer.status is DnsStatus.NXDOMAIN:
            lines.append(f"$NXDOMAIN {owner}")
        elif answer.status is DnsStatus.TEMPERROR:
            directive = "$TIMEOUT" if answer.error == TIMEOUT else "$SERVFAIL"
            lines.append(f"{directive} {owner} {answer.rdtype}")
        else:
            lines.append(f"$NODATA {owner} {answer.rdtype}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers never see half a file."""
    directory = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # a fixture is test data, not a secret
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---- resolvers ---------------------------------------------------------


class FixtureResolver:
    """Answers from a fixture, instantly and offline: replay of a recorded run."""

    __slots__ = ("fixture",)

    def __init__(self, fixture: Fixture) -> None:
        self.fixture = fixture

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """The fixture's answer; a $TIMEOUT is reported at once as TEMPERROR "timeout"."""
        return self.fixture.lookup(name, rdtype)

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        """Always: a fixture never waits."""
        return True

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        return self.query(name, rdtype)


class RecordingResolver:
    """Passes queries to `inner` and keeps every answer, to write as a fixture."""

    __slots__ = ("_answers", "_inner", "_lock", "path")

    def __init__(self, inner: Resolver, path: Path | None = None) -> None:
        self._inner = inner
        self.path = path  # where `write()` goes when not given a path
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str], DnsAnswer] = {}

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Ask `inner` and remember the answer (the first per name and type)."""
        answer = self._inner.query(name, rdtype)
        with self._lock:
            self._answers.setdefault((answer.name, answer.rdtype), answer)
        return answer

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        return self._inner.answers_at_once(name, rdtype)

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        """A cache hit of `inner`, remembered like any answer."""
        answer = self._inner.query_cached(name, rdtype)
        if answer is not None:
            with self._lock:
                self._answers.setdefault((answer.name, answer.rdtype), answer)
        return answer

    def answers(self) -> list[DnsAnswer]:
        """Every distinct answer seen, in first-seen order."""
        with self._lock:
            return list(self._answers.values())

    def write(self, path: Path | None = None) -> None:
        """Write the answers as a fixture file, atomically (mode 0644)."""
        target = path if path is not None else self.path
        if target is None:
            raise ValueError("RecordingResolver.write: no path given")
        write_atomically(Path(target), dump(self.answers()))
