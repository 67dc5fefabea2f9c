"""Mail from web forms and scripts: the header fields the sender-trust rules ask for.

The seed: form mail must be formatted per RFC 5322 and "should contain
correctly formatted Subject:, From:, To: and Reply-To:". Through the engine,
the shipped policy.yaml and the DNS test server, from an otherwise clean
sender (PTR, HELO, SPF, DKIM, DMARC pass), so each verdict is the headers'.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from keys import key_zone, rsa_key, sign
from trustmilter.config.load import ConfigError, load_settings, parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Transaction, VerdictRecord
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action
from zones import GOOD_SENDER

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"
CLIENT = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")
# The customer's Reply-To domain exists (names in every sender field are looked up).
ZONE = GOOD_SENDER + "example.org. 300 IN MX 10 mx.example.org.\n" + (
    "example.net. 300 IN MX 10 mx.example.net.\n") + key_zone(
    rsa_key(1024), "sel", "example.com")
FIELDS = {
    "From": "Web Form <form@example.com>",
    "To": "Support <support@example.org>",
    "Reply-To": "Customer <customer@example.net>",
    "Subject": "Contact form: question",
    "Date": "Mon, 01 Jan 2024 10:00:00 +0000",
    "Message-ID": "<form-1@example.com>",
}
FORM_ONLY = ("subject", "to", "reply_to")


def form_message(drop: tuple[str, ...] = ()) -> bytes:
    """The form's message without the fields in `drop`, DKIM-signed by example.com."""
    lines = [f"{name}: {value}" for name, value in FIELDS.items() if name not in drop]
    raw = "\r\n".join(lines).encode() + b"\r\n\r\nName: Customer\r\nQuestion: ...\r\n"
    return sign(raw, rsa_key(1024), "example.com")


@pytest.fixture
def settings(dns_server):
    """The shipped policy.yaml, asking the test DNS server."""
    dns_server.load(ZONE)
    shipped = load_settings(SHIPPED)
    return replace(shipped, authserv_id="mx.example.org", dns=replace(
        shipped.dns, nameservers=(dns_server.nameserver,), timeout=0.5, lifetime=1.0))


def deliver(settings, raw: bytes, required: tuple[str, ...] | None = None) -> VerdictRecord:
    """One message from form@example.com; `required` replaces checks.headers.required."""
    if required is not None:
        checks = settings.checks
        settings = replace(settings, checks=replace(
            checks, headers=replace(checks.headers, required=required)))
    records: list[VerdictRecord] = []
    with ThreadPoolExecutor(8) as pool:
        app = build_app(settings, pool, state=MemoryStore())
        tx = Transaction(app, CLIENT, "form@example.com", None, observer=records.append)
        assert tx.opening() is None and tx.recipient("support@example.org") is None
        tx.finish(Message(raw), "QID1")
    [record] = records
    return record


def headers_findings(record: VerdictRecord) -> set[str]:
    return {f.name for r in record.results.all() if r.check == "headers" for f in r.findings}


def test_a_complete_form_message_is_accepted(settings):
    record = deliver(settings, form_message(), FORM_ONLY)
    assert record.verdict.action is Action.ACCEPT and record.verdict.score == 0


def test_plain_mail_without_reply_to_is_normal(settings):
    """The shipped policy does not ask for Reply-To: no finding, nothing against it."""
    record = deliver(settings, form_message(drop=("Reply-To",)))
    assert record.verdict.action is Action.ACCEPT and record.verdict.score == 0
    assert headers_findings(record) == set()


def test_form_mail_without_reply_to_is_low_trust_where_asked(settings):
    record = deliver(settings, form_message(drop=("Reply-To",)), FORM_ONLY)
    assert record.verdict.action is Action.LOW_TRUST
    assert record.verdict.reasons == ("headers.reply_to_missing",)


def test_form_mail_without_subject_to_and_reply_to_is_low_trust(settings):
    """The case that used to pass `headers` as well-formed."""
    record = deliver(settings, form_message(drop=("Subject", "To", "Reply-To")), FORM_ONLY)
    assert record.verdict.action is Action.LOW_TRUST
    assert headers_findings(record) == {
        "headers.subject_missing", "headers.to_missing", "headers.reply_to_missing"}


def test_missing_subject_and_to_count_but_do_not_mark_on_their_own(settings):
    """Shipped: Subject and To are asked for; optional in RFC 5322, so 1 point each."""
    record = deliver(settings, form_message(drop=("Subject", "To")))
    assert headers_findings(record) == {"headers.subject_missing", "headers.to_missing"}
    assert record.verdict.action is Action.ACCEPT and record.verdict.score == 2


def test_a_message_without_from_is_held(settings):
    """RFC 5322 §3.6 requires From: without an author nothing can be authenticated."""
    record = deliver(settings, form_message(drop=("From",)))
    assert "headers.from_missing" in headers_findings(record)
    assert record.verdict.action is Action.QUARANTINE


def test_the_policy_names_only_optional_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"checks\.headers\.required\[0\]"):
        parse_settings("checks: {headers: {required: [from]}}\n", "bad.yaml")
    ok = parse_settings("checks: {headers: {required: [reply_to]}}\n", "ok.yaml")
    assert ok.checks.headers.required == ("reply_to",)
