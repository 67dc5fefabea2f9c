"""The sender-trust rules' HELO examples, verbatim, through the engine and the shipped policy.

The seed: "Good: HELO mail.domain.com" (in the sender's domain, an MX of
it, resolving to the client) and, every one of them low trust, "HELO
mail.otherdomain.com", "HELO localhost", "HELO 1.2.3.4", "HELO invalid.tld",
"HELO not.existing.domain.com" (plus an unqualified "HELO mailhost").
Everything else about the sender is clean (PTR, SPF, DKIM, DMARC pass), so
the verdict is the HELO's alone. The seed's domain.com becomes example.com,
otherdomain.com example.net, and its server 1.2.3.4 is the client
192.0.2.10; "invalid.tld" is kept as it is: the test DNS server, like the
root, has no "tld.".

The doctor judges the same names with the same code (`helo.judge`): a name
it fails is a name the milter marks, and the reverse.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import make_ctx
from keys import key_zone, message, rsa_key, sign
from trustmilter.checks import helo
from trustmilter.config.load import load_settings
from trustmilter.daemon.apps import build_app
from trustmilter.doctor.run import diagnose
from trustmilter.engine import Client, Disposition, Transaction, VerdictRecord
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action
from zones import GOOD_SENDER

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"
CLIENT = ipaddress.ip_address("192.0.2.10")
SENDER = "someone@example.com"

ZONE = GOOD_SENDER + """
; "HELO mail.otherdomain.com", resolving to the client all the same
example.net.               300 IN MX  10 mx.example.net.
mail.example.net.          300 IN A   192.0.2.10
; the recipient's side
example.org.               300 IN MX  10 mx.example.org.
""" + key_zone(rsa_key(1024), "sel", "example.com")

LOW_TRUST = {
    "HELO mail.otherdomain.com": ("mail.example.net", {"helo.not_sender_domain"}),
    "HELO localhost": ("localhost", {"helo.localhost"}),
    "HELO 1.2.3.4": ("192.0.2.10", {"helo.ip_literal"}),
    "HELO [1.2.3.4]": ("[192.0.2.10]", {"helo.ip_literal"}),
    "HELO invalid.tld": ("invalid.tld", {"helo.unknown_tld"}),
    "HELO not.existing.domain.com": ("not.existing.example.com", {"helo.nxdomain"}),
    "HELO mailhost": ("mailhost", {"helo.single_label", "helo.nxdomain"}),
}
GOOD = "mail.example.com"


@pytest.fixture
def app(dns_server):
    """The shipped policy.yaml, asking the test DNS server."""
    dns_server.load(ZONE)
    settings = load_settings(SHIPPED)
    settings = replace(settings, authserv_id="mx.example.org", dns=replace(
        settings.dns, nameservers=(dns_server.nameserver,), timeout=0.5, lifetime=1.0))
    with ThreadPoolExecutor(8) as pool:
        yield build_app(settings, pool, state=MemoryStore())


def deliver(app, helo_name: str) -> VerdictRecord:
    """One signed message from the clean sender, greeting with `helo_name`."""
    records: list[VerdictRecord] = []
    client = Client(CLIENT, "mail.example.com", helo_name)
    tx = Transaction(app, client, SENDER, None, observer=records.append)
    assert tx.opening() is None
    assert tx.recipient("support@example.org") is None
    raw = sign(message(from_=f"Someone <{SENDER}>"), rsa_key(1024), "example.com")
    outcome = tx.finish(Message(raw), "QID1")
    assert outcome.disposition is Disposition.ACCEPT
    [record] = records
    return record


def test_the_good_helo_is_accepted_with_nothing_against_it(app):
    """"Good: HELO mail.domain.com": in the domain, its MX, resolving to the client."""
    record = deliver(app, GOOD)
    assert record.verdict.action is Action.ACCEPT
    assert record.verdict.score == 0
    [result] = [r for r in record.results.all() if r.check == "helo"]
    assert result.findings == ()


@pytest.mark.parametrize("example", LOW_TRUST)
def test_each_low_trust_example_is_marked_low_trust_by_its_helo_alone(app, example):
    """Each of the seed's examples: low trust (delivered, marked), and only for the HELO."""
    name, expected = LOW_TRUST[example]
    record = deliver(app, name)
    assert record.verdict.action is Action.LOW_TRUST, (example, record.verdict)
    [result] = [r for r in record.results.all() if r.check == "helo"]
    assert expected <= {f.name for f in result.findings}
    assert record.verdict.reasons and all(r.startswith("helo.") for r in record.verdict.reasons)


def test_a_helo_in_the_organisation_but_not_an_mx_is_remarked_not_marked(dns_server, app):
    """"Should match an MX record": a remark (helo.not_sender_mx), not low trust alone."""
    dns_server.load(ZONE + "relay.example.com. 300 IN A 192.0.2.10\n")
    record = deliver(app, "relay.example.com")
    assert record.verdict.action is Action.ACCEPT
    assert record.verdict.reasons == ("helo.not_sender_mx",)
    assert 0 < record.verdict.score < 3


@pytest.mark.parametrize("name", [GOOD, "relay.example.com", *(n for n, _ in LOW_TRUST.values())])
def test_the_doctor_fails_exactly_the_helo_names_the_milter_marks(dns_server, resolver, app,
                                                                 name):
    """One judgement: a failed doctor HELO rule <=> low trust; its MX warning <=> the remark."""
    dns_server.load(ZONE + "relay.example.com. 300 IN A 192.0.2.10\n")
    record = deliver(app, name)
    doctor = [d for d in diagnose("example.com", [CLIENT], name, [], resolver)
              if d.rule.startswith("helo.")]
    assert {d.rule for d in doctor} == {"helo.resolves", "helo.in_domain", "helo.is_mx"}
    doctor_fails = any(d.status == "fail" for d in doctor)
    assert doctor_fails == (record.verdict.action is Action.LOW_TRUST), (name, doctor)
    [result] = [r for r in record.results.all() if r.check == "helo"]
    status = {d.rule: d.status for d in doctor}
    remarked = "helo.not_sender_mx" in {f.name for f in result.findings}
    # The milter remarks on an MX mismatch only for a name that resolves.
    assert remarked == (status["helo.is_mx"] == "warn" and status["helo.resolves"] == "pass")


def test_the_check_reports_what_judge_found(dns_server, resolver):
    """HeloCheck is judge() turned into a result: the doctor reads judge() itself."""
    dns_server.load(ZONE)
    for name in (GOOD, *(n for n, _ in LOW_TRUST.values())):
        ctx = make_ctx(resolver, ip=str(CLIENT), helo=name, mail_from=SENDER)
        judgement = helo.judge(ctx)
        [result] = helo.HeloCheck(helo.Config()).run(ctx)
        assert result.findings == judgement.findings
        assert judgement.resolvable is (name in (GOOD, "mail.example.net")), name
