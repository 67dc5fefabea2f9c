"""Issue 4 end to end: loops, automation, rate tiers and the learning quarantine.

Real SMTP into the module's private Postfix (conftest `postfix`), with
``trustmilter run`` (`DaemonProcess`) as its milter, a policy whose state
store is an SQLite file in the module's tmp dir, and the test DNS server.
Each message comes from 192.0.2.10 (XCLIENT) with SPF, DKIM and DMARC in
order, so the only thing that can hold or refuse it is the signal a test
puts in. What is asserted is what a sending MTA and a help desk see: the
SMTP reply at the stage where trustmilter decided, the hold queue, the
delivered message's headers, and the verdict line.

docs/rules.md §5 (mail loops) and §7: a support address never sends to
us; more than `max_received` hops is a loop (554 5.4.6); no-reply, bulk,
machine-generated mail and bounces are suspended; 20 messages an hour
pass, the next 20 are suspended, then they are refused; releasing held
mail teaches the filter, so the same sender passes later. The rate tests
make the tiers small (2 and 4) by rewriting the policy and reloading the
daemon (SIGHUP), as an operator would, and put them back afterwards.
Senders are unique per test: the counts and reputations of the module's
store persist from test to test, as in production.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import Outcome, send, send_one, smtp_session
from trustmilter.testing.daemon import DaemonProcess, Verdict, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance
from zones import GOOD_SENDER

AUTHSERV_ID = "mx.example.org"
SUPPORT = "support@example.org"
ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
""" + key_zone(rsa_key(1024), "sel", "example.com")
CLIENT = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
SMALL_TIERS = {"quarantine_after": 2, "reject_after": 4}
CLI_TIMEOUT = 60


# ---- the rig ----------------------------------------------------------------------


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess
    policy: Path
    nameserver: str
    state_path: Path

    def write_policy(self, rate: dict[str, Any] | None = None) -> None:
        write_policy(
            self.policy, AUTHSERV_ID, self.nameserver,
            dns={"cache_size": 0},
            state={"backend": "sqlite", "sqlite_path": str(self.state_path)},
            checks={"loops": {"support_addresses": [SUPPORT, "helpdesk@example.org"]},
                    "rate": rate or {},
                    "bounce": {"own_domains": ["example.org"],
                               "own_mtas": ["mail.example.com"]}},
        )

    def reload(self, rate: dict[str, Any] | None = None) -> None:
        """Rewrite the policy and SIGHUP the daemon; returns once it took the new one."""
        self.write_policy(rate)
        offset = len(self.daemon.log_text())
        self.daemon.reload()
        self.daemon.wait_for_log("policy reloaded", timeout=10, after=offset)

    def trustmilter(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The real command line, as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "trustmilter", *argv, "--policy", str(self.policy)],
            capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL,
        )

    def release(self, queue_id: str) -> dict[str, Any]:
        done = self.trustmilter("quarantine", "release", "--postfix-config",
                                str(self.postfix.config_dir), "--json", queue_id)
        assert done.returncode == 0, done.stderr
        (released,) = json.loads(done.stdout)["released"]
        return released  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rig(
    postfix: PostfixInstance, _dns_test_server: DnsTestServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("loops")
    policy = workdir / "policy.yaml"
    rig = Rig(postfix, None, policy, _dns_test_server.nameserver,  # type: ignore[arg-type]
              workdir / "state" / "state.sqlite3")
    rig.write_policy()
    rig.daemon = DaemonProcess.start(policy, workdir / "trustmilter.log")
    try:
        postfix.set_milters(rig.daemon.postfix_spec, default_action="tempfail")
        yield rig
    finally:
        status = rig.daemon.stop()
        assert status == 0, "SIGTERM: clean exit\n" + rig.daemon.log_tail()


@pytest.fixture
def mta(rig: Rig, dns_server: DnsTestServer) -> Rig:
    """The rig with an empty queue and Maildir, the zone served, default tiers."""
    rig.postfix.reset()
    dns_server.load(ZONE)
    return rig


def unique(prefix: str) -> str:
    # "." joins: "-" and "+" are sub-address separators, and every
    # noreply-<id>@ would be the one sender identity noreply@.
    return f"{prefix}.{uuid.uuid4().hex[:10]}@example.com"


def signed(from_: str = "Alice <alice@example.com>", **kw: Any) -> bytes:
    """DKIM-signed by example.com (aligned with From): DMARC passes. A Subject of
    its own unless given: each message is then its own ticket, so the rate
    counts per From and ticket of one test never reach another's."""
    kw.setdefault("message_id", f"<{uuid.uuid4().hex}@example.com>")
    kw.setdefault("subject", f"Hello {uuid.uuid4().hex[:10]}")
    return sign(message(from_=from_, **kw), rsa_key(1024), "example.com")


def queue_id_of(out: Outcome) -> str:
    assert out.data is not None and out.data.code == 250, out
    match = re.search(r"queued as (\S+)", out.data.text)
    assert match, out.data
    return match.group(1)


def fate(rig: Rig, out: Outcome) -> str:
    """accept, hold or reject (at RCPT TO or after DATA), as Postfix saw it."""
    if out.data is None or out.data.code >= 400:
        return f"reject@{out.stage}"
    queue_id = queue_id_of(out)
    rig.postfix.wait_idle()
    return "hold" if queue_id in {e["queue_id"] for e in rig.postfix.hold_queue()} else "accept"


def verdict(rig: Rig, out: Outcome) -> Verdict:
    return rig.daemon.wait_verdict(queue_id_of(out))


def assert_reply(out: Outcome, stage: str, code: int, dsn: str, text: str) -> None:
    assert out.stage == stage, out
    reply = out.final
    assert (reply.code, reply.text.split()[0]) == (code, dsn), reply
    assert text in reply.text, reply


# ---- loops (docs/rules.md §5; RFC 5321 §6.3) ----------------------------------------


def test_a_support_address_as_sender_is_refused_at_rcpt(mta: Rig) -> None:
    """A support address is never a user address: refused before the body is sent."""
    out = send_one(mta.postfix.smtp_port, signed(), mail_from=SUPPORT, **CLIENT)
    assert_reply(out, "rcpt", 550, "5.7.1", "Mail loop refused")
    fields = mta.daemon.wait_verdict(mail_from=SUPPORT).fields
    assert (fields["action"], fields["stage"]) == ("reject", "rcpt")
    assert "loop.support_sender" in fields["findings"]
    assert mta.postfix.queue() == []


def test_a_support_address_in_from_is_refused_after_data(mta: Rig) -> None:
    sender = unique("alice")
    out = send_one(mta.postfix.smtp_port, signed(from_="Help <helpdesk@example.org>"),
                   mail_from=sender, **CLIENT)
    assert_reply(out, "data", 550, "5.7.1", "Mail loop refused")
    fields = mta.daemon.wait_verdict(mail_from=sender).fields
    assert "loop.support_sender" in fields["findings"]
    assert "loop.support_to_support" in fields["findings"], "helpdesk@ wrote to support@"
    assert mta.postfix.queue() == [] and mta.postfix.delivered() == []


@pytest.mark.parametrize(("hops", "refused"), [(29, False), (31, True)])
def test_too_many_received_headers_is_a_routing_loop(mta: Rig, hops: int, refused: bool) -> None:
    """More than max_received (30) trace fields, counting the one Postfix adds: 554 5.4.6."""
    received = tuple(
        f"Received: from relay{n}.example.net (relay{n}.example.net [198.51.100.{n}]) "
        f"by relay{n + 1}.example.net; Mon, 01 Jan 2024 10:00:{n:02d} +0000"
        for n in range(hops)
    )
    out = send_one(mta.postfix.smtp_port, signed(extra_headers=received), **CLIENT)
    if refused:
        assert_reply(out, "data", 554, "5.4.6", "too many hops")
        assert mta.postfix.queue() == []
    else:
        assert fate(mta, out) == "accept"


def test_our_own_loop_marker_coming_back_is_refused(mta: Rig) -> None:
    """The marker trustmilter puts on automated mail it delivers: seen again, a loop."""
    out = send_one(mta.postfix.smtp_port,
                   signed(extra_headers=(f"X-Trustmilter-Loop: {AUTHSERV_ID}",)), **CLIENT)
    assert_reply(out, "data", 554, "5.4.6", "Routing loop detected")
    other = send_one(mta.postfix.smtp_port,
                     signed(extra_headers=("X-Trustmilter-Loop: mx.example.net",)), **CLIENT)
    assert fate(mta, other) == "accept", "another system's marker is not ours"


# ---- automated mail (docs/rules.md §5, §6, §7) ----------------------------------------


@pytest.mark.parametrize(
    ("prefix", "headers", "finding", "rule"),
    [
        ("noreply", (), "auto.noreply_sender", "auto-noreply"),
        ("news", ("List-Id: Newsletter <news.example.com>",), "auto.bulk", "auto-bulk"),
        ("news", ("Precedence: bulk",), "auto.bulk", "auto-bulk"),
        ("news", ("List-Unsubscribe: <mailto:leave@example.com>",), "auto.bulk", "auto-bulk"),
        ("robot", ("Auto-Submitted: auto-generated",), "auto.machine_generated",
         "auto-machine-generated"),
        ("robot", ("Auto-Submitted: auto-replied",), "auto.autoreply", "auto-autoreply"),
        ("robot", ("X-Autoreply: yes",), "auto.autoreply", "auto-autoreply"),
        ("robot", ("X-OTRS-Loop: yes",), "auto.helpdesk", "auto-helpdesk"),
    ],
)
def test_automated_mail_is_held_with_its_reason(
    mta: Rig, prefix: str, headers: tuple[str, ...], finding: str, rule: str
) -> None:
    sender = unique(prefix)
    out = send_one(mta.postfix.smtp_port, signed(from_=sender, extra_headers=headers),
                   mail_from=sender, **CLIENT)
    assert fate(mta, out) == "hold"
    fields = verdict(mta, out).fields
    assert fields["action"] == "quarantine" and rule in fields["rules"].split(",")
    assert finding in fields["findings"]
    mta.postfix.wait_for_log(rf"{queue_id_of(out)}: milter-hold: ")
    assert mta.postfix.delivered() == []


def test_a_bounce_is_held(mta: Rig) -> None:
    """Null sender and a delivery-status report (RFC 3464): suspended, not answered."""
    body = (b"--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mail.example.com\r\n\r\n"
            b"Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            b"--b1--\r\n")
    raw = signed(from_="Mail Delivery System <MAILER-DAEMON@example.com>",
                 subject="Undelivered Mail Returned to Sender", body=body,
                 extra_headers=("MIME-Version: 1.0", "Content-Type: multipart/report; "
                                "report-type=delivery-status; boundary=\"b1\""))
    out = send_one(mta.postfix.smtp_port, raw, mail_from="", **CLIENT)
    assert fate(mta, out) == "hold"
    fields = verdict(mta, out).fields
    assert fields["from"] == "<>" and "auto-bounce" in fields["rules"].split(",")
    assert "auto.bounce" in fields["findings"]


def test_a_sender_saying_auto_submitted_no_gets_ours_instead(mta: Rig) -> None:
    """RFC 3834 §5: "no" is the same as no field; held automated mail gets one
    Auto-Submitted field, ours, not two that disagree."""
    sender = unique("noreply")
    out = send_one(mta.postfix.smtp_port,
                   signed(from_=sender, extra_headers=("Auto-Submitted: no",)),
                   mail_from=sender, **CLIENT)
    assert fate(mta, out) == "hold"
    shown = mta.trustmilter("quarantine", "show", "--postfix-config",
                            str(mta.postfix.config_dir), queue_id_of(out))
    assert shown.returncode == 0, shown.stderr
    assert [line for line in shown.stdout.splitlines()
            if line.lower().startswith("auto-submitted:")] == ["Auto-Submitted: auto-generated"]


def our_bounce(gone: str, returned_id: str, extra_headers: tuple[str, ...] = ()) -> bytes:
    """example.com's MTA reports that our support mail to `gone` bounced (RFC 3464)."""
    body = (b"--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mail.example.com\r\n\r\n"
            b"Final-Recipient: rfc822; " + gone.encode() + b"\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
            b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            b"From: Support <support@example.org>\r\nTo: " + gone.encode() + b"\r\n"
            b"Subject: Your ticket\r\nMessage-ID: " + returned_id.encode() + b"\r\n"
            b"--b1--\r\n")
    return signed(from_="Mail Delivery System <MAILER-DAEMON@example.com>",
                  subject="Undelivered Mail Returned to Sender", body=body,
                  extra_headers=("MIME-Version: 1.0", "Auto-Submitted: auto-replied",
                                 "Content-Type: multipart/report; "
                                 "report-type=delivery-status; boundary=\"b1\"", *extra_headers))


def test_a_bounce_of_our_own_mail_is_summarised_held_and_recorded(mta: Rig) -> None:
    """docs/rules.md §6: the bounce is held (automated mail) with a summary header
    for the help desk, its verdict line says what bounced, and the hard bounce is
    listed: the report comes from one of our own MTAs (the policy's own_mtas), by
    the name Postfix verified for the client that delivered it."""
    gone = unique("gone")
    returned_id = f"<{uuid.uuid4().hex}@example.org>"
    raw = our_bounce(gone, returned_id, ("X-Trustmilter-Bounce: own; forged by the sender",))
    with smtp_session(mta.postfix.smtp_port, client_name="mail.example.com", **CLIENT) as smtp:
        out = send(smtp, "", [SUPPORT], raw)
    assert fate(mta, out) == "hold"
    expected = (f"own; ours=yes:reporting-mta; reporting-mta=mail.example.com; "
                f"message-id={returned_id}; 5.1.1 <{gone}> user unknown; hard=1")
    fields = verdict(mta, out).fields
    assert (fields["bounce"], fields["bounce_summary"]) == ("fail", expected)
    assert {"bounce.own", "bounce.permanent", "auto.bounce"} <= set(fields["findings"].split(","))
    shown = mta.trustmilter("quarantine", "show", "--postfix-config",
                            str(mta.postfix.config_dir), queue_id_of(out))
    assert shown.returncode == 0, shown.stderr
    # Ours is there, the sender's forged copy is gone.
    assert [line for line in shown.stdout.splitlines()
            if line.startswith("X-Trustmilter-Bounce:")] == [f"X-Trustmilter-Bounce: {expected}"]
    # RFC 3834 §5: the bounce said auto-replied itself; no second Auto-Submitted of ours.
    assert [line for line in shown.stdout.splitlines()
            if line.lower().startswith("auto-submitted:")] == ["Auto-Submitted: auto-replied"]
    assert "X-Auto-Response-Suppress: All" in shown.stdout.splitlines()

    listing = mta.trustmilter("bounces", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    [record] = [b for b in json.loads(listing.stdout)["bounces"] if b["recipient"] == gone]
    assert (record["status"], record["cause"], record["sender"], record["message_id"],
            record["client"], record["bounces"], record["ours"]) == (
        "5.1.1", "user unknown", "support@example.org", returned_id, "192.0.2.10", 1,
        "reporting-mta")
    readable = mta.trustmilter("bounces", "list")
    assert f"<{gone}>  5.1.1 user unknown" in readable.stdout

    forgot = mta.trustmilter("bounces", "forget", gone)
    assert forgot.returncode == 0, forgot.stderr
    again = mta.trustmilter("bounces", "forget", gone)
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr


# ---- release teaches: the learned pass (docs/rules.md §7) ------------------------------


@pytest.mark.parametrize(("prefix", "headers"), [
    ("noreply", ()),
    ("news", ("List-Id: Newsletter <news.example.com>",)),
])
def test_two_releases_teach_the_third_message_through(
    mta: Rig, prefix: str, headers: tuple[str, ...]
) -> None:
    sender = unique(prefix)

    def send() -> Outcome:
        return send_one(mta.postfix.smtp_port, signed(from_=sender, extra_headers=headers),
                        mail_from=sender, **CLIENT)

    for release in (1, 2):
        held = send()
        assert fate(mta, held) == "hold", f"message {release} is held"
        released = mta.release(queue_id_of(held))
        assert released["learned"]["releases"] == release
        delivered = mta.postfix.wait_delivered(release, timeout=5)[-1]
        # Released mail keeps its reasons and the RFC 3834 fields (docs/rules.md §5:
        # notifications stay suppressed after a release).
        assert "action=quarantine" in delivered.header("X-Trustmilter-Trust")[0]
        assert delivered.header("Auto-Submitted") == ["auto-generated"]

    learned = send()
    assert fate(mta, learned) == "accept", "the third message passes: it was learned"
    fields = verdict(mta, learned).fields
    assert "reputation.learned" in fields["findings"]
    assert fields["action"] in ("accept", "low-trust")
    delivered = mta.postfix.wait_delivered(3)[-1]
    # Accepted despite the automation signal: downstream must not answer it (RFC 3834 §5).
    assert delivered.header("Auto-Submitted") == ["auto-generated"]
    assert delivered.header("X-Auto-Response-Suppress") == ["All"]
    assert delivered.header("X-Trustmilter-Loop") == [AUTHSERV_ID]

    listing = mta.trustmilter("reputation", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    (known,) = [r for r in json.loads(listing.stdout)["reputations"] if r["sender"] == sender]
    assert (known["releases"], known["trusted"]) == (2, True)

    # Forgetting undoes it: the next message is held again.
    forgot = mta.trustmilter("reputation", "forget", sender)
    assert forgot.returncode == 0, forgot.stderr
    assert fate(mta, send()) == "hold"


def test_learning_never_lifts_a_reject(mta: Rig) -> None:
    """Learned senders skip the quarantine rules only: a loop is still refused."""
    sender = unique("noreply")
    for _ in range(2):
        out = send_one(mta.postfix.smtp_port, signed(from_=sender), mail_from=sender, **CLIENT)
        assert fate(mta, out) == "hold"
        mta.release(queue_id_of(out))
    looped = send_one(mta.postfix.smtp_port,
                      signed(from_=sender, extra_headers=(f"X-Trustmilter-Loop: {AUTHSERV_ID}",)),
                      mail_from=sender, **CLIENT)
    assert_reply(looped, "data", 554, "5.4.6", "Routing loop detected")


# ---- rate tiers (docs/rules.md §5: pass, suspend, refuse) ------------------------------


@pytest.fixture
def small_tiers(mta: Rig) -> Iterator[Rig]:
    """quarantine_after 2, reject_after 4, for this test only."""
    mta.reload(SMALL_TIERS)
    try:
        yield mta
    finally:
        mta.reload()


def test_rate_tiers_in_sequence(small_tiers: Rig) -> None:
    rig = small_tiers
    sender = unique("loop")
    ticket = f"Printer {uuid.uuid4().hex[:8]} broken"
    outs = [send_one(rig.postfix.smtp_port, signed(subject=ticket), mail_from=sender, **CLIENT)
            for _ in range(6)]
    fates = [fate(rig, out) for out in outs]
    assert fates == ["accept", "accept", "hold", "hold", "reject@data", "reject@data"]
    # Counted at end of message, once SPF, DKIM and DMARC are known: refused
    # after DATA, with a clear text.
    assert_reply(outs[4], "data", 550, "5.7.1", "Too many messages")
    assert "rate-quarantine" in verdict(rig, outs[2]).fields["rules"].split(",")
    # Counted per user and ticket (the default keys): another ticket starts at 1.
    other = send_one(rig.postfix.smtp_port, signed(subject="Another question " + ticket),
                     mail_from=sender, **CLIENT)
    assert fate(rig, other) == "accept"


def test_parallel_sessions_get_exactly_the_tiered_counts(small_tiers: Rig) -> None:
    """10 sessions at once from one sender about one ticket: 2 delivered, 2 held,
    6 refused (after DATA, where they are counted) — exactly."""
    rig = small_tiers
    sender = unique("flood")
    ticket = f"Flood {uuid.uuid4().hex[:8]}"

    def one(_: int) -> Outcome:
        return send_one(rig.postfix.smtp_port, signed(subject=ticket), mail_from=sender,
                        **CLIENT)

    with ThreadPoolExecutor(10) as pool:
        outs = list(pool.map(one, range(10)))
    refused = [out for out in outs if out.data is not None and out.data.code >= 500]
    assert len(refused) == 6, outs
    assert all(out.final.code == 550 for out in refused)
    assert sum(1 for out in outs if out.data is not None and out.data.code == 250) == 4
    rig.postfix.wait_idle()
    assert len(rig.postfix.hold_queue()) == 2
    assert len(rig.postfix.wait_delivered(2)) == 2
