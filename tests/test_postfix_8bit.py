"""8-bit EHLO, MAIL FROM, RCPT and header names through a real Postfix.

The private Postfix runs with ``smtputf8_enable = no`` (as the rig always
does): then it passes bytes that are not UTF-8 in EHLO, MAIL FROM and RCPT
TO on to the milter. trustmilter must answer each with a verdict, write a
verdict line (its log is the daemon's stderr here; test_daemon_logging.py
covers syslog) and log no traceback. State is SQLite, where an 8-bit
sender made the reputation check fail on every such message.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import message
from smtp_helpers import SMTP_TIMEOUT
from trustmilter.testing.daemon import DaemonProcess, Verdict, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance

ZONE = """
example.net.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.net.               300 IN A   192.0.2.10
mail.example.net.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.net.
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
"""


@pytest.fixture(scope="module")
def daemon(
    postfix: PostfixInstance, _dns_test_server: DnsTestServer, tmp_path_factory
) -> Iterator[DaemonProcess]:
    work: Path = tmp_path_factory.mktemp("trustmilter-8bit")
    policy = write_policy(work / "policy.yaml", "mx.example.org", _dns_test_server.nameserver,
                          dns={"cache_size": 0},
                          state={"backend": "sqlite", "sqlite_path": str(work / "state.db")})
    running = DaemonProcess.start(policy, work / "trustmilter.log")
    postfix.set_milters(running.postfix_spec, default_action="tempfail")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def mta(postfix: PostfixInstance, daemon: DaemonProcess, dns_server: DnsTestServer) -> PostfixInstance:
    postfix.reset()
    dns_server.load(ZONE)
    return postfix


def command(smtp: smtplib.SMTP, line: bytes) -> tuple[int, bytes]:
    """One SMTP command written as raw bytes (smtplib sends commands as ASCII)."""
    smtp.send(line + b"\r\n")
    return smtp.getreply()


def session(port: int, helo: bytes) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=SMTP_TIMEOUT)
    smtp.ehlo()
    code, text = smtp.docmd("XCLIENT", "ADDR=192.0.2.10 NAME=mail.example.net")
    assert code == 220, (code, text)
    code, text = command(smtp, b"EHLO " + helo)
    assert code == 250, (code, text)
    return smtp


@pytest.mark.parametrize(
    ("helo", "mail_from", "rcpt", "field", "written"),
    [
        (b"h\xff\xfe.example.net", b"a@example.net", b"b@example.org",
         "helo", "h\\xff\\xfe.example.net"),
        (b"mail.example.net", b"\xff\xfe@example.net", b"b@example.org",
         "from", "<\\xff\\xfe@example.net>"),
        (b"mail.example.net", b"a@example.net", b"\xe9t\xe9@example.org",
         "rcpt", "<\\xe9t\\xe9@example.org>"),
    ],
    ids=["ehlo", "mail-from", "rcpt"],
)
def test_8bit_envelope_gets_a_verdict_and_a_verdict_line(
    mta: PostfixInstance, daemon: DaemonProcess, helo, mail_from, rcpt, field, written
) -> None:
    before = len(daemon.log_text())
    smtp = session(mta.smtp_port, helo)
    try:
        code, text = command(smtp, b"MAIL FROM:<" + mail_from + b">")
        assert code == 250, (code, text)  # Postfix passes it on (smtputf8_enable = no)
        code, text = command(smtp, b"RCPT TO:<" + rcpt + b">")
        if code == 250:
            # An 8-bit header name: Postfix does not pass it to the milter as a
            # header (it ends the header section); the message is still judged.
            code, text = smtp.data(b"X-\xc3(: odd\r\n" + message(from_="a@example.net"))
        assert code in (250, 450, 451, 550, 554), (code, text)
    finally:
        smtp.quit()
    verdict = _verdict_with(daemon, field, written)
    assert verdict.fields.get("reputation") != "temperror", verdict.fields
    log = daemon.log_text()[before:]
    assert "Traceback" not in log and "Logging error" not in log, log


def _verdict_with(daemon: DaemonProcess, field: str, written: str) -> Verdict:
    """The latest verdict line whose `field` reads `written` (each case's is unique)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for verdict in reversed(daemon.verdicts()):
            if verdict.fields.get(field) == written:
                return verdict
        time.sleep(0.1)
    raise AssertionError(f"no verdict line with {field}={written}:\n{daemon.log_tail()}")
