"""Rate tiers and the allow-list through the engine: real SPF, DKIM and DMARC.

Whole transactions (MAIL FROM, RCPT TO, end of message) on the shipped
policy.yaml, with the DNS test server answering and an in-memory state
store, on a clock the test moves (no test sleeps). What a sending MTA would
see is asserted: the action, the stage, the SMTP reply and, through the
verdict record, the line the daemon logs. The Postfix-level counterparts
(the VERP robot, two tickets, the allow-list's headers) are in
tests/test_rate_postfix.py; here the cases that need hundreds of messages.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from trustmilter.app import App
from trustmilter.config.load import parse_settings
from trustmilter.daemon.verdictlog import format_verdict_line, parse_verdict_line
from trustmilter.engine import Client, Transaction, VerdictRecord
from trustmilter.lookup.resolver import build_resolver
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"
KEY = rsa_key(1024)
T0 = 1_764_000_000.0
ROBOT_SERVER = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")
FORWARDER = Client(ipaddress.ip_address("198.51.100.25"), "mx.forwarder.example.net",
                   "mx.forwarder.example.net")
FORGER = Client(ipaddress.ip_address("198.51.100.7"), "out.sender.example.net",
                "out.sender.example.net")
ZONE = GOOD_SENDER + key_zone(KEY, "sel", "example.com") + """
example.org.                300 IN MX  10 mx.example.org.
example.org.                300 IN A   192.0.2.20
forwarder.example.net.      300 IN TXT "v=spf1 ip4:198.51.100.25 -all"
forwarder.example.net.      300 IN MX  10 mx.forwarder.example.net.
forwarder.example.net.      300 IN A   198.51.100.25
mx.forwarder.example.net.   300 IN A   198.51.100.25
25.100.51.198.in-addr.arpa. 300 IN PTR mx.forwarder.example.net.
sender.example.net.         300 IN TXT "v=spf1 ip4:198.51.100.7 -all"
sender.example.net.         300 IN MX  10 out.sender.example.net.
out.sender.example.net.     300 IN A   198.51.100.7
7.100.51.198.in-addr.arpa.  300 IN PTR out.sender.example.net.
"""


@dataclass
class Mta:
    """The engine on the shipped policy, its store and its clock."""

    app: App
    store: MemoryStore
    now: list[float]

    def send(self, raw: bytes, sender: str, client: Client = ROBOT_SERVER,
             rcpt: str = "support@example.org") -> tuple[VerdictRecord, object]:
        """One transaction a second after the last; its record and outcome."""
        self.now[0] += 1
        records: list[VerdictRecord] = []
        tx = Transaction(self.app, client, sender, None, observer=records.append)
        assert tx.opening() is None
        outcome = None
        if tx.recipient(rcpt) is None:
            outcome = tx.finish(Message(raw), f"Q{len(records)}")
        [record] = records
        return record, outcome


def fate(record: VerdictRecord) -> str:
    action = record.verdict.action.value
    return f"{action}@rcpt" if record.stage == "rcpt" else action


def signed(from_: str = "Robot <robot@example.com>", subject: str = "Your ticket",
           **kw: object) -> bytes:
    return sign(message(from_=from_, subject=subject, **kw), KEY, "example.com")  # type: ignore[arg-type]


def build(nameserver: str, edits: tuple[tuple[str, str], ...] = ()) -> Iterator[Mta]:
    text = SHIPPED.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    settings = parse_settings(text, "policy.yaml")
    settings = replace(settings, authserv_id="mx.example.org", dns=replace(
        settings.dns, nameservers=(nameserver,), timeout=0.5, lifetime=1.0))
    store, now = MemoryStore(), [T0]
    with ThreadPoolExecutor(8) as pool:
        yield Mta(App.build(settings, resolver=build_resolver(settings.dns), executor=pool,
                            state=store, clock=lambda: now[0]), store, now)


@pytest.fixture
def mta(dns_server) -> Iterator[Mta]:
    dns_server.load(ZONE)
    yield from build(dns_server.nameserver)


ALLOWLIST_NOREPLY = (("    senders: []\n", "    senders: [noreply@example.com]\n"),)


@pytest.fixture
def allowlisting_mta(dns_server) -> Iterator[Mta]:
    dns_server.load(ZONE)
    yield from build(dns_server.nameserver, ALLOWLIST_NOREPLY)


# ---- one sender however its return path is dressed --------------------------------


@pytest.mark.parametrize(("client", "dressed", "identity"), [
    (ROBOT_SERVER, "bounce+{i}-support=example.org@example.com", "bounce@example.com"),  # VERP
    (FORWARDER, "SRS0=h{i:03d}=TT=example.com=robot@forwarder.example.net",
     "robot@example.com"),  # rewritten by a forwarder
    (ROBOT_SERVER, "prvs=0{i:03d}abcdef=robot@example.com", "robot@example.com"),  # BATV
])
def test_a_robot_with_a_changing_return_path_gets_20_20_then_refused(
        mta, client, dressed, identity):
    raw = signed()
    fates = [fate(mta.send(raw, dressed.format(i=i), client)[0]) for i in range(45)]
    assert fates == ["accept"] * 20 + ["quarantine"] * 20 + ["reject"] * 5
    record, _ = mta.send(raw, dressed.format(i=99), client)
    fields = dict(record.pairs())
    assert fields["reply"] == "550 5.7.1 Too many messages from this sender in the last hour"
    assert fields["rate"] == "fail" and fields["rate_count"] == "46"
    # Authenticated as itself (the SRS forwarder's SPF pass is its own: DKIM did it);
    # both keys reached 46, the first in the policy's order is named.
    assert fields["rate_key"] == f"envelope:{identity}|ticket:{_hashed('your ticket')}"


def test_two_tickets_of_one_user_are_counted_apart(mta):
    for _ in range(41):
        first, _ = mta.send(signed(subject="Printer broken"), "robot@example.com")
    assert fate(first) == "reject"
    other, _ = mta.send(signed(subject="A new question"), "robot@example.com")
    assert fate(other) == "accept"


# ---- the attack: forged envelope senders must not spend the real sender's hour ------


def test_forgers_cannot_spend_alices_hour(mta):
    alice = "alice@example.com"
    raw = signed(from_="Alice <alice@example.com>", subject="Order 17")
    forged = Counter(fate(mta.send(raw.split(b"\r\n", 1)[1], alice, FORGER)[0])
                     for _ in range(41))
    # Held for DMARC (p=reject, from a host in good standing), from the 21st refused
    # on the forgers' own, stricter count.
    assert forged == {"quarantine": 20, "reject": 21}
    record, _ = mta.send(raw, alice)
    assert fate(record) == "accept", dict(record.pairs())
    assert "rate_key" not in dict(record.pairs())
    own = [fate(mta.send(raw, alice)[0]) for _ in range(40)]
    assert own[-1] == "reject" and own.count("accept") == 19, own  # her 41st


def test_the_forgers_own_count_is_apart_and_stricter(mta):
    raw = message(from_="Alice <alice@example.com>", subject="Order 18")  # unsigned
    records = [mta.send(raw, "alice@example.com", FORGER)[0] for _ in range(21)]
    line = dict(records[-1].pairs())
    assert line["rate_key"].startswith("unauth:envelope:alice@example.com|ticket:")
    assert line["rate_count"] == "21"
    assert "rate.tier.reject" in line["findings"]


# ---- the allow-list ---------------------------------------------------------------


def test_an_allowlisted_noreply_sender_is_delivered_and_limited_at_200_and_400(
        allowlisting_mta):
    mta = allowlisting_mta
    raw = signed(from_="Alerts <noreply@example.com>", subject="Disk full")
    record, outcome = mta.send(raw, "noreply@example.com")
    assert fate(record) == "accept", dict(record.pairs())
    assert {"auto.noreply_sender", "allowlist.sender"} <= set(record.results.signals())
    assert ("Auto-Submitted", "auto-generated") in outcome.add_headers
    assert ("X-Auto-Response-Suppress", "All") in outcome.add_headers
    fates = [fate(mta.send(raw, "noreply@example.com")[0]) for _ in range(400)]
    assert fates[198:201] == ["accept", "quarantine", "quarantine"], "the 201st is held"
    assert fates[398:] == ["quarantine", "reject"], "the 401st is refused"
    assert Counter(fates) == {"accept": 199, "quarantine": 200, "reject": 1}


def test_a_forgery_in_an_allowlisted_name_is_judged_as_anyones(allowlisting_mta):
    mta = allowlisting_mta
    forged = message(from_="Alerts <noreply@example.com>", subject="Disk full")
    record, _ = mta.send(forged, "noreply@example.com", FORGER)
    assert fate(record) == "quarantine"
    rules = [hit.rule for hit in record.verdict.hits]
    assert "auto-noreply" in rules and "dmarc-reject-held" in rules
    assert "allowlist.unauthenticated" in record.results.signals()
    assert "allowlist.sender" not in record.results.signals()


# ---- the verdict line --------------------------------------------------------------


def test_the_verdict_line_names_the_key_and_count_only_when_a_tier_fired(mta):
    raw = signed(subject="Line test")
    quiet, _ = mta.send(raw, "robot@example.com")
    line = format_verdict_line("Q0", quiet.pairs())
    assert " rate=pass " in line and "rate_key" not in line and "rate_count" not in line
    for _ in range(20):
        record, _ = mta.send(raw, "robot@example.com")
    _, fields = parse_verdict_line(format_verdict_line("Q1", record.pairs()))
    assert fields["rate_key"] == f"envelope:robot@example.com|ticket:{_hashed('line test')}"
    assert (fields["rate_count"], fields["action"]) == ("21", "quarantine")


def _hashed(subject: str) -> str:
    from trustmilter.checks.rate import key_part
    return key_part("subj:" + subject)


def test_rcpt_refuses_early_only_on_an_envelope_key(dns_server):
    """With keys [envelope]: the 41st SPF-authenticated message is refused at RCPT TO."""
    dns_server.load(ZONE)
    for mta in build(dns_server.nameserver,
                     (("    keys: [envelope+ticket, from+ticket]\n", "    keys: [envelope]\n"),)):
        fates = [fate(mta.send(signed(subject=f"n{i}"), "robot@example.com")[0])
                 for i in range(42)]
        assert fates == ["accept"] * 20 + ["quarantine"] * 20 + ["reject@rcpt"] * 2
        # Forged mail (SPF fails) is never refused early: it is decided at end of message.
        record, _ = mta.send(message(subject="forged"), "robot@example.com", FORGER)
        assert record.stage == "eom"
