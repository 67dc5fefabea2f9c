"""trustmilter inline in a real Sendmail, through real SMTP.

The end-to-end cases of test_postfix_trustmilter.py, through Debian's
Sendmail (trustmilter.testing.sendmail: unpacked, never installed, so it
does not fight Postfix) configured with the shipped
packaging/sendmail/trustmilter.mc, only its socket changed: reject at RCPT
TO, reject and tempfail at end of message, Sendmail's quarantine, the
Authentication-Results header in the delivered message, and F=T when
trustmilter is down. One Sendmail and one ``trustmilter run`` per module.

Sendmail has no XCLIENT, so the milter sees the real peer address: each
test connects from a loopback address that its DNS zone describes (the
well-behaved host 127.0.0.10 with PTR and SPF, the spoofer 127.0.0.5
without PTR), and the policy trusts only 127.0.0.1 instead of all of
127.0.0.0/8, so these clients are checked.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import SMTP_TIMEOUT, Outcome, send
from trustmilter.authresults import parse_header_value
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.sendmail import SendmailInstance

SHIPPED_MC = Path(__file__).resolve().parents[1] / "packaging" / "sendmail" / "trustmilter.mc"
AUTHSERV_ID = "mx.example.org"
GOOD_IP, GOOD_HELO = "127.0.0.10", "mail.example.com"
SPOOFER_IP, SPOOFER_HELO = "127.0.0.5", "spoofer.example.net"
DMARC_REJECT = '_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject"'
ZONE = f"""
example.com.               300 IN TXT "v=spf1 ip4:{GOOD_IP} -all"
example.com.               300 IN MX  10 mail.example.com.
example.com.               300 IN A   {GOOD_IP}
mail.example.com.          300 IN A   {GOOD_IP}
10.0.0.127.in-addr.arpa.   300 IN PTR mail.example.com.
{DMARC_REJECT}
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   127.0.0.1
spoofer.example.net.       300 IN TXT "v=spf1 ip4:{SPOOFER_IP} -all"
spoofer.example.net.       300 IN A   {SPOOFER_IP}
""" + key_zone(rsa_key(1024), "sel", "example.com")
ACCEPTED = re.compile(r"2\.0\.0 (\w+) Message accepted for delivery")


# ---- the rig ---------------------------------------------------------------


class MilterRig:
    """The module's trustmilter and the Sendmail whose S= points at it.

    A test that stops the daemon leaves it stopped; the next one that needs
    it starts a new one (on a new port) and restarts Sendmail with that S=.
    """

    def __init__(self, sendmail: SendmailInstance, policy: Path, logs: Path) -> None:
        self.sendmail = sendmail
        self.policy = policy
        self.logs = logs
        self.current: DaemonProcess | None = None
        self.started = 0

    def running(self) -> DaemonProcess:
        if self.current is None or self.current.process.poll() is not None:
            self.started += 1
            self.current = DaemonProcess.start(self.policy, self.logs / f"trustmilter-{self.started}.log")
            self.sendmail.restart_with(S=self.current.spec)
        return self.current


@pytest.fixture(scope="module")
def rig(
    sendmail_prefix: Path, _dns_test_server: DnsTestServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MilterRig]:
    workdir = tmp_path_factory.mktemp("trustmilter")
    # No DNS cache: the zones change per test. Only 127.0.0.1 is trusted, so
    # the loopback addresses the tests connect from are checked.
    policy = write_policy(workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
                          dns={"cache_size": 0},
                          milter={"trusted_networks": ["127.0.0.1/32", "::1/128"]})
    # Started by the first test, with S= the daemon's socket (MilterRig.running).
    sendmail = SendmailInstance(
        tmp_path_factory.mktemp("sendmail"), "inet:0@127.0.0.1", prefix=sendmail_prefix,
        client_names={GOOD_IP: GOOD_HELO}, mc_path=SHIPPED_MC,
    )
    rig = MilterRig(sendmail, policy, workdir)
    try:
        yield rig
    finally:
        sendmail.stop()
        if rig.current is not None and rig.current.process.poll() is None:
            assert rig.current.stop() == 0, "SIGTERM: clean exit\n" + rig.current.log_tail()


@pytest.fixture
def daemon(rig: MilterRig) -> DaemonProcess:
    """trustmilter, running, as Sendmail's filter."""
    return rig.running()


@pytest.fixture
def mta(rig: MilterRig, daemon: DaemonProcess, dns_server: DnsTestServer) -> SendmailInstance:
    """Sendmail with trustmilter, empty queue and mailbox, and the test zone served."""
    rig.sendmail.reset()
    dns_server.load(ZONE)
    return rig.sendmail


@contextlib.contextmanager
def session_from(port: int, client_ip: str, helo: str) -> Iterator[smtplib.SMTP]:
    """An SMTP session to Sendmail from loopback address `client_ip`, saying EHLO `helo`."""
    smtp = smtplib.SMTP(local_hostname=helo, timeout=SMTP_TIMEOUT, source_address=(client_ip, 0))
    try:
        code, greeting = smtp.connect("127.0.0.1", port)
        assert code == 220, greeting
        smtp.ehlo(helo)
        yield smtp
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()


def send_from(
    mta: SendmailInstance,
    raw: bytes,
    *,
    client_ip: str = GOOD_IP,
    helo: str = GOOD_HELO,
    mail_from: str = "alice@example.com",
    rcpts: Sequence[str] = ("support@example.org",),
) -> Outcome:
    with session_from(mta.smtp_port, client_ip, helo) as smtp:
        return send(smtp, mail_from, rcpts, raw)


def good_message(**kw: object) -> bytes:
    """From example.com, DKIM-signed by example.com: passes everything."""
    return sign(message(**kw), rsa_key(1024), "example.com")  # type: ignore[arg-type]


def assert_reply(reply: object, code: int, dsn: str, text: str | None = None) -> None:
    shown = str(reply)
    assert shown.startswith(f"{code} {dsn} "), shown
    if text is not None:
        assert text in shown, shown


def assert_nothing_kept(mta: SendmailInstance) -> None:
    """Refused in the SMTP dialogue: not delivered, not queued, not quarantined."""
    assert mta.delivered() == []
    assert mta.queue() == [] and mta.quarantined() == []


# ---- rejections at the right stage -----------------------------------------


def test_nonexistent_sender_domain_is_rejected_at_rcpt(
    mta: SendmailInstance, daemon: DaemonProcess, dns_server: DnsTestServer
) -> None:
    """A verdict that cannot change comes at RCPT TO (550 5.1.8), before the body."""
    dns_server.load(ZONE + "$NXDOMAIN nowhere.example.net.\n")
    out = send_from(mta, message(from_="x@nowhere.example.net"), mail_from="x@nowhere.example.net")
    assert out.mail.code == 250, "Sendmail itself resolves no sender domain here"
    assert out.stage == "rcpt", out
    assert_reply(out.rcpts[0], 550, "5.1.8", "domain does not exist")
    fields = daemon.wait_verdict(mail_from="x@nowhere.example.net").fields
    assert fields["action"] == "reject" and fields["stage"] == "rcpt"
    # The address the client connected from, and the name Sendmail verified for it.
    assert fields["client"] == GOOD_IP and fields["client_name"] == GOOD_HELO
    assert_nothing_kept(mta)


def test_dmarc_reject_failure_is_rejected_after_data(mta: SendmailInstance) -> None:
    """p=reject from a host without PTR: needs the message, so 550 5.7.1 answers the DATA."""
    out = send_from(mta, message(from_="Alice <alice@example.com>"), client_ip=SPOOFER_IP,
                    helo=SPOOFER_HELO, mail_from="bounce@spoofer.example.net")
    assert [r.code for r in out.rcpts] == [250]
    assert out.stage == "data"
    assert_reply(out.data, 550, "5.7.1", "DMARC")
    assert_nothing_kept(mta)


# ---- tempfail --------------------------------------------------------------


def test_dns_timeout_on_dmarc_is_a_tempfail(
    mta: SendmailInstance, dns_server: DnsTestServer
) -> None:
    """RFC 7489 §6.6.2: a DMARC lookup that timed out is never a 5xx: 451 4.4.3."""
    dns_server.load(ZONE.replace(DMARC_REJECT, "$TIMEOUT _dmarc.example.com. TXT"))
    out = send_from(mta, message(), client_ip=SPOOFER_IP, helo=SPOOFER_HELO,
                    mail_from="bounce@spoofer.example.net")
    assert out.stage == "data"
    assert_reply(out.data, 451, "4.4.3")
    assert_nothing_kept(mta)


# ---- quarantine ------------------------------------------------------------


def test_p_quarantine_failure_is_held_in_sendmails_quarantine(
    mta: SendmailInstance, daemon: DaemonProcess, dns_server: DnsTestServer
) -> None:
    """RFC 7489 §6.3 p=quarantine: SMFIR_QUARANTINE keeps it in Sendmail's queue (mailq -qQ)."""
    dns_server.load(ZONE.replace("p=reject", "p=quarantine"))
    out = send_from(mta, message(message_id=f"<{uuid.uuid4().hex}@example.com>"),
                    client_ip=SPOOFER_IP, helo=SPOOFER_HELO, mail_from="bounce@spoofer.example.net")
    assert out.data is not None and out.data.code == 250, out
    accepted = ACCEPTED.fullmatch(out.data.text)
    assert accepted is not None, out.data
    queue_id = accepted[1]
    (held,) = mta.quarantined()
    assert held.queue_id == queue_id
    assert held.sender == "bounce@spoofer.example.net"
    assert held.recipients == ("support@example.org",)
    assert held.quarantine_reason, "Sendmail shows the reason trustmilter gave"
    mta.wait_idle()
    assert mta.delivered() == [] and mta.queue() == [], "held, not delivered"
    verdict = daemon.wait_verdict(queue_id)
    assert verdict.fields["action"] == "quarantine"
    assert verdict.fields["client"] == SPOOFER_IP


# ---- the Authentication-Results header -------------------------------------


def test_authentication_results_in_the_delivered_message(mta: SendmailInstance) -> None:
    out = send_from(mta, good_message())
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    names = [n.lower() for n in delivered.header_names()]
    ours = names.index("authentication-results")
    assert ours < names.index("dkim-signature") < names.index("from")
    assert all(not n.startswith("x-trustmilter") for n in names[:ours])
    (line,) = [ln for ln in delivered.raw.split(b"\n") if ln.startswith(b"Authentication-Results:")]
    assert line.startswith(b"Authentication-Results: " + AUTHSERV_ID.encode() + b";"), (
        f"exactly one space after the colon: {line[:60]!r}"
    )
    parsed = parse_header_value(delivered.header("Authentication-Results")[0])
    assert parsed.authserv_id == AUTHSERV_ID
    results = {(r.method, r.result) for r in parsed.results}
    assert {("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass"), ("iprev", "pass")} <= results
    assert delivered.header("Delivered-To") == ["support@example.org"]


def test_forged_authentication_results_removed_foreign_kept(mta: SendmailInstance) -> None:
    """RFC 8601 §5: ours-by-name headers from outside are deleted (Sendmail's
    chgheader indexes count as Postfix's do), others stay."""
    forged = f"Authentication-Results: {AUTHSERV_ID}; spf=pass smtp.mailfrom=evil@example.net"
    foreign = "Authentication-Results: gw.example.net; spf=fail smtp.mailfrom=alice@example.com"
    out = send_from(mta, good_message(extra_headers=(forged, foreign)))
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    values = delivered.header("Authentication-Results")
    assert len(values) == 2, values
    by_id = {parse_header_value(v).authserv_id: v for v in values}
    assert set(by_id) == {AUTHSERV_ID, "gw.example.net"}
    assert "dkim=pass" in by_id[AUTHSERV_ID]
    assert "evil@example.net" not in delivered.raw.decode(errors="replace"), "the forged one is gone"


# ---- F=T when the daemon is down -------------------------------------------
# Last in the file: it stops the module's daemon.


def test_daemon_down_is_a_tempfail_with_f_t(mta: SendmailInstance, daemon: DaemonProcess) -> None:
    """The shipped F=T: trustmilter unreachable, Sendmail tempfails instead of passing mail unchecked."""
    assert send_from(mta, good_message()).final.code == 250
    mta.wait_delivered(1)
    assert daemon.stop() == 0, daemon.log_tail()

    down = send_from(mta, good_message(subject="while down"))
    assert_reply(down.final, 451, "4.3.2")
    assert down.stage == "mail", "Sendmail refuses at the first command it can"
    mta.wait_idle()
    assert len(mta.delivered()) == 1 and mta.queue() == []

    # Without F=T the same Sendmail passes the mail unchecked: the flag is what holds it.
    try:
        mta.restart_with(F="")
        up = send_from(mta, good_message(subject="unchecked"))
        assert up.final.code == 250, up
        unchecked = [m for m in mta.wait_delivered(2) if m.header("Subject") == ["unchecked"]]
        assert len(unchecked) == 1
        assert unchecked[0].header("Authentication-Results") == [], "nobody checked it"
    finally:
        mta.restart_with(F="T")
