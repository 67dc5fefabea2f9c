"""Rate tiers per sender identity and ticket, and the allow-list, end to end.

Real SMTP into the module's private Postfix (conftest `postfix`), with
``trustmilter run`` as its milter on a policy whose state store is an
SQLite file, the shipped tiers (20 pass, the next 20 held, beyond 40
refused) and the test DNS server: example.com's server 192.0.2.10 passes
SPF and signs with DKIM (DMARC p=reject), a forwarder (198.51.100.25)
passes SPF for its own domain, and someone else's server (198.51.100.7)
fails example.com's SPF. XCLIENT presents those addresses. What is
asserted is what a sending MTA and a help desk see: the SMTP reply after
DATA, the hold queue, the delivered headers and the verdict line.

Each test's messages belong to a ticket (Subject) of their own: the
counts of the module's store persist from test to test, as in production.
The cases that need hundreds of messages (an allow-listed sender's 201st
and 401st) are in tests/test_rate_engine.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import Outcome, send, smtp_session
from trustmilter.checks.rate import key_part
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance
from zones import GOOD_SENDER

AUTHSERV_ID = "mx.example.org"
KEY = rsa_key(1024)
ZONE = GOOD_SENDER + key_zone(KEY, "sel", "example.com") + """
example.org.                300 IN MX  10 mx.example.org.
example.org.                300 IN A   198.51.100.25
forwarder.example.net.      300 IN TXT "v=spf1 ip4:198.51.100.25 -all"
forwarder.example.net.      300 IN MX  10 mx.forwarder.example.net.
mx.forwarder.example.net.   300 IN A   198.51.100.25
25.100.51.198.in-addr.arpa. 300 IN PTR mx.forwarder.example.net.
out.sender.example.net.     300 IN A   198.51.100.7
7.100.51.198.in-addr.arpa.  300 IN PTR out.sender.example.net.
"""
ROBOT_SERVER = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
FORWARDER = {"client_ip": "198.51.100.25", "helo": "mx.forwarder.example.net"}
FORGER = {"client_ip": "198.51.100.7", "helo": "out.sender.example.net"}
SUPPORT = "support@example.org"
ALLOWLISTED = "noreply@example.com"


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess


@pytest.fixture(scope="module")
def rig(postfix: PostfixInstance, _dns_test_server: DnsTestServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("rate")
    policy = write_policy(
        workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
        dns={"cache_size": 0},
        state={"backend": "sqlite", "sqlite_path": str(workdir / "state" / "state.sqlite3")},
        checks={"allowlist": {"senders": [ALLOWLISTED]}},
    )
    daemon = DaemonProcess.start(policy, workdir / "trustmilter.log")
    try:
        postfix.set_milters(daemon.postfix_spec, default_action="tempfail")
        yield Rig(postfix, daemon)
    finally:
        status = daemon.stop()
        assert status == 0, "SIGTERM: clean exit\n" + daemon.log_tail()


@pytest.fixture
def mta(rig: Rig, dns_server: DnsTestServer) -> Rig:
    rig.postfix.reset()
    dns_server.load(ZONE)
    return rig


def signed(from_: str, subject: str) -> bytes:
    """DKIM-signed by example.com, a Message-ID of its own."""
    raw = message(from_=from_, subject=subject, message_id=f"<{uuid.uuid4().hex}@example.com>")
    return sign(raw, KEY, "example.com")


def unsigned(from_: str, subject: str) -> bytes:
    return message(from_=from_, subject=subject, message_id=f"<{uuid.uuid4().hex}@example.net>")


def send_all(rig: Rig, client: dict[str, str], mails: list[tuple[str, bytes]]) -> list[Outcome]:
    """The (MAIL FROM, message) pairs in order, over one SMTP session."""
    with smtp_session(rig.postfix.smtp_port, **client) as smtp:
        return [send(smtp, sender, [SUPPORT], raw) for sender, raw in mails]


def queue_id(out: Outcome) -> str | None:
    if out.data is None or out.data.code != 250:
        return None
    found = re.search(r"queued as (\S+)", out.data.text)
    return found.group(1) if found else None


def fates(rig: Rig, outs: list[Outcome]) -> list[str]:
    """accept, hold or refused (after DATA: 550), as Postfix saw each message."""
    rig.postfix.wait_idle()
    held = {entry["queue_id"] for entry in rig.postfix.hold_queue()}
    found = []
    for out in outs:
        if out.data is not None and out.data.code == 550:
            assert "Too many messages from this sender" in out.data.text, out
            found.append("refused")
        else:
            qid = queue_id(out)
            assert qid is not None, out
            found.append("hold" if qid in held else "accept")
    return found


def ticket() -> str:
    return f"Ticket {uuid.uuid4().hex[:8]}"


def line_of(rig: Rig, out: Outcome) -> dict[str, str]:
    qid = queue_id(out)
    assert qid is not None, out
    return rig.daemon.wait_verdict(qid).fields


# ---- one sender however its return path is dressed -----------------------------------


@pytest.mark.parametrize(("client", "dressed", "identity"), [
    (ROBOT_SERVER, "bounce+{i}-support=example.org@example.com", "bounce@example.com"),  # VERP
    (FORWARDER, "SRS0=h{i:03d}=TT=example.com=robot@forwarder.example.net",
     "robot@example.com"),  # SRS: rewritten by a forwarder
    (ROBOT_SERVER, "prvs=0{i:03d}abcdef=robot@example.com", "robot@example.com"),  # BATV
])
def test_a_robot_whose_return_path_changes_is_held_at_21_and_refused_at_41(
        mta: Rig, client: dict[str, str], dressed: str, identity: str) -> None:
    subject = ticket()
    raw = signed("Robot <robot@example.com>", subject)
    outs = send_all(mta, client, [(dressed.format(i=i), raw) for i in range(45)])
    assert fates(mta, outs) == ["accept"] * 20 + ["hold"] * 20 + ["refused"] * 5
    held = line_of(mta, outs[20])
    assert (held["action"], held["rate"], held["rate_count"]) == ("quarantine", "fail", "21")
    assert held["rate_key"] == f"envelope:{identity}|ticket:{key_part('subj:' + subject.lower())}"
    assert "rate-quarantine" in held["rules"].split(",")
    accepted = line_of(mta, outs[0])
    assert accepted["rate"] == "pass" and "rate_key" not in accepted
    assert len(mta.postfix.wait_delivered(20)) == 20


def test_two_tickets_of_one_user_are_counted_apart(mta: Rig) -> None:
    user = "Carol <carol@example.com>"
    first, second = ticket(), ticket()
    outs = send_all(mta, ROBOT_SERVER, [("carol@example.com", signed(user, first))] * 41
                    + [("carol@example.com", signed(user, "Re: " + second))])
    assert fates(mta, outs) == ["accept"] * 20 + ["hold"] * 20 + ["refused", "accept"]


# ---- the attack: a forger cannot spend alice's hour ------------------------------------


def test_forged_senders_do_not_use_up_the_real_senders_hour(mta: Rig) -> None:
    """41 transactions with alice's address from a server her SPF does not list, then
    her own authenticated mail: accepted; her own 41st message in the hour: refused."""
    alice, subject = "Alice <alice@example.com>", ticket()
    forged = send_all(mta, FORGER, [("alice@example.com", unsigned(alice, subject))] * 41)
    assert all(out.data is not None for out in forged), "none refused before the body"
    genuine = send_all(mta, ROBOT_SERVER, [("alice@example.com", signed(alice, subject))] * 41)
    assert fates(mta, genuine) == ["accept"] * 20 + ["hold"] * 20 + ["refused"]
    # The forgeries were counted apart, under their own (stricter) tiers.
    counted_apart = [v.fields["rate_count"] for v in mta.daemon.verdicts()
                     if v.fields.get("rate_key", "").startswith("unauth:envelope:alice@example.com|")]
    assert "21" in counted_apart and "41" in counted_apart


# ---- the allow-list ---------------------------------------------------------------------


def test_an_allowlisted_noreply_sender_is_delivered_with_the_suppression_fields(
        mta: Rig) -> None:
    outs = send_all(mta, ROBOT_SERVER,
                    [(ALLOWLISTED, signed("Alerts <noreply@example.com>", ticket()))])
    assert fates(mta, outs) == ["accept"]
    fields = line_of(mta, outs[0])
    assert {"auto.noreply_sender", "allowlist.sender"} <= set(fields["findings"].split(","))
    [delivered] = mta.postfix.wait_delivered(1)
    # Notifications stay suppressed after allow-listing (RFC 3834 §5).
    assert delivered.header("Auto-Submitted") == ["auto-generated"]
    assert delivered.header("X-Auto-Response-Suppress") == ["All"]
    assert delivered.header("X-Trustmilter-Loop") == [AUTHSERV_ID]


def test_a_forgery_in_the_allowlisted_name_is_held_as_anyones(mta: Rig) -> None:
    outs = send_all(mta, FORGER, [(ALLOWLISTED, unsigned("Alerts <noreply@example.com>",
                                                         ticket()))])
    assert fates(mta, outs) == ["hold"]
    fields = line_of(mta, outs[0])
    findings = set(fields["findings"].split(","))
    assert "allowlist.unauthenticated" in findings and "allowlist.sender" not in findings
    assert "auto-noreply" in fields["rules"].split(",")

