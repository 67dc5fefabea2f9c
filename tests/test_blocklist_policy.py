"""The blocklists policy.yaml suggests, with the shipped scores and thresholds.

The example lists in policy.yaml (Spamhaus ZEN for the client IP, the DBL
for link domains) are commented out; these tests uncomment them exactly as
shipped, point their zones at the DNS test server (`*.example.test`) and
run whole transactions through the engine: a listing alone marks the
message low trust, a listing plus one clear weakness (no PTR for the
client) holds it, and the weakness alone does not. A listed link is found
however deep the MIME nesting hides it.
"""

from __future__ import annotations

import ipaddress
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from keys import key_zone, message, rsa_key, sign
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Disposition, Transaction, VerdictRecord
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"
IP_ZONE = "zen.example.test"
URI_ZONE = "dbl.example.test"
SENDER = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN MX  10 mail.example.com.
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject"
example.org.               300 IN MX  10 mx.example.org.
example.org.               300 IN A   192.0.2.20
""" + key_zone(rsa_key(1024), "sel", "example.com")
PTR = "10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.\n"
# RFC 5782 §2.1: the reversed client address under the list's zone.
IP_LISTED = f"10.2.0.192.{IP_ZONE}.  300 IN A 127.0.0.2\n"
# RFC 5782 §2.3: the link's registered domain under the list's zone.
URI_LISTED = f"example.net.{URI_ZONE}.  300 IN A 127.0.1.2\n"
CLIENT = ipaddress.ip_address("192.0.2.10")


def shipped_example(section: str) -> list[dict[str, Any]]:
    """The commented-out `lists:` example of `checks.<section>` in policy.yaml, as shipped."""
    text = SHIPPED.read_text()
    start = text.index(f"\n  {section}:\n")
    block = text[start : text.index("\n    enabled:", start)]
    example = block[block.index("    # lists:\n") :]
    lines = [line.removeprefix("    # ") for line in example.splitlines()]
    lists = yaml.safe_load("\n".join(lines))["lists"]
    assert isinstance(lists, list) and lists
    return lists


def shipped_policy(nameserver: str, dnsbl: list[Any], uribl: list[Any]) -> str:
    """policy.yaml as shipped, with the test DNS server and the given lists."""
    text = SHIPPED.read_text()
    text = text.replace('authserv_id: ""', "authserv_id: mx.example.org", 1)
    text = text.replace("  nameservers: []", f"  nameservers: [{nameserver!r}]", 1)
    for section, lists in (("dnsbl", dnsbl), ("uribl", uribl)):
        start = text.index(f"\n  {section}:\n")
        at = text.index("\n    lists: []\n", start)
        text = text[:at] + f"\n    lists: {yaml.safe_dump(lists, default_flow_style=True).strip()}\n" + text[
            at + len("\n    lists: []\n") :
        ]
    return text


def with_zone(lists: list[dict[str, Any]], zone: str) -> list[dict[str, Any]]:
    return [{**entry, "zone": zone} for entry in lists]


@pytest.fixture
def app(dns_server):
    dnsbl = with_zone(shipped_example("dnsbl"), IP_ZONE)
    uribl = with_zone(shipped_example("uribl"), URI_ZONE)
    settings = parse_settings(shipped_policy(dns_server.nameserver, dnsbl, uribl), "policy.yaml")
    with ThreadPoolExecutor(8) as pool:
        yield build_app(settings, pool, state=MemoryStore())


def decide(app, raw: bytes, verified_name: str | None) -> VerdictRecord:
    """One transaction from 192.0.2.10 (HELO mail.example.com) to support@example.org."""
    records: list[VerdictRecord] = []
    client = Client(CLIENT, verified_name, "mail.example.com")
    tx = Transaction(app, client, "alice@example.com", None, observer=records.append)
    assert tx.opening() is None
    assert tx.recipient("support@example.org") is None
    outcome = tx.finish(Message(raw), "QID1")
    assert outcome is not None
    [record] = records
    assert (outcome.disposition is Disposition.QUARANTINE) == (
        record.verdict.action is Action.QUARANTINE
    )
    return record


def findings(record: VerdictRecord) -> set[str]:
    return {f.name for result in record.results.all() for f in result.findings}


def signed(body: str = "Hello\r\n", **kw: Any) -> bytes:
    """DKIM-signed by example.com (aligned with From): SPF, DKIM and DMARC pass."""
    return sign(message(body=body.encode(), **kw), rsa_key(1024), "example.com")


def test_the_examples_are_the_suggested_lists_with_weight_3():
    """What an operator uncomments: Spamhaus ZEN and DBL, their codes, weight 3."""
    [zen] = shipped_example("dnsbl")
    [dbl] = shipped_example("uribl")
    assert (zen["zone"], zen["weight"], zen["codes"]["127.0.0.2"][:3]) == (
        "zen.spamhaus.org", 3, "SBL")
    assert (dbl["zone"], dbl["weight"], dbl["codes"]["127.0.1.2"]) == (
        "dbl.spamhaus.org", 3, "spam domain")
    # Refusals are never listings (public resolver, typo, over quota, IP asked of the DBL).
    assert "127.255.255.254" in zen["error_codes"] and "127.0.1.255" in dbl["error_codes"]


@pytest.mark.parametrize(
    ("listed", "ptr", "action", "score"),
    [
        (False, True, Action.ACCEPT, 0.0),
        (True, True, Action.LOW_TRUST, 5.0),  # a listing alone: marked, delivered
        (False, False, Action.LOW_TRUST, 3.0),  # the weakness alone: marked, delivered
        (True, False, Action.QUARANTINE, 8.0),  # listed plus one weakness: suspended
    ],
)
def test_a_listed_client_plus_one_weakness_is_held(app, dns_server, listed, ptr, action, score):
    dns_server.load(SENDER + (IP_LISTED if listed else "") + (PTR if ptr else ""))
    record = decide(app, signed(), "mail.example.com" if ptr else None)
    assert (record.verdict.action, record.verdict.score) == (action, score), findings(record)
    assert ("dnsbl.listed" in findings(record)) == listed
    assert ("iprev.ptr_missing" in findings(record)) == (not ptr)


def nested(depth: int, link: str) -> str:
    """A body whose only text part sits `depth` multipart levels down."""
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n'
        for level in range(depth)
    )
    closing = "".join(f"\r\n--n{level}--" for level in reversed(range(depth)))
    return opening + f"Content-Type: text/plain\r\n\r\nSee {link}\r\n" + closing + "\r\n"


def deep_message(depth: int, link: str) -> bytes:
    """A signed message with MIME nested `depth` levels (headers at the top level)."""
    body = nested(depth, link)
    head, _, rest = body.partition("\r\n\r\n")  # the top part's Content-Type is the message's
    return signed(body=rest, extra_headers=("MIME-Version: 1.0", head))


@pytest.mark.parametrize(
    ("depth", "ptr", "action", "score", "expected"),
    [
        (0, True, Action.LOW_TRUST, 5.0, {"uribl.listed"}),
        (0, False, Action.QUARANTINE, 8.0, {"uribl.listed", "iprev.ptr_missing"}),
        # Past the nesting limit the link is still found, and the depth is a weakness.
        (1000, True, Action.QUARANTINE, 8.0, {"uribl.listed", "headers.mime_too_deep"}),
    ],
)
def test_a_listed_link_plus_one_weakness_is_held(app, dns_server, depth, ptr, action, score,
                                                  expected):
    dns_server.load(SENDER + URI_LISTED + (PTR if ptr else ""))
    raw = deep_message(depth, "https://www.offers.example.net/x") if depth else signed(
        body="See https://www.offers.example.net/x\r\n")
    record = decide(app, raw, "mail.example.com" if ptr else None)
    assert (record.verdict.action, record.verdict.score) == (action, score), findings(record)
    assert expected <= findings(record)
    assert re.fullmatch(r"fail", ",".join(
        r.outcome.value for r in record.results.all() if r.check == "uribl"))
