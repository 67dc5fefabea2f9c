"""Ours or not, end to end: a private Postfix with trustmilter on both its
smtpd_milters and non_smtpd_milters, an SQLite state store, our token key.

The help desk's notification goes out stamped with our token; a stranger's
MTA (XCLIENT 192.0.2.10, a name Postfix verified) sends its bounce back,
returning the delivered header: verifiably ours (token), held as bounces are,
the hard bounce recorded and listed by `trustmilter bounces list` with its
evidence. The same report without our token, only a From of ours inside,
claims to be ours and records nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtp_helpers import send, smtp_session
from test_postfix_replies import AUTHSERV_ID, CLIENT, KEY, ZONE, fate, notify
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance

CLI_TIMEOUT = 60


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess
    policy: Path

    def trustmilter(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The real command line, as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "trustmilter", *argv, "--policy", str(self.policy)],
            capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def rig(postfix: PostfixInstance, _dns_test_server: DnsTestServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("bounce-ours")
    key = workdir / "token.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    policy = write_policy(
        workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
        dns={"cache_size": 0},
        state={"backend": "sqlite", "sqlite_path": str(workdir / "state" / "state.sqlite3")},
        checks={"replies": {"key_file": str(key)},
                "bounce": {"own_domains": ["example.org"], "own_mtas": ["relay.example.org"]}},
    )
    daemon = DaemonProcess.start(policy, workdir / "trustmilter.log")
    try:
        postfix.set_milters(daemon.postfix_spec, default_action="tempfail", non_smtpd=True)
        yield Rig(postfix, daemon, policy)
    finally:
        postfix.set_milters("", non_smtpd=False)
        assert daemon.stop() == 0, "SIGTERM: clean exit\n" + daemon.log_tail()


@pytest.fixture
def mta(rig: Rig, dns_server: DnsTestServer) -> Rig:
    rig.postfix.reset()
    dns_server.load(ZONE)
    return rig


def report(header: bytes, gone: str) -> bytes:
    """mail.example.com's report that `gone` does not exist, returning `header`."""
    return (b"From: Mail Delivery System <MAILER-DAEMON@mail.example.com>\r\n"
            b"To: support@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Date: Mon, 01 Jan 2024 10:05:00 +0000\r\n"
            b"Message-ID: <" + uuid.uuid4().hex.encode() + b"@mail.example.com>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            b"report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nCould not be delivered.\r\n"
            b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mail.example.com\r\n\r\n"
            b"Final-Recipient: rfc822; " + gone.encode() + b"\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
            b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" + header + b"\r\n--b1--\r\n")


def bounce_back(rig: Rig, raw: bytes) -> tuple[str, dict[str, str]]:
    """The bounce delivered by the stranger's MTA (its name verified); its fate and
    verdict fields."""
    with smtp_session(rig.postfix.smtp_port, client_name="mail.example.com", **CLIENT) as smtp:
        out = send(smtp, "", ["support@example.org"], raw)
    where, verdict = fate(rig, out)
    return where, verdict.fields


def listed(rig: Rig) -> dict[str, dict[str, object]]:
    done = rig.trustmilter("bounces", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {b["recipient"]: b for b in json.loads(done.stdout)["bounces"]}


def test_a_bounce_of_our_notification_is_ours_by_its_token(mta: Rig) -> None:
    delivered = notify(mta)  # the replies test's helper: it needs .postfix and .daemon
    header = delivered.raw.split(b"\n\n", 1)[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"X-Trustmilter-Token: 1." in header

    gone = f"gone.{uuid.uuid4().hex[:8]}@example.com"
    where, fields = bounce_back(mta, report(header, gone))
    assert where == "hold"  # bounces stay in the suspended queue, ours too
    assert fields["bounce_summary"].startswith("own; ours=yes:token; reporting-mta=")
    assert fields["bounce_summary"].endswith(f"5.1.1 <{gone}> user unknown; hard=1")
    assert {"bounce.ours", "reply.ours_bounce"} <= set(fields["findings"].split(","))
    record = listed(mta)[gone]
    assert (record["ours"], record["status"], record["client"]) == ("token", "5.1.1",
                                                                    "192.0.2.10")
    readable = mta.trustmilter("bounces", "list")
    assert any(line.startswith(f"<{gone}>") and line.endswith("ours=token")
               for line in readable.stdout.splitlines()), readable.stdout

    # The same report with only a From of ours inside: it claims, nothing is recorded.
    claimed = f"claimed.{uuid.uuid4().hex[:8]}@example.com"
    plain = (b"From: Help Desk <support@example.org>\r\nTo: " + claimed.encode() + b"\r\n"
             b"Subject: [#4711] Your ticket was updated\r\n"
             b"Message-ID: <forged.4711@helpdesk.example.org>\r\n")
    where, fields = bounce_back(mta, report(plain, claimed))
    assert where == "hold"
    assert fields["bounce_summary"].startswith("own; ours=claims; ")
    assert "hard=" not in fields["bounce_summary"]
    assert "bounce.ours" not in fields["findings"].split(",")
    assert claimed not in listed(mta)
