"""The transaction engine without pymilter: MAIL FROM, RCPT TO, end of message.

The engine's logic (client kinds, early and per-recipient refusals, the
budget, header edits, the record of each decision) driven directly, with
the real DNS test server behind the project's resolver. The adapter's
own work (Milter codes, header edit calls) is in test_daemon_adapter.py.
"""

from __future__ import annotations

import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from keys import key_zone, message, rsa_key, sign
from trustmilter.authresults import parse_header_value
from trustmilter.config.load import parse_settings
from trustmilter.daemon.apps import build_app
from trustmilter.daemon.verdictlog import format_verdict_line, parse_verdict_line
from trustmilter.engine import Client, ClientKind, Disposition, Transaction, VerdictRecord
from trustmilter.model import Message
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.finality import is_final
from trustmilter.results import CheckResult, Outcome, Results
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
example.org.               300 IN A   192.0.2.20
$NXDOMAIN nowhere.example.net.
$NXDOMAIN gone.example.net.
"""
GOOD = Client(ipaddress.ip_address("192.0.2.10"), "mail.example.com", "mail.example.com")
SPOOFER = Client(ipaddress.ip_address("203.0.113.5"), None, "spoofer.example.net")


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as executor:
        yield executor


def make_app(dns_server, pool, extra: str = ""):
    policy = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        + extra,
        "test-policy.yaml",
    )
    return build_app(policy, pool, state=MemoryStore())


def transact(app, client, sender, rcpts, raw=None, auth=None):
    """One whole transaction; (answers at MAIL and each RCPT, outcome or None, records)."""
    records: list[VerdictRecord] = []
    tx = Transaction(app, client, sender, auth, observer=records.append)
    answers = [tx.opening()]
    answers += [tx.recipient(r) for r in rcpts]
    outcome = None
    if answers[0] is None and any(a is None for a in answers[1:]):
        outcome = tx.finish(Message(raw if raw is not None else message()), "QID1")
    return answers, outcome, records


def test_a_good_signed_message_is_accepted_with_authentication_results_on_top(dns_server, pool):
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    app = make_app(dns_server, pool)
    raw = sign(message(), rsa_key(1024), "example.com")
    answers, outcome, records = transact(app, GOOD, "<alice@example.com>",
                                         ["<support@example.org>"], raw)
    assert answers == [None, None]
    assert outcome is not None and outcome.disposition is Disposition.ACCEPT
    name, value = outcome.add_headers[0]
    assert name == "Authentication-Results"
    methods = {(r.method, r.result) for r in parse_header_value(value).results}
    assert {("iprev", "pass"), ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")} <= methods
    [record] = records
    assert record.stage == "eom" and record.queue_id == "QID1"
    assert record.rcpts == ("support@example.org",) and record.mail_from == "alice@example.com"


def test_a_nonexistent_sender_is_refused_at_the_first_rcpt_and_reported_once(dns_server, pool):
    """smtpd_delay_reject: decided at MAIL, answered at RCPT (the log names a recipient)."""
    dns_server.load(ZONE)
    app = make_app(dns_server, pool)
    answers, outcome, records = transact(app, GOOD, "x@nowhere.example.net",
                                         ["a@example.org", "b@example.org"])
    assert answers[0] is None
    assert [a.disposition for a in answers[1:]] == [Disposition.REJECT, Disposition.REJECT]
    assert answers[1].reply is not None and answers[1].reply.dsn == "5.1.8"
    assert outcome is None
    [record] = records
    assert record.stage == "rcpt" and record.rcpts == ("a@example.org",)


def test_each_recipient_is_judged_alone_at_rcpt(dns_server, pool):
    """A recipient refused at RCPT leaves no trace in the message's results."""
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    app = make_app(dns_server, pool, (
        "checks: {names: {check_recipients: true}}\n"
        "rules:\n  - {name: rcpt-gone, when: [names.rcpt_nonexistent], action: reject,"
        " reply: {code: 550, dsn: 5.1.2, text: No such domain}}\n"
    ))
    raw = sign(message(), rsa_key(1024), "example.com")
    answers, outcome, records = transact(
        app, GOOD, "alice@example.com", ["a@example.org", "b@gone.example.net", "c@example.org"],
        raw)
    assert answers[0] is None and answers[1] is None and answers[3] is None
    assert answers[2] is not None and answers[2].reply.dsn == "5.1.2"
    assert outcome is not None and outcome.disposition is Disposition.ACCEPT
    refused, final = records
    assert refused.stage == "rcpt" and refused.rcpts == ("b@gone.example.net",)
    assert final.rcpts == ("a@example.org", "c@example.org")
    assert "names.rcpt_nonexistent" not in final.results.signals()


@pytest.mark.parametrize(("ip", "auth", "kind"), [
    ("127.0.0.1", None, ClientKind.TRUSTED),
    ("203.0.113.5", "alice", ClientKind.AUTHENTICATED),
])
def test_our_own_clients_are_not_judged_but_forgeries_still_go(dns_server, pool, ip, auth, kind):
    dns_server.load("")  # any query finds nothing: none must be needed
    app = make_app(dns_server, pool)
    raw = message(extra_headers=("Authentication-Results: mx.example.org; dkim=pass",))
    client = Client(ipaddress.ip_address(ip), None, "localhost")
    tx = Transaction(app, client, "nobody@nowhere.example.net", auth)
    assert tx.kind is kind and not tx.checked
    assert tx.opening() is None and tx.recipient("x@example.org") is None
    outcome = tx.finish(Message(raw))
    assert outcome.disposition is Disposition.ACCEPT
    assert [h.index for h in outcome.remove_headers] == [1]
    assert dns_server.queries == []
    if kind is ClientKind.AUTHENTICATED:  # RFC 8601 §2.7.4: the SASL identity is recorded
        [(name, value)] = outcome.add_headers
        assert name == "Authentication-Results"
        assert [(r.method, r.result) for r in parse_header_value(value).results] == [
            ("auth", "pass")]
    else:
        assert outcome.add_headers == ()


def test_a_declared_size_over_the_limit_is_refused_at_mail(dns_server, pool):
    """RFC 1870 §6: refuse at MAIL FROM what cannot fit."""
    dns_server.load(ZONE)
    app = make_app(dns_server, pool, "milter: {max_message_size: 2000}\n")
    records: list[VerdictRecord] = []
    tx = Transaction(app, GOOD, "alice@example.com", None, 9000, observer=records.append)
    refusal = tx.opening()
    assert refusal is not None and refusal.disposition is Disposition.REJECT
    assert str(refusal.reply) == "552 5.3.4 Message size exceeds the fixed limit"
    assert records[0].stage == "mail" and records[0].verdict.reasons == ("message.too_big",)
    assert dns_server.queries == []  # refused before any check


def test_refusals_no_rule_made_at_end_of_message(dns_server, pool):
    dns_server.load(ZONE)
    app = make_app(dns_server, pool)
    tx = Transaction(app, GOOD, "alice@example.com")
    assert tx.opening() is None and tx.recipient("a@example.org") is None
    busy = tx.refuse("busy", "QID")
    assert busy.disposition is Disposition.TEMPFAIL and busy.reply.dsn == "4.3.2"
    assert busy.record.stage == "eom" and busy.add_headers == ()


def test_the_null_sender_is_judged_as_a_bounce(dns_server, pool):
    dns_server.load(ZONE)
    app = make_app(dns_server, pool)
    answers, outcome, records = transact(app, GOOD, "<>", ["a@example.org"])
    assert answers == [None, None] and outcome is not None
    assert records[-1].mail_from == ""
    assert records[-1].results.first("spf.mailfrom") is not None


def test_the_record_is_the_verdict_line(dns_server, pool):
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    app = make_app(dns_server, pool)
    raw = sign(message(), rsa_key(1024), "example.com")
    _, _, [record] = transact(app, GOOD, "alice@example.com", ["support@example.org"], raw)
    queue_id, fields = parse_verdict_line(format_verdict_line(record.queue_id, record.pairs()))
    assert queue_id == "QID1"
    assert list(fields)[:8] == ["action", "reply", "client", "client_name", "helo", "from",
                                "rcpt", "client_kind"]
    assert list(fields)[-5:] == ["findings", "score", "rules", "stage", "ms"]
    assert fields["dmarc"] == "pass" and fields["helo_check"] == "pass"
    assert fields["client_kind"] == "external" and fields["stage"] == "eom"


def test_the_budget_counts_our_time_not_the_clients(dns_server, pool):
    """A client that takes longer than message_timeout to send DATA is not tempfailed for it."""
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    app = make_app(dns_server, pool)
    now = [1000.0]
    tx = Transaction(app, GOOD, "alice@example.com", clock=lambda: now[0])
    assert tx.opening() is None and tx.recipient("support@example.org") is None
    now[0] += 25.0  # the client sends DATA slowly: past the 20 s message_timeout
    outcome = tx.finish(Message(sign(message(), rsa_key(1024), "example.com")))
    assert outcome.disposition is Disposition.ACCEPT
    value = outcome.add_headers[0][1]
    assert ("dmarc", "pass") in {(r.method, r.result) for r in parse_header_value(value).results}
    assert outcome.record.elapsed_ms == 25000


GATEWAY_HEADERS = (
    "Authentication-Results: gw.example.net; dmarc=pass header.from=example.com",
    "Authentication-Results: other.example.net; spf=pass smtp.mailfrom=a@example.com",
)


def test_trusted_upstream_results_are_an_ordinary_check(dns_server, pool):
    """A gateway's A-R counts only from a trusted authserv-id, as `upstream.<method>`,
    and only on mail from that gateway (its networks)."""
    dns_server.load(ZONE)
    app = make_app(dns_server, pool,
                   "trusted_authserv_ids: [{id: GW.example.net, networks: [192.0.2.0/28]}]\n")
    raw = message(extra_headers=GATEWAY_HEADERS)
    _, outcome, _ = transact(app, GOOD, "alice@example.com", ["a@example.org"], raw)
    results = outcome.record.results
    assert [r.outcome for r in results["upstream.dmarc"]] == [Outcome.PASS]
    assert "upstream.spf" not in results
    assert "upstream" in {c.name for c in app.pipeline.checks}


@pytest.mark.parametrize("trusted", [
    "[{id: gw.example.net, networks: [192.0.2.0/28, '2001:db8::/32']}]",
    "[gw.example.net]",  # plain: only from the client verified as gw.example.net
    "[mail.example.com]",  # the client's own verified name, but not the id in the header
])
def test_a_trusted_gateways_header_on_mail_from_elsewhere_changes_nothing(
    dns_server, pool, trusted
):
    """Anyone can write gw.example.net's A-R into a message and send it to us
    directly: from a client that is not the gateway it is a stranger's field."""
    dns_server.load(ZONE)
    app = make_app(dns_server, pool, f"trusted_authserv_ids: {trusted}\n")
    forged = message(extra_headers=GATEWAY_HEADERS)
    elsewhere = Client(ipaddress.ip_address("192.0.2.30"), "mail.example.com", "mail.example.com")
    _, outcome, _ = transact(app, elsewhere, "alice@example.com", ["a@example.org"], forged)
    _, plain_outcome, _ = transact(app, elsewhere, "alice@example.com", ["a@example.org"],
                                   message())
    assert not any(r.check.startswith("upstream") for r in outcome.record.results.all())
    assert outcome.record.verdict == plain_outcome.record.verdict


def test_our_authserv_id_goes_without_its_root_dot(dns_server, pool):
    """`authserv_id: mx.example.org.` must still give a field RFC 8601 readers parse."""
    dns_server.load(ZONE)
    policy = parse_settings(
        "authserv_id: mx.example.org.\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n",
        "test-policy.yaml",
    )
    app = build_app(policy, pool, state=MemoryStore())
    assert app.authserv_id == "mx.example.org"
    _, outcome, _ = transact(app, GOOD, "alice@example.com", ["a@example.org"])
    assert parse_header_value(outcome.add_headers[0][1]).authserv_id == "mx.example.org"


def test_each_plain_trusted_id_is_announced_at_start(dns_server, pool, caplog):
    """A plain id no longer counts from every client: the operator is told how it is read."""
    caplog.set_level("INFO", logger="trustmilter.app")
    make_app(dns_server, pool, "trusted_authserv_ids: [gw.example.net, "
             "{id: gw2.example.net, networks: [192.0.2.0/28]}]\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "trustmilter.app"]
    assert lines == ["trusted_authserv_ids: gw.example.net is believed only on mail from the "
                     "client verified as gw.example.net (give its networks to trust it by "
                     "address)"]


def test_a_plain_trusted_id_counts_from_the_client_verified_by_that_name(dns_server, pool):
    dns_server.load(ZONE)
    app = make_app(dns_server, pool, "trusted_authserv_ids: [gw.example.net]\n")
    gateway = Client(ipaddress.ip_address("198.51.100.7"), "GW.example.net.", "gw.example.net")
    raw = message(extra_headers=GATEWAY_HEADERS)
    _, outcome, _ = transact(app, gateway, "alice@example.com", ["a@example.org"], raw)
    assert [r.outcome for r in outcome.record.results["upstream.dmarc"]] == [Outcome.PASS]
    unverified = Client(ipaddress.ip_address("198.51.100.7"), None, "gw.example.net")
    _, outcome, _ = transact(app, unverified, "alice@example.com", ["a@example.org"], raw)
    assert "upstream.dmarc" not in outcome.record.results


# --- finality (policy/finality.py), a pure function --------------------------


def policy_with(rules: str):
    return parse_settings("rules:\n" + rules, "p.yaml").policy


def test_an_undecided_reject_beside_a_final_tempfail_is_not_given_early():
    """A 5xx before end of message only when no later check can undo the rule forcing it."""
    policy = policy_with(
        "  - {name: spf-tempfail, when: [spf.mailfrom.fail], action: tempfail}\n"
        "  - {name: spf-reject, when: [spf.mailfrom.fail], unless: [dkim.pass], action: reject}\n"
    )
    verdict = evaluate(policy, Results([CheckResult("spf.mailfrom", Outcome.FAIL, method="spf")]))
    assert verdict.action.value == "reject"
    assert not is_final(policy, verdict, {"dkim.", "dmarc."})  # dkim.pass may still come
    assert is_final(policy, verdict, {"dmarc."})  # nothing later can exempt it


def test_a_wildcard_exemption_keeps_a_verdict_open_while_its_prefix_may_appear():
    policy = policy_with(
        "  - {name: spf-reject, when: [spf.mailfrom.fail], unless: ['upstream.*'],"
        " action: reject}\n"
    )
    verdict = evaluate(policy, Results([CheckResult("spf.mailfrom", Outcome.FAIL, method="spf")]))
    assert not is_final(policy, verdict, {"upstream."})
    assert is_final(policy, verdict, {"dkim."})
    score_only = policy_with("  - {name: points, when: [spf.mailfrom.fail], score: 50}\n")
    scored = evaluate(score_only, Results([CheckResult("spf.mailfrom", Outcome.FAIL)]))
    assert not is_final(score_only, scored, ())  # scores are never final


# --- effects: what checks ask to remember is written after the verdict --------


def bounce_app(dns_server, pool, store, extra: str = ""):
    """Our own bounces read (own_domains example.com) and delivered (held by default);
    GOOD's host is our own MTA, and the reporter of `bounce_of_ours`."""
    policy = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        "checks: {bounce: {own_domains: [example.com], own_mtas: [mail.example.com]}}\n"
        + extra,
        "test-policy.yaml",
    )
    return build_app(policy, pool, state=store)


# The bounce's From (MAILER-DAEMON@mail.example.com) under no DMARC policy.
BOUNCE_ZONE = ZONE.replace('_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject"\n', "")


def bounce_of_ours() -> bytes:
    from test_bounce_explain import POSTFIX_DSN

    return POSTFIX_DSN.replace(b"\n", b"\r\n")


def test_a_delivered_bounce_of_our_mail_is_remembered_once_decided(dns_server, pool):
    dns_server.load(BOUNCE_ZONE)
    store = MemoryStore()
    app = bounce_app(dns_server, pool, store)
    _, outcome, _ = transact(app, GOOD, "<>", ["alice@example.com"], bounce_of_ours())
    assert outcome.disposition in (Disposition.ACCEPT, Disposition.QUARANTINE)
    assert [b.recipient for b in store.hard_bounces(time.time())] == ["bob@example.net"]
    assert outcome.record.results.first("bounce").summary.endswith("; hard=1")


def test_a_refused_bounce_teaches_the_store_nothing(dns_server, pool):
    """A forged bounce we reject is not a hard bounce of ours."""
    dns_server.load(BOUNCE_ZONE)
    store = MemoryStore()
    app = bounce_app(dns_server, pool, store,
                     "rules:\n  - {name: no-bounces, when: [bounce.own], action: reject}\n")
    _, outcome, _ = transact(app, GOOD, "<>", ["alice@example.com"], bounce_of_ours())
    assert outcome.disposition is Disposition.REJECT
    assert store.hard_bounces(time.time()) == []


def test_a_store_that_fails_costs_the_memory_not_the_message(dns_server, pool, caplog):
    from trustmilter.state.base import StateError

    class BrokenStore(MemoryStore):
        def add_bounce(self, record):
            raise StateError("redis 127.0.0.1:6379: connection refused")

    dns_server.load(BOUNCE_ZONE)
    app = bounce_app(dns_server, pool, BrokenStore())
    with caplog.at_level("WARNING", logger="trustmilter.engine"):
        _, outcome, _ = transact(app, GOOD, "<>", ["alice@example.com"], bounce_of_ours())
    assert outcome.disposition in (Disposition.ACCEPT, Disposition.QUARANTINE)
    [line] = [r.getMessage() for r in caplog.records if r.name == "trustmilter.engine"]
    assert line == ("QID1: bounce: 1 hard bounce(s) not remembered: "
                    "redis 127.0.0.1:6379: connection refused")


# ---- what the verdict line and the header edits say once ----------------------


def test_a_finding_two_results_report_is_named_once_in_the_line(dns_server, pool):
    """The envelope sender and the From field are both no-reply: the automation check
    reports auto.noreply_sender at MAIL FROM and at end of message; the line names it once."""
    dns_server.load(ZONE)
    app = make_app(dns_server, pool)
    raw = message(from_="noreply@example.com")
    _, outcome, _ = transact(app, GOOD, "<noreply@example.com>", ["<support@example.org>"], raw)
    assert outcome is not None
    reported = [f.name for r in outcome.record.results.all() for f in r.findings]
    assert reported.count("auto.noreply_sender") == 2  # both details kept on the results
    findings = dict(outcome.record.pairs())["findings"].split(",")
    assert findings.count("auto.noreply_sender") == 1
    assert len(findings) == len(set(findings)) and set(findings) == set(reported)


def test_forged_fields_removed_are_named_in_the_line(dns_server, pool):
    dns_server.load(ZONE)
    app = make_app(dns_server, pool)
    raw = message(extra_headers=(
        "Authentication-Results: MX.Example.ORG; dkim=pass header.d=bank.example",
        "Authentication-Results: other.example; dkim=pass",
        "Authentication-Results: mx.example.org; spf=pass",
        "X-Trustmilter-Trust: high",
    ))
    _, outcome, _ = transact(app, GOOD, "<alice@example.com>", ["<support@example.org>"], raw)
    assert outcome is not None
    line = format_verdict_line("QID1", outcome.record.pairs())
    fields = parse_verdict_line(line)[1]
    assert fields["removed"] == "Authentication-Results:2,X-Trustmilter-Trust:1"
    assert fields["removed_authserv_id"] == "MX.Example.ORG,mx.example.org"
    assert list(fields).index("removed") == list(fields).index("findings") - 2
    assert len(outcome.remove_headers) == 3


def test_each_claimed_spelling_is_named_once_as_written(dns_server, pool):
    dns_server.load(ZONE)
    app = make_app(dns_server, pool)
    claims = [f"mx.example.org; dkim=pass{n}" for n in range(3)] + [
        '"mx.example.org"; x', "MX.EXAMPLE.ORG.; x"]
    raw = message(extra_headers=tuple(f"Authentication-Results: {c}" for c in claims))
    _, outcome, _ = transact(app, GOOD, "<alice@example.com>", ["<support@example.org>"], raw)
    assert outcome is not None
    fields = dict(outcome.record.pairs())
    assert fields["removed"] == "Authentication-Results:5"
    assert fields["removed_authserv_id"] == "mx.example.org,MX.EXAMPLE.ORG."


@pytest.mark.parametrize(("existing", "added", "removed"), [
    ((), ["auto-generated"], []),
    (("Auto-Submitted: auto-replied",), [], []),  # the sender's own, more precise, stays
    (("Auto-Submitted: Auto-Generated (bounce)",), [], []),
    (("Auto-Submitted: no",), ["auto-generated"], ["no"]),  # "no" = no field (RFC 3834 §5)
    (("Auto-Submitted: no", "Auto-Submitted: NO"), ["auto-generated"], ["no", "NO"]),
])
def test_one_auto_submitted_field_at_most(dns_server, pool, existing, added, removed):
    """Automated mail gets the RFC 3834 fields; never a second Auto-Submitted."""
    dns_server.load(ZONE)
    app = make_app(dns_server, pool)
    raw = message(from_="noreply@example.com", extra_headers=existing)
    _, outcome, _ = transact(app, GOOD, "<noreply@example.com>", ["<support@example.org>"], raw)
    assert outcome is not None and outcome.disposition is Disposition.QUARANTINE
    ours = [value for name, value in outcome.add_headers if name == "Auto-Submitted"]
    assert ours == added
    gone = [h.value.strip() for h in outcome.remove_headers if h.name == "Auto-Submitted"]
    assert gone == removed
    assert "X-Auto-Response-Suppress" in dict(outcome.add_headers)  # the others still come
    # Removing a sender's "no" is not a forgery: the verdict line names none.
    assert "removed" not in dict(outcome.record.pairs())


def test_a_claimed_authserv_id_is_escaped_and_clipped():
    """What a sender wrote cannot split the line or make it long (the record alone)."""
    from trustmilter.authresults import ForgedHeader
    from trustmilter.verdict import Action, Verdict

    forged = tuple(ForgedHeader(n, value) for n, value in enumerate([
        '"mx.exa\u2028mple.org"; x', '"mx\x85\x07,example.org"; x', "m" * 300 + "; x",
        "a.example; x", "b.example; x"], 1))
    record = VerdictRecord("QID1", Verdict(Action.ACCEPT, None, 0.0, ()), Results(), "eom", GOOD,
                           ClientKind.EXTERNAL, "alice@example.com", ("bob@example.org",), 1,
                           forged=forged)
    line = format_verdict_line("QID1", record.pairs())
    assert len(line.splitlines()) == 1 and line.isascii(), line
    claimed = parse_verdict_line(line)[1]["removed_authserv_id"].split(",")
    assert claimed == ["mx.exa\\u2028mple.org", "mx\\x85\\x07\\x2cexample.org", "m" * 64, "+2"]
