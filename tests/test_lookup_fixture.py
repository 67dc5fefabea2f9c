"""The zone-style fixture: parsing, lookup semantics, dump, record and replay."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trustmilter.lookup import DnsConfig, DnsStatus, NetworkResolver, build_resolver
from trustmilter.lookup.answer import DnsAnswer
from trustmilter.lookup.fixture import (
    Fixture,
    FixtureError,
    FixtureResolver,
    RecordingResolver,
    dump,
)
from trustmilter.testing.dnsserver import DnsTestServer

ZONE = """\
; a small zone
example.com.        300 IN TXT   "v=spf1 ip4:192.0.2.1 -all"
example.com.        600 IN MX    10 mail.example.com.
example.com.        600 IN MX    20 backup.example.com.
mail.example.com.   300 IN A     192.0.2.1
mail.example.com.       IN AAAA  2001:db8::1
1.2.0.192.in-addr.arpa. 300 IN PTR mail.example.com.
www.example.com.    60 IN CNAME  example.com.
alias.example.com.  30 IN CNAME  www.example.com.
dangling.example.com.  IN CNAME  gone.example.com.
loop1.example.com.     IN CNAME  loop2.example.com.
loop2.example.com.     IN CNAME  loop1.example.com.
deep.a.b.example.com.  IN A      192.0.2.3
*.wild.example.org. 120 IN A     192.0.2.9
big.example.net.       IN TXT    "part one " "part two"
odd.example.net.       IN TYPE65000 \\# 3 010203
$NXDOMAIN  gone.example.com.
$NODATA    example.com. AAAA
$SERVFAIL  broken.example.net. TXT
$SERVFAIL  allbroken.example.net.
$TIMEOUT   slow.example.net. TXT
"""


@pytest.fixture(scope="module")
def fixture() -> Fixture:
    return Fixture.parse(ZONE)


@pytest.mark.parametrize(
    ("name", "rdtype", "status"),
    [
        ("example.com", "TXT", DnsStatus.ANSWER),
        ("EXAMPLE.com.", "txt", DnsStatus.ANSWER),
        ("example.com", "AAAA", DnsStatus.NODATA),  # $NODATA
        ("example.com", "A", DnsStatus.NODATA),  # name has other types
        ("b.example.com", "A", DnsStatus.NODATA),  # empty non-terminal
        ("gone.example.com", "A", DnsStatus.NXDOMAIN),  # $NXDOMAIN
        ("absent.example.com", "A", DnsStatus.NXDOMAIN),
        ("dangling.example.com", "A", DnsStatus.NXDOMAIN),  # CNAME to nowhere
        ("loop1.example.com", "A", DnsStatus.TEMPERROR),
        ("broken.example.net", "TXT", DnsStatus.TEMPERROR),
        ("broken.example.net", "A", DnsStatus.NXDOMAIN),  # only TXT fails
        ("allbroken.example.net", "MX", DnsStatus.TEMPERROR),  # no type: all fail
        ("slow.example.net", "TXT", DnsStatus.TEMPERROR),
        ("x.wild.example.org", "A", DnsStatus.ANSWER),
        ("wild.example.org", "A", DnsStatus.NODATA),  # the wildcard's parent exists
        ("x.wild.example.org", "MX", DnsStatus.NODATA),
        ("a..b.example.com", "A", DnsStatus.NXDOMAIN),  # invalid name
        ("x" * 64 + ".example.com", "A", DnsStatus.NXDOMAIN),
    ],
)
def test_lookup_status(fixture: Fixture, name: str, rdtype: str, status: DnsStatus) -> None:
    assert fixture.lookup(name, rdtype).status is status


def test_answer_carries_records_ttl_and_normal_name(fixture: Fixture) -> None:
    answer = fixture.lookup("Mail.Example.COM.", "a")
    assert (answer.name, answer.rdtype, answer.ttl) == ("mail.example.com", "A", 300)
    assert answer.addresses() == ["192.0.2.1"]
    assert fixture.lookup("mail.example.com", "AAAA").ttl == 300  # default TTL
    assert fixture.lookup("example.com", "MX").mx_hosts() == [
        (10, "mail.example.com"),
        (20, "backup.example.com"),
    ]
    assert fixture.lookup("1.2.0.192.in-addr.arpa", "PTR").targets() == ["mail.example.com"]
    assert fixture.lookup("big.example.net", "TXT").txt_strings() == [b"part one part two"]
    assert fixture.lookup("odd.example.net", "TYPE65000").ok


def test_cname_chain_is_flattened_with_smallest_ttl(fixture: Fixture) -> None:
    answer = fixture.lookup("alias.example.com", "TXT")
    assert answer.name == "alias.example.com"
    assert answer.txt_strings() == [b"v=spf1 ip4:192.0.2.1 -all"]
    assert answer.ttl == 30
    chain = fixture.resolve("alias.example.com", "TXT").chain
    assert [(rs.owner, rs.rdtype) for rs in chain] == [
        ("alias.example.com", "CNAME"),
        ("www.example.com", "CNAME"),
        ("example.com", "TXT"),
    ]
    # Asking for the CNAME itself does not follow it.
    assert fixture.lookup("www.example.com", "CNAME").targets() == ["example.com"]


def test_wildcard_answers_under_the_asked_name(fixture: Fixture) -> None:
    resolution = fixture.resolve("a.b.wild.example.org", "A")
    assert resolution.chain[0].owner == "a.b.wild.example.org"
    assert resolution.answer().addresses() == ["192.0.2.9"]
    assert resolution.answer().ttl == 120


def test_negative_answers_carry_an_soa(fixture: Fixture) -> None:
    resolution = fixture.resolve("absent.example.com", "A")
    assert resolution.soa is not None and resolution.soa.owner == "example.com"
    assert resolution.answer().ttl == 300
    own = Fixture.parse(
        "example.com. 3600 IN SOA ns.example.com. h.example.com. 1 2 3 4 60\n"
        "a.example.com. IN A 192.0.2.1\n"
    )
    negative = own.resolve("b.a.example.com", "A")
    assert negative.soa is not None and negative.soa.ttl == 3600
    assert negative.answer().ttl == 60  # min(SOA TTL, MINIMUM), RFC 2308 §5


def test_temperror_reasons(fixture: Fixture) -> None:
    assert fixture.lookup("slow.example.net", "TXT").error == "timeout"
    assert fixture.lookup("broken.example.net", "TXT").error == "SERVFAIL"
    assert fixture.lookup("loop1.example.com", "A").error == "CNAME loop"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("example.com. IN TXT\n", 1, "missing TXT rdata"),
        ("; ok\n\nexample.com. IN A 999.1.1.1\n", 3, "bad A rdata"),
        ("example.com. IN BOGUS 1\n", 1, "unknown DNS record type"),
        ("example.com. 300 CH TXT \"x\"\n", 1, "only IN"),
        ("ok.example. A 192.0.2.1\n$FROB x.example.\n", 2, "unknown directive"),
        ("$NODATA x.example.\n", 1, "$NODATA takes name TYPE"),
        ("$NXDOMAIN x.example. A\n", 1, "$NXDOMAIN takes name"),
        ("$TIMEOUT a..b.example. TXT\n", 1, "not a valid DNS name"),
        ("example.com.\n", 1, "missing record type"),
        ("example.com. 99999999999 A 192.0.2.1\n", 1, "bad TTL"),
    ],
)
def test_parse_errors_name_source_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(FixtureError) as caught:
        Fixture.parse(text, source="zone.txt")
    assert str(caught.value).startswith(f"zone.txt:{line}: ")
    assert message in str(caught.value)


def test_load_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "zone.txt"
    path.write_text("mail.example.com. A 192.0.2.1\nbad line here\n")
    with pytest.raises(FixtureError, match=rf"^{path}:2: "):
        Fixture.load(path)


def test_dump_parse_round_trip(fixture: Fixture) -> None:
    asked = [
        ("example.com", "TXT"),
        ("example.com", "MX"),
        ("alias.example.com", "TXT"),
        ("alias.example.com", "CNAME"),
        ("mail.example.com", "AAAA"),
        ("1.2.0.192.in-addr.arpa", "PTR"),
        ("example.com", "AAAA"),
        ("gone.example.com", "A"),
        ("dangling.example.com", "A"),
        ("slow.example.net", "TXT"),
        ("broken.example.net", "TXT"),
        ("big.example.net", "TXT"),
        ("odd.example.net", "TYPE65000"),
        ("x.wild.example.org", "A"),
    ]
    answers = [fixture.lookup(name, rdtype) for name, rdtype in asked]
    replayed = Fixture.parse(dump(answers), source="dump")
    assert [replayed.lookup(name, rdtype) for name, rdtype in asked] == answers


def test_dump_keeps_the_first_answer_and_skips_invalid_names() -> None:
    first = DnsAnswer("a.example", "A", DnsStatus.NXDOMAIN)
    later = DnsAnswer("a.example", "A", DnsStatus.NODATA)
    text = dump([first, later, DnsAnswer("a..b", "A", DnsStatus.NXDOMAIN)])
    assert "$NXDOMAIN a.example." in text and "$NODATA" not in text and "a..b" not in text
    Fixture.parse(text)


def test_recorded_answers_replay_identically(
    dns_server: DnsTestServer, resolver: NetworkResolver, tmp_path: Path
) -> None:
    dns_server.load(ZONE)
    path = tmp_path / "recorded.zone"
    recording = RecordingResolver(resolver)
    asked = [
        ("example.com", "TXT"),
        ("example.com", "MX"),
        ("alias.example.com", "TXT"),
        ("example.com", "AAAA"),
        ("gone.example.com", "A"),
        ("broken.example.net", "TXT"),
        ("x.wild.example.org", "A"),
        ("big.example.net", "TXT"),
        ("example.com", "TXT"),  # asked twice, recorded once
    ]
    seen = [recording.query(name, rdtype) for name, rdtype in asked]
    assert len(recording.answers()) == len(asked) - 1
    recording.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["recorded.zone"]  # no temp file left
    replay = build_resolver(DnsConfig(), fixture_path=path)
    assert isinstance(replay, FixtureResolver)
    assert [replay.query(name, rdtype) for name, rdtype in asked] == seen


def test_build_resolver_records_to_a_path(dns_server: DnsTestServer, tmp_path: Path) -> None:
    dns_server.load("mail.example.com. 300 IN A 192.0.2.1\n")
    nameserver = dns_server.nameserver
    path = tmp_path / "out.zone"
    recording = build_resolver(DnsConfig(nameservers=(nameserver,)), record_to=path)
    assert isinstance(recording, RecordingResolver)
    recording.query("mail.example.com", "A")
    recording.write()
    assert "mail.example.com. 300 IN A 192.0.2.1" in path.read_text()
