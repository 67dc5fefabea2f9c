"""A message to many recipients: names stay bounded, concurrent and cached.

The whole transaction (every check, the shipped policy, the App's caching
resolver) against the DNS test server, whose query log shows what was asked.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from keys import key_zone, message, rsa_key, sign
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Disposition, Transaction
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

DOMAINS = [f"d{i}.example.org" for i in range(50)]
RECIPIENTS = [f"user{i}@{DOMAINS[i % 50]}" for i in range(200)]
# Named only in Cc, and never answering: looked up at end of message, together.
SLOW = [f"slow{i}.example.net" for i in range(5)]
ZONE = GOOD_SENDER + "".join(
    f"{d}. 300 IN MX 10 mx.{d}.\n{d}. 300 IN A 198.51.100.{i}\n" for i, d in enumerate(DOMAINS)
) + "".join(f"$TIMEOUT {d}.\n" for d in SLOW)
BUDGET = 5.0
CLIENT = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")


def test_200_recipients_in_50_domains_each_domain_asked_once_within_the_budget(dns_server):
    key = rsa_key(1024)
    dns_server.load(ZONE + key_zone(key, "sel", "example.com"))
    settings = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        f"milter: {{message_timeout: {BUDGET}}}\n"
        "checks: {names: {check_recipients: true}}\n",
        "test-policy.yaml",
    )
    raw = sign(message(to=", ".join(RECIPIENTS[:150]),
                       extra_headers=("Cc: " + ", ".join([*RECIPIENTS[150:],
                                                         *(f"x@{d}" for d in SLOW)]),)),
               key, "example.com")
    with ThreadPoolExecutor(8) as pool:
        app = build_app(settings, pool, state=MemoryStore())
        tx = Transaction(app, CLIENT, "alice@example.com")
        started = time.monotonic()
        assert tx.opening() is None
        assert [tx.recipient(r) for r in RECIPIENTS] == [None] * 200
        at_data = time.monotonic()
        outcome = tx.finish(Message(raw), "QID")
        finished = time.monotonic()

    assert outcome.disposition is Disposition.ACCEPT
    assert tx.budget.spent < BUDGET
    # The five silent Cc domains were waited for together, not one after another.
    assert finished - at_data < 2.5, finished - at_data
    assert finished - started < BUDGET
    asked = Counter(dns_server.queries)
    for domain in DOMAINS:
        for rdtype in ("A", "AAAA", "MX"):
            assert asked[(domain, rdtype)] == 1, (domain, rdtype, asked[(domain, rdtype)])
    header = [r for r in outcome.record.results.all() if r.check == "names"][-1]
    assert "slow0.example.net" in header.reason  # undecided, never "nonexistent"
    assert not any(s.startswith("names.cc_") for s in outcome.record.results.signals())
