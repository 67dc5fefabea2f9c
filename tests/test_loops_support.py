"""Support addresses both ways, through the engine with the shipped policy.

The shipped policy.yaml with the operator's one edit (the support
addresses and an external help desk), the real DNS test server, and whole
transactions (MAIL FROM, RCPT TO, end of message) from each kind of
client: a stranger (inbound, judged), our own host (a trusted network),
local submission without an address, and a SASL user (outbound: not
judged, the outbound checks run). What is asserted is what the MTA is
told, at which step, and the verdict line's fields.

The help desk's support addresses are support@example.org and
help@example.com; example.com's SPF lists 192.0.2.10 (an outside service
that relays the help desk's mail) and its DKIM key is published, so mail
in help@example.com's name from there authenticates.
"""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from trustmilter.cli import main
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.daemon.verdictlog import format_verdict_line, parse_verdict_line
from trustmilter.engine import Client, Disposition, Transaction, VerdictRecord
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"
OUR_DESK = ("    support_addresses: []\n",
            "    support_addresses: [support@example.org, help@example.com]\n")
THEIR_DESK = ("    external_helpdesks: []\n",
              "    external_helpdesks: [\"@desk.example.net\"]\n")
ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
example.org.               300 IN A   192.0.2.20
""" + key_zone(rsa_key(1024), "sel", "example.com")

STRANGER = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")
LOCAL = Client(ipaddress.ip_address("127.0.0.1"), None, "localhost")
# sendmail(1) through Postfix's non_smtpd_milters: refusable only as a whole.
SUBMITTED = Client(ipaddress.ip_address("127.0.0.1"), "localhost", "localhost", non_smtp=True)
LAPTOP = Client(ipaddress.ip_address("203.0.113.5"), None, "laptop.example.net")
CLIENTS = {"stranger": (STRANGER, None), "local": (LOCAL, None),
           "local submission": (SUBMITTED, None), "sasl": (LAPTOP, "agent")}


def shipped(nameserver: str, *edits: tuple[str, str]):
    text = SHIPPED.read_text()
    for old, new in (OUR_DESK, THEIR_DESK, *edits):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    settings = parse_settings(text, "policy.yaml")
    return replace(settings, authserv_id="mx.example.org", dns=replace(
        settings.dns, nameservers=(nameserver,), timeout=0.5, lifetime=1.0))


@pytest.fixture
def app(dns_server):
    dns_server.load(ZONE)
    with ThreadPoolExecutor(8) as pool:
        yield build_app(shipped(dns_server.nameserver), pool, state=MemoryStore())


def transact(app, who: str, sender: str, rcpts: list[str], raw: bytes | None = None):
    """One transaction; (answers at each RCPT, outcome or None, verdict-line fields)."""
    client, auth = CLIENTS[who]
    records: list[VerdictRecord] = []
    tx = Transaction(app, client, sender, auth, observer=records.append)
    assert tx.opening() is None
    answers = [tx.recipient(r) for r in rcpts]
    outcome = None
    if any(a is None for a in answers):
        outcome = tx.finish(Message(raw if raw is not None else message()), "QID1")
    lines = [parse_verdict_line(format_verdict_line(r.queue_id, r.pairs()))[1] for r in records]
    return answers, outcome, lines


def signed(**kw) -> bytes:
    return sign(message(**kw), rsa_key(1024), "example.com")


def assert_refused(answer, code: int, dsn: str, text: str) -> None:
    assert answer is not None and answer.disposition is Disposition.REJECT, answer
    assert (answer.reply.code, answer.reply.dsn) == (code, dsn) and text in answer.reply.text


# ---- our support address writing to a support address: whoever sends it -------------


@pytest.mark.parametrize("who", list(CLIENTS))
@pytest.mark.parametrize(("sender", "rcpt"), [
    ("help@example.com", "support@example.org"),
    ("support@example.org", "Support+id4711@example.org"),  # itself, a ticket's sub-address
])
def test_support_to_support_is_refused_at_rcpt_from_every_client(app, who, sender, rcpt):
    answers, outcome, lines = transact(app, who, sender, [rcpt])
    if who == "local submission":
        # Postfix refuses non-SMTP mail only whole, at end of message.
        assert answers == [None] and outcome.disposition is Disposition.REJECT
        assert outcome.reply.text.endswith("support address to support address")
    else:
        assert_refused(answers[0], 550, "5.7.1", "support address to support address")
        assert outcome is None
    [fields] = lines
    assert fields["stage"] == ("eom" if who == "local submission" else "rcpt")
    assert "loop.support_to_support" in fields["findings"]
    assert fields["rules"].startswith("loop-support-to-support")
    if who != "stranger":
        assert fields["direction"] == "outbound" and fields["client_kind"] != "external"


@pytest.mark.parametrize("who", ["local", "sasl"])
def test_our_support_address_in_from_to_a_support_address_is_refused_on_the_way_out(app, who):
    """A help desk sending with its own bounce address and From: support@."""
    answers, outcome, lines = transact(
        app, who, "bounces+4711@example.org", ["support@example.org"],
        message(from_="Support <support@example.org>"))
    assert answers == [None]
    assert outcome.disposition is Disposition.REJECT
    assert outcome.reply.text.endswith("support address to support address")
    assert lines[-1]["stage"] == "eom" and lines[-1]["direction"] == "outbound"


# ---- a notification from our side to a support address or another help desk --------


@pytest.mark.parametrize(("who", "sender"), [
    ("local", ""),  # a bounce or an automatic answer
    ("local", "noreply@example.org"),
    ("sasl", "MAILER-DAEMON@example.org"),
])
def test_a_notification_by_its_envelope_is_refused_at_rcpt(app, who, sender):
    answers, outcome, lines = transact(app, who, sender,
                                       ["customer@example.net", "support+id4711@example.org"])
    assert answers[0] is None, "the customer still gets it"
    assert_refused(answers[1], 550, "5.7.1", "notifications are not sent to a support address")
    refused, delivered = lines
    assert (refused["stage"], refused["rcpt"]) == ("rcpt", "<support+id4711@example.org>")
    assert refused["findings"] == "loop.notification_to_support"
    assert refused["direction"] == "outbound"
    assert outcome.disposition is Disposition.ACCEPT and delivered["rcpt"] == "<customer@example.net>"


def test_a_notification_submitted_without_smtp_is_refused_whole_at_end_of_message(app):
    """Postfix cannot refuse one recipient of sendmail(1)'s mail (it would retry it
    for ever): the whole message is refused at end of message, and returned."""
    answers, outcome, lines = transact(app, "local submission", "",
                                       ["customer@example.net", "support@example.org"])
    assert answers == [None, None]
    assert outcome.disposition is Disposition.REJECT and outcome.reply.dsn == "5.7.1"
    [fields] = lines
    assert (fields["stage"], fields["findings"]) == ("eom", "loop.notification_to_support")


@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-replied",  # a colleague's out-of-office answer
    "Auto-Submitted: auto-generated",
    "X-Loop: helpdesk.example.org",  # our help desk's marker
    "Precedence: auto_reply",
])
def test_a_notification_by_its_header_is_refused_at_end_of_message(app, header):
    answers, outcome, lines = transact(
        app, "local", "colleague@example.org", ["support@example.org"],
        message(from_="Colleague <colleague@example.org>", extra_headers=(header,)))
    assert answers == [None]
    assert outcome.disposition is Disposition.REJECT
    assert (outcome.reply.code, outcome.reply.dsn) == (550, "5.7.1")
    assert lines[-1]["findings"] == "loop.notification_to_support"
    assert lines[-1]["rules"] == "loop-notification-to-support"


@pytest.mark.parametrize("who", ["local", "sasl"])
def test_a_colleague_writing_to_support_by_hand_is_delivered_untouched(app, who):
    raw = message(from_="Colleague <colleague@example.org>", subject="My printer")
    answers, outcome, lines = transact(app, who, "colleague@example.org",
                                       ["support@example.org"], raw)
    assert answers == [None] and outcome.disposition is Disposition.ACCEPT
    names = [name for name, _ in outcome.add_headers]
    assert names == (["Authentication-Results"] if who == "sasl" else [])
    fields = lines[-1]
    assert fields["direction"] == "outbound" and fields["findings"] == ""
    assert fields["loops"] == "pass,pass,pass"  # support pair, envelope, header


def test_a_notification_to_an_external_help_desk_is_refused(app):
    answers, _, lines = transact(app, "local", "support@example.org",
                                 ["ticket@desk.example.net"])
    assert_refused(answers[0], 550, "5.7.1", "notifications are not sent to another help desk")
    assert lines[0]["findings"] == "loop.notification_to_helpdesk"
    # A person may still write to it.
    answers, outcome, _ = transact(app, "sasl", "agent@example.org",
                                   ["ticket@desk.example.net"],
                                   message(from_="Agent <agent@example.org>"))
    assert answers == [None] and outcome.disposition is Disposition.ACCEPT


def test_outbound_checks_off_let_our_own_notification_through(dns_server):
    off = ("  outbound_checks: true\n", "  outbound_checks: false\n")
    with ThreadPoolExecutor(4) as pool:
        app = build_app(shipped(dns_server.nameserver, off), pool, state=MemoryStore())
        answers, outcome, lines = transact(app, "local", "", ["support@example.org"])
    assert answers == [None] and outcome.disposition is Disposition.ACCEPT
    assert "direction" not in lines[0] and lines[0]["findings"] == ""


# ---- our support address claimed from outside, to an ordinary colleague ----------------


def test_a_plain_message_in_our_support_address_name_is_judged_as_any_other(app):
    """The help desk's agent answer relayed through an outside service our SPF lists."""
    raw = signed(from_="Help <help@example.com>", to="colleague@example.org")
    answers, outcome, lines = transact(app, "stranger", "help@example.com",
                                       ["colleague@example.org"], raw)
    assert answers == [None] and outcome.disposition is Disposition.ACCEPT
    assert "loop.support_sender" in lines[-1]["findings"]
    assert not any(rule.startswith("loop-") for rule in lines[-1]["rules"].split(","))


def test_an_automated_message_in_our_support_address_name_is_held(app):
    raw = signed(from_="Help <help@example.com>", to="colleague@example.org",
                 extra_headers=("Auto-Submitted: auto-generated",))
    answers, outcome, lines = transact(app, "stranger", "help@example.com",
                                       ["colleague@example.org"], raw)
    assert answers == [None] and outcome.disposition is Disposition.QUARANTINE
    assert "loop-support-sender" in lines[-1]["rules"].split(",")
    assert "loop-support-sender" in outcome.quarantine_reason


def test_our_support_address_from_outside_with_our_marker_is_refused(app):
    raw = signed(from_="Help <help@example.com>", to="colleague@example.org",
                 extra_headers=("X-Trustmilter-Loop: mx.example.org",))
    _, outcome, _ = transact(app, "stranger", "help@example.com", ["colleague@example.org"], raw)
    assert outcome.disposition is Disposition.REJECT
    assert (outcome.reply.code, outcome.reply.dsn) == (554, "5.4.6")


def test_a_forgery_of_our_support_address_is_left_to_dmarc(app):
    """From a host example.com's SPF does not list, unsigned: DMARC p=reject holds it."""
    forger = Client(ipaddress.ip_address("198.51.100.7"), None, "out.example.net")
    records: list[VerdictRecord] = []
    tx = Transaction(app, forger, "help@example.com", None, observer=records.append)
    assert tx.opening() is None and tx.recipient("colleague@example.org") is None
    outcome = tx.finish(Message(message(from_="Help <help@example.com>")), "QID1")
    assert outcome.disposition in (Disposition.QUARANTINE, Disposition.REJECT)
    assert any(rule.startswith("dmarc-") for rule in (h.rule for h in records[-1].verdict.hits))


# ---- `trustmilter check` shows the outbound steps ---------------------------------------


def test_check_of_a_trusted_address_shows_the_outbound_refusal(tmp_path, capsys, dns_server):
    policy = tmp_path / "policy.yaml"
    policy.write_text(SHIPPED.read_text().replace(*OUR_DESK).replace(*THEIR_DESK)
                      .replace('authserv_id: ""', "authserv_id: mx.example.org"))
    eml = tmp_path / "m.eml"
    eml.write_bytes(message(from_="Mail Delivery System <MAILER-DAEMON@example.org>"))
    code = main(["check", str(eml), "--policy", str(policy), "--json", "--ip", "127.0.0.1",
                 "--mail-from", "", "--rcpt", "customer@example.net",
                 "--rcpt", "support@example.org", "--state", "none"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["client_kind"], out["direction"]) == ("trusted", "outbound")
    assert [s["answer"][:9] for s in out["steps"]] == ["continue", "continue", "550 5.7.1",
                                                      "accept"]
    refused = [line for line in out["verdict_lines"] if line["stage"] == "rcpt"]
    assert refused[0]["direction"] == "outbound"
    assert refused[0]["findings"] == "loop.notification_to_support"
