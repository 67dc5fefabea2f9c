"""The milter's connection holder without pymilter: spool, large-message slots, several
messages on one connection, the failure memory.

`SmtpSession` is what the adapter calls; everything it decides comes from
the engine (test_engine_transaction.py). What is left to test here is what
belongs to the connection and to the way the MTA hands a message over.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from keys import key_zone, message, rsa_key, sign
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import AppHolder, build_app
from trustmilter.daemon.metrics import NullMetrics
from trustmilter.daemon.session import ErrorAnswer, SmtpSession
from trustmilter.daemon.verdictlog import parse_verdict_line
from trustmilter.engine import Disposition, MessageOutcome, Refusal
from trustmilter.model import Message
from zones import GOOD_SENDER

ZONE = GOOD_SENDER
LARGE = "milter: {spool_memory_limit: 1000, large_message_slots: 1, message_timeout: 1.0}\n"


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as executor:
        yield executor


def holder_with(dns_server, pool, extra: str = "") -> AppHolder:
    settings = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        + extra,
        "test-policy.yaml",
    )
    return AppHolder(build_app(settings, pool), None, pool)


def connected(holder, ip="192.0.2.10", helo="mail.example.com") -> SmtpSession:
    session = SmtpSession(holder, NullMetrics())
    session.connect("mail.example.com", ip)
    session.helo(helo)
    return session


def deliver(session: SmtpSession, raw: bytes, sender="<alice@example.com>",
            rcpt="<support@example.org>") -> Refusal | ErrorAnswer | MessageOutcome:
    """MAIL, RCPT, headers, body, end of message as the adapter calls them."""
    for answer in (session.mail_from(sender, {}, None), session.rcpt(rcpt)):
        if answer is not None:
            return answer
    parsed = Message(raw)
    for name, value in parsed.headers:
        session.header(name, b" " + value.encode())
    session.end_of_headers()
    session.body(parsed.body)
    return session.end_of_message("QID")


def test_two_messages_on_one_connection_are_judged_apart(dns_server, pool):
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    session = connected(holder_with(dns_server, pool), ip="203.0.113.5",
                        helo="spoofer.example.net")
    first = deliver(session, message())
    assert isinstance(first, MessageOutcome) and first.disposition is Disposition.REJECT
    second = deliver(session, sign(message(), rsa_key(1024), "example.com"))
    assert isinstance(second, MessageOutcome) and second.reply is None  # delivered
    assert [r.outcome.value for r in second.record.results["dmarc"]] == ["pass"]  # aligned DKIM
    assert second.add_headers[0][0] == "Authentication-Results"
    assert session.tx is None and session.spool is None  # dropped at end of message


def test_the_message_budget_bounds_the_wait_on_dns(dns_server):
    """DNS that never answers (lifetime 5 s) cannot hold a message past message_timeout."""
    dns_server.load("$TIMEOUT 10.2.0.192.in-addr.arpa.\n$TIMEOUT example.com.\n"
                    "$TIMEOUT mail.example.com.\n$TIMEOUT _dmarc.example.com.\n")
    pool = ThreadPoolExecutor(8)
    try:
        holder = holder_with(dns_server, pool, "milter: {message_timeout: 1.0}\n")
        started = time.monotonic()
        outcome = deliver(connected(holder), message())
        elapsed = time.monotonic() - started
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # lookups still waiting are abandoned
    # SPF/DMARC undecided: 451 4.4.3, never a 5xx.
    assert isinstance(outcome, MessageOutcome) and outcome.disposition is Disposition.TEMPFAIL
    assert outcome.reply is not None and (outcome.reply.code, outcome.reply.dsn) == (451, "4.4.3")
    assert elapsed < 3.0, f"waited {elapsed:.1f} s"


def test_large_messages_take_turns_and_a_message_with_no_slot_is_tempfailed(
    dns_server, pool, caplog
):
    """Spooled messages are read back whole: at most `large_message_slots` at a time;
    one that finds no slot within its budget gets 451 4.3.2, never an unchecked accept."""
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    large = sign(message(body=b"line of the large message\r\n" * 200), rsa_key(1024),
                 "example.com")
    holder = holder_with(dns_server, pool, LARGE)
    first = deliver(connected(holder), large)
    assert isinstance(first, MessageOutcome) and first.disposition is Disposition.ACCEPT
    assert holder.large_messages.acquire(timeout=0)  # the slot came back; now it is taken
    try:
        started = time.monotonic()
        caplog.clear()  # the first message's line, where an earlier test left INFO on
        with caplog.at_level(logging.INFO, logger="trustmilter.verdict"):
            busy = deliver(connected(holder), large)
        waited = time.monotonic() - started
        assert isinstance(busy, MessageOutcome) and busy.disposition is Disposition.TEMPFAIL
        assert busy.reply is not None and busy.reply.dsn == "4.3.2"
        assert 0.8 < waited < 3.0, waited  # the budget (1 s), not forever
        [line] = [r.getMessage() for r in caplog.records if r.name == "trustmilter.verdict"]
        assert parse_verdict_line(line)[1]["action"] == "tempfail"
        # Small messages need no slot, and neither do trusted clients' large ones.
        small = deliver(connected(holder), sign(message(), rsa_key(1024), "example.com"))
        assert isinstance(small, MessageOutcome) and small.disposition is Disposition.ACCEPT
        forged = message(body=b"x" * 3000 + b"\r\n", extra_headers=(
            "Authentication-Results: mx.example.org; dkim=pass",))
        trusted = deliver(connected(holder, ip="127.0.0.1", helo="localhost"), forged)
        assert isinstance(trusted, MessageOutcome)
        assert [h.index for h in trusted.remove_headers] == [1]  # the header is still read
    finally:
        holder.large_messages.release()


def test_a_failed_no_reply_step_is_answered_on_error_at_the_next_answer(dns_server, pool, caplog):
    """A header the session could not keep: the message cannot be judged as sent."""
    dns_server.load(ZONE)
    session = connected(holder_with(dns_server, pool))
    assert session.mail_from("<alice@example.com>", {}, None) is None
    assert session.rcpt("<support@example.org>") is None
    session.record_failure("header")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trustmilter.verdict"):
        answer = session.end_of_message("QID")
    assert answer == ErrorAnswer(Disposition.TEMPFAIL, answer.reply)
    assert answer.reply is not None and answer.reply.dsn == "4.3.0"
    [line] = [r.getMessage() for r in caplog.records if r.name == "trustmilter.verdict"]
    fields = parse_verdict_line(line)[1]
    assert fields["action"] == "tempfail" and fields["stage"] == "eom"
    # The next message on the connection starts clean.
    assert session.mail_from("<alice@example.com>", {}, None) is None


def test_many_recipients_cost_linear_time(dns_server, pool) -> None:
    """Each RCPT rebuilt the results of every recipient before it and scanned them
    for the policy: 1000 recipients (Postfix's default limit) took 0.7 s, 3000
    took 6.6 s, 5000 would take about 18 s. A guard against that regression, not
    a speed measurement: the bound is about 10 times what 5000 take now."""
    dns_server.load(ZONE)
    session = connected(holder_with(dns_server, pool))
    assert session.mail_from("<alice@example.com>", {}, None) is None
    started = time.monotonic()
    for i in range(5000):
        assert session.rcpt(f"<user{i}@example.org>") is None
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("address", "port", "non_smtp"), [
    ("127.0.0.1", 0, True),  # Postfix's non_smtpd_milters: sendmail(1)'s mail
    ("127.0.0.1", 47530, False),  # SMTP from this host
    (None, None, True),  # no address at all
])
def test_mail_submitted_without_smtp_is_refused_only_at_end_of_message(
        dns_server, pool, address, port, non_smtp):
    """Postfix cannot refuse a recipient of non-SMTP mail (it would retry it for ever):
    the refusal comes at end of message, for the whole message. Here this host is
    no trusted network, and the sender's domain does not exist (decided at MAIL)."""
    dns_server.load("$NXDOMAIN nowhere.example.net.\n")
    holder = holder_with(dns_server, pool, "milter: {trusted_networks: [192.0.2.0/24]}\n")
    session = SmtpSession(holder, NullMetrics())
    session.connect("localhost", address, port)
    session.helo("localhost")
    assert session.client().non_smtp is non_smtp
    outcome = deliver(session, message(), sender="x@nowhere.example.net")
    if address is None:
        # No address: our own (local submission), never judged.
        assert isinstance(outcome, MessageOutcome) and outcome.disposition is Disposition.ACCEPT
        return
    if non_smtp:
        assert isinstance(outcome, MessageOutcome) and outcome.record.stage == "eom"
    else:
        assert isinstance(outcome, Refusal)
    assert outcome.disposition is Disposition.REJECT and outcome.reply.dsn == "5.1.8"
