"""trustmilter inline in a real Postfix, through real SMTP.

One private Postfix (conftest `postfix`) and one ``trustmilter run`` per
module; each test serves its own zone from the DNS test server and talks
SMTP from 127.0.0.1, presenting the client address and HELO with XCLIENT.
The assertions are what a sending MTA and a mailbox see: the reply code,
enhanced code and text at the SMTP stage where trustmilter decided, the
hold queue (``postqueue -j``), the delivered message's headers, and the
verdict line in trustmilter's log matched to Postfix's queue ID.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import send, send_one, smtp_session
from trustmilter.authresults import parse_header_value
from trustmilter.daemon.verdictlog import LEADING_KEYS, NO_QUEUE_ID, TRAILING_KEYS
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance

AUTHSERV_ID = "mx.example.org"
DMARC_REJECT = '_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject"'
ZONE = f"""
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN MX  10 mail.example.com.
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
{DMARC_REJECT}
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
spoofer.example.net.       300 IN TXT "v=spf1 ip4:203.0.113.5 -all"
spoofer.example.net.       300 IN A   203.0.113.5
""" + key_zone(rsa_key(1024), "sel", "example.com")
GOOD_CLIENT = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
SPOOFER = {"client_ip": "203.0.113.5", "helo": "spoofer.example.net"}


class DaemonSlot:
    """The module's trustmilter: started when a test needs it, restarted after
    a test stopped it. Stopping takes libmilter a few seconds, so the module
    stops one only when it has to."""

    def __init__(self, postfix: PostfixInstance, policy: Path, logs: Path) -> None:
        self.postfix = postfix
        self.policy = policy
        self.logs = logs
        self.current: DaemonProcess | None = None
        self.started = 0

    def running(self) -> DaemonProcess:
        """A running daemon with Postfix's smtpd_milters pointing at it."""
        if self.current is None or self.current.process.poll() is not None:
            self.started += 1
            log_path = self.logs / f"trustmilter-{self.started}.log"
            self.current = DaemonProcess.start(self.policy, log_path)
            self.postfix.set_milters(self.current.postfix_spec, default_action="tempfail")
        return self.current


@pytest.fixture(scope="module")
def daemon_slot(
    postfix: PostfixInstance, _dns_test_server: DnsTestServer, tmp_path_factory
) -> Iterator[DaemonSlot]:
    workdir = tmp_path_factory.mktemp("trustmilter")
    # No DNS cache: the zones change per test.
    policy = write_policy(workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
                          dns={"cache_size": 0})
    slot = DaemonSlot(postfix, policy, workdir)
    yield slot
    if slot.current is not None and slot.current.process.poll() is None:
        status = slot.current.stop()
        assert status == 0, "SIGTERM: clean exit\n" + slot.current.log_tail()


@pytest.fixture
def daemon(daemon_slot: DaemonSlot) -> DaemonProcess:
    """trustmilter, running, as Postfix's milter."""
    return daemon_slot.running()


@pytest.fixture
def mta(postfix: PostfixInstance, daemon: DaemonProcess, dns_server: DnsTestServer) -> PostfixInstance:
    """Postfix with trustmilter, empty queue and Maildir, and the test zone served."""
    postfix.reset()
    dns_server.load(ZONE)
    return postfix


def good_message(**kw: object) -> bytes:
    """From example.com, DKIM-signed by example.com: passes everything."""
    return sign(message(**kw), rsa_key(1024), "example.com")  # type: ignore[arg-type]


def unique_id() -> str:
    return f"<{uuid.uuid4().hex}@example.com>"


def postfix_queue_id(postfix: PostfixInstance, message_id: str) -> str:
    """The queue ID Postfix's cleanup logged for the message with `message_id`."""
    match = postfix.wait_for_log(rf"\]: ([0-9A-F]+): message-id={re.escape(message_id)}")
    return match.group(1)


def assert_reply(outcome_reply: object, code: int, dsn: str, text: str | None = None) -> None:
    reply = str(outcome_reply)
    assert reply.startswith(f"{code} {dsn} "), reply
    if text is not None:
        assert text in reply, reply


# ---- (a) rejections at the right stage -------------------------------------


def test_nonexistent_sender_domain_is_rejected_at_rcpt(
    mta: PostfixInstance, daemon: DaemonProcess, dns_server: DnsTestServer
) -> None:
    """docs/rules.md §3: the verdict cannot change, so it comes at RCPT TO (550 5.1.8)."""
    dns_server.load(ZONE + "$NXDOMAIN nowhere.example.net.\n")
    out = send_one(mta.smtp_port, message(from_="x@nowhere.example.net"),
                   mail_from="x@nowhere.example.net", **GOOD_CLIENT)
    assert out.mail.code == 250
    assert out.stage == "rcpt", out
    assert_reply(out.rcpts[0], 550, "5.1.8", "domain does not exist")
    mta.wait_for_log(r"milter-reject: RCPT from unknown\[192\.0\.2\.10\]: 550 5\.1\.8 ")
    queue_id, fields = daemon.wait_verdict(mail_from="x@nowhere.example.net")
    assert queue_id == NO_QUEUE_ID, "Postfix assigns a queue ID only after a valid RCPT"
    assert fields["action"] == "reject" and fields["stage"] == "rcpt"


def test_dmarc_reject_failure_is_rejected_after_data(mta: PostfixInstance) -> None:
    """p=reject from a host without PTR (RFC 9989 §7.4: more than the policy speaks
    against it): needs the message, so 550 5.7.1 answers the DATA."""
    out = send_one(mta.smtp_port, message(from_="Alice <alice@example.com>"),
                   mail_from="bounce@spoofer.example.net", **SPOOFER)
    assert [r.code for r in out.rcpts] == [250]
    assert out.stage == "data"
    assert_reply(out.data, 550, "5.7.1", "DMARC")
    mta.wait_for_log(r"milter-reject: END-OF-MESSAGE from unknown\[203\.0\.113\.5\]: 5\.7\.1 ")
    assert mta.delivered() == [] and mta.queue() == []


# ---- (b) tempfail ----------------------------------------------------------


def test_dns_timeout_on_dmarc_is_a_tempfail(
    mta: PostfixInstance, dns_server: DnsTestServer
) -> None:
    """RFC 7489 §6.6.2: a DMARC lookup that timed out is never a 5xx: 451 4.4.3."""
    dns_server.load(ZONE.replace(DMARC_REJECT, "$TIMEOUT _dmarc.example.com. TXT"))
    out = send_one(mta.smtp_port, message(), mail_from="bounce@spoofer.example.net", **SPOOFER)
    assert out.stage == "data"
    assert_reply(out.data, 451, "4.4.3")
    assert mta.delivered() == [] and mta.queue() == []


# ---- (c) quarantine --------------------------------------------------------


def test_p_quarantine_failure_lands_in_the_hold_queue(
    mta: PostfixInstance, daemon: DaemonProcess, dns_server: DnsTestServer
) -> None:
    """RFC 7489 §6.3 p=quarantine: Postfix's hold queue, not the mailbox."""
    dns_server.load(ZONE.replace("p=reject", "p=quarantine"))
    message_id = unique_id()
    out = send_one(mta.smtp_port, message(message_id=message_id),
                   mail_from="bounce@spoofer.example.net", **SPOOFER)
    assert out.data is not None and out.data.code == 250, out
    (held,) = mta.hold_queue()
    queue_id = postfix_queue_id(mta, message_id)
    assert held["queue_id"] == queue_id
    assert held["sender"] == "bounce@spoofer.example.net"
    mta.wait_for_log(rf"{queue_id}: milter-hold: ")
    assert mta.delivered() == []
    assert daemon.wait_verdict(queue_id).fields["action"] == "quarantine"


# ---- (d, e) the Authentication-Results header ------------------------------


def test_authentication_results_in_the_delivered_message(mta: PostfixInstance) -> None:
    out = send_one(mta.smtp_port, good_message(), **GOOD_CLIENT)
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    names = [n.lower() for n in delivered.header_names()]
    # Above the message's own fields and everything else trustmilter adds.
    ours = names.index("authentication-results")
    assert ours < names.index("dkim-signature") < names.index("from")
    assert all(not n.startswith("x-trustmilter") for n in names[:ours])
    # With SMFIP_HDR_LEADSPC negotiated, Postfix writes an added value exactly
    # as given: the milter must supply the space after the colon itself.
    (line,) = [ln for ln in delivered.raw.split(b"\n") if ln.startswith(b"Authentication-Results:")]
    assert line.startswith(b"Authentication-Results: " + AUTHSERV_ID.encode() + b";"), (
        f"no space after the colon (P_HDR_LEADSPC): {line[:60]!r}"
    )
    parsed = parse_header_value(delivered.header("Authentication-Results")[0])
    assert parsed.authserv_id == AUTHSERV_ID
    results = {(r.method, r.result) for r in parsed.results}
    assert {("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass"), ("iprev", "pass")} <= results


def test_forged_authentication_results_removed_foreign_kept(mta: PostfixInstance) -> None:
    """RFC 8601 §5: ours-by-name headers from outside are deleted, others stay."""
    forged = f"Authentication-Results: {AUTHSERV_ID}; spf=pass smtp.mailfrom=evil@example.net"
    foreign = "Authentication-Results: gw.example.net; spf=fail smtp.mailfrom=alice@example.com"
    raw = good_message(extra_headers=(forged, foreign))
    out = send_one(mta.smtp_port, raw, **GOOD_CLIENT)
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    values = delivered.header("Authentication-Results")
    assert len(values) == 2, values
    by_id = {parse_header_value(v).authserv_id: v for v in values}
    assert set(by_id) == {AUTHSERV_ID, "gw.example.net"}
    assert "evil@example.net" not in by_id[AUTHSERV_ID], "the forged one is gone"
    assert "dkim=pass" in by_id[AUTHSERV_ID]
    assert "evil@example.net" not in delivered.raw.decode(errors="replace")


# ---- (f) several transactions on one connection ----------------------------


def test_transactions_on_one_connection_get_their_own_verdicts(
    mta: PostfixInstance, daemon: DaemonProcess, dns_server: DnsTestServer
) -> None:
    dns_server.load(ZONE + "$NXDOMAIN nowhere.example.net.\n")
    ids = [unique_id() for _ in range(3)]
    with smtp_session(mta.smtp_port, **GOOD_CLIENT) as smtp:
        accepted = send(smtp, "alice@example.com", ["a@example.org"],
                        good_message(message_id=ids[0], subject="first"))
        refused = send(smtp, "x@nowhere.example.net", ["b@example.org"],
                       message(from_="x@nowhere.example.net", message_id=ids[1]))
        # The DMARC failure: From example.com, unsigned, from the same client
        # but a MAIL FROM that SPF does not permit. RSET came before (send()).
        # A host in good standing: held, not refused (RFC 9989 §7.4).
        held = send(smtp, "bounce@spoofer.example.net", ["c@example.org"],
                    message(message_id=ids[2]))
        again = send(smtp, "alice@example.com", ["d@example.org"],
                     good_message(message_id=unique_id(), subject="fourth"))
    assert accepted.final.code == 250 and again.final.code == 250
    assert_reply(refused.final, 550, "5.1.8")
    assert refused.stage == "rcpt"
    assert held.final.code == 250 and held.stage == "data"
    delivered = mta.wait_delivered(2)
    assert [m.header("Subject") for m in delivered] == [["first"], ["fourth"]]
    assert daemon.wait_verdict(postfix_queue_id(mta, ids[0])).fields["action"] == "accept"
    assert daemon.wait_verdict(postfix_queue_id(mta, ids[2])).fields["action"] == "quarantine"


# ---- (h) the verdict line ---------------------------------------------------


def test_verdict_line_matches_postfix_queue_id(mta: PostfixInstance, daemon: DaemonProcess) -> None:
    message_id = unique_id()
    out = send_one(mta.smtp_port, good_message(message_id=message_id),
                   rcpts=("support@example.org", "sales@example.org"), **GOOD_CLIENT)
    assert out.data is not None and out.data.code == 250, out
    mta.wait_delivered(2)
    queue_id = postfix_queue_id(mta, message_id)
    assert out.data.text.endswith(f"queued as {queue_id}")
    fields = daemon.wait_verdict(queue_id).fields
    for key in (*LEADING_KEYS, *TRAILING_KEYS):
        assert key in fields, f"{key} missing from {fields}"
    (line,) = [raw for raw in daemon.log_text().splitlines() if f"{queue_id}: action=" in raw]
    keys = re.findall(r" ([A-Za-z0-9_.-]+)=", line.split(": ", 2)[2])
    assert len(keys) == len(set(keys)), f"a key appears twice, so one value is lost: {line}"
    assert fields["action"] == "accept"
    assert fields["client"] == "192.0.2.10"
    assert fields["helo"] == "mail.example.com"
    assert fields["from"] == "<alice@example.com>"
    assert fields["rcpt"] == "<support@example.org>,<sales@example.org>"
    assert fields["spf.mailfrom"] == "pass" and fields["dmarc"] == "pass"
    assert fields["stage"] == "eom"
    assert int(fields["ms"]) >= 0


# ---- (g) milter_default_action when the daemon is down ---------------------
# Last in the file: it stops the module's daemon (a later test would start a
# new one, at the price of one more slow stop).


def test_daemon_down_follows_milter_default_action(mta: PostfixInstance, daemon: DaemonProcess) -> None:
    """SIGTERM stops trustmilter cleanly; Postfix then applies milter_default_action."""
    assert send_one(mta.smtp_port, good_message(), **GOOD_CLIENT).final.code == 250
    assert daemon.stop() == 0, daemon.log_tail()
    assert any(": stopped (process " in line for line in daemon.log_text().splitlines()), "a graceful stop"

    down = send_one(mta.smtp_port, good_message(), **GOOD_CLIENT)
    assert 400 <= down.final.code < 500, down
    assert down.stage == "mail", "Postfix refuses at the first command it can"
    mta.wait_for_log(rf"connect to Milter service {re.escape(daemon.postfix_spec)}: Connection refused")

    try:
        mta.set_milters(daemon.postfix_spec, default_action="accept")
        up = send_one(mta.smtp_port, good_message(subject="unchecked"), **GOOD_CLIENT)
        assert up.final.code == 250, up
        unchecked = [m for m in mta.wait_delivered(2) if m.header("Subject") == ["unchecked"]]
        assert len(unchecked) == 1
        assert unchecked[0].header("Authentication-Results") == [], "nobody checked it"
    finally:
        mta.set_milters(daemon.postfix_spec, default_action="tempfail")

