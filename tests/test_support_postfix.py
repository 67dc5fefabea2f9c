"""Support addresses both ways, through a real Postfix and the daemon.

The module's private Postfix (conftest `postfix`) with ``trustmilter run``
as both its ``smtpd_milters`` and its ``non_smtpd_milters``, so it sees
what strangers send over SMTP (XCLIENT presents their address), what our
own host sends over SMTP from 127.0.0.1 (a trusted network), what a SASL
user submits (XCLIENT LOGIN=, Postfix's {auth_authen}) and what a local
program submits with sendmail(1) (Postfix hands it to the milter from
localhost [127.0.0.1]). The help desk's support addresses are
support@example.org and help@example.com (example.com's SPF lists the
outside service 192.0.2.10). What is asserted is what the sender and the
help desk see: the SMTP reply and the step that gave it, Postfix's log for
locally submitted mail, the Maildir, and the verdict line.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import Outcome, send, smtp_session
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance
from zones import GOOD_SENDER

AUTHSERV_ID = "mx.example.org"
ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
""" + key_zone(rsa_key(1024), "sel", "example.com")
STRANGER = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
LAPTOP = {"client_ip": "203.0.113.5", "helo": "laptop.example.net", "login": "agent"}
OUR_HOST = {"xclient": False}  # the real connection: 127.0.0.1, a trusted network


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess


@pytest.fixture(scope="module")
def rig(postfix: PostfixInstance, _dns_test_server: DnsTestServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("support")
    policy = write_policy(
        workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
        dns={"cache_size": 0},
        checks={"loops": {"support_addresses": ["support@example.org", "help@example.com"],
                          # partner-desk@ forwards to another company's help desk
                          # (the rig delivers only example.org).
                          "external_helpdesks": ["@desk.example.net",
                                                 "partner-desk@example.org"]}},
    )
    daemon = DaemonProcess.start(policy, workdir / "trustmilter.log")
    try:
        postfix.set_milters(daemon.postfix_spec, default_action="tempfail", non_smtpd=True)
        yield Rig(postfix, daemon)
    finally:
        postfix.set_milters("")
        status = daemon.stop()
        assert status == 0, "SIGTERM: clean exit\n" + daemon.log_tail()


@pytest.fixture
def mta(rig: Rig, dns_server: DnsTestServer) -> Rig:
    rig.postfix.reset()
    dns_server.load(ZONE)
    return rig


def smtp(rig: Rig, client: dict[str, object], sender: str, rcpts: list[str],
         raw: bytes) -> Outcome:
    with smtp_session(rig.postfix.smtp_port, **client) as session:  # type: ignore[arg-type]
        return send(session, sender, rcpts, raw)


def unique_id() -> str:
    return f"<{uuid.uuid4().hex}@example.org>"


def assert_refused_at_rcpt(out: Outcome, text: str) -> None:
    assert out.stage == "rcpt", out
    reply = out.final
    assert (reply.code, reply.text.split()[0]) == (550, "5.7.1") and text in reply.text, reply


@pytest.mark.parametrize(("client", "sender", "rcpt"), [
    (STRANGER, "help@example.com", "support@example.org"),
    (OUR_HOST, "support@example.org", "support+id4711@example.org"),
    (LAPTOP, "help@example.com", "Support@example.org"),
], ids=["external", "local", "sasl"])
def test_support_to_support_is_refused_at_rcpt_from_every_client(
        mta: Rig, client: dict[str, object], sender: str, rcpt: str) -> None:
    raw = message(from_=f"Help desk <{sender}>", message_id=unique_id())
    out = smtp(mta, client, sender, [rcpt], raw)
    assert_refused_at_rcpt(out, "support address to support address")
    fields = mta.daemon.wait_verdict(mail_from=sender).fields
    assert fields["stage"] == "rcpt" and fields["rcpt"] == f"<{rcpt}>"
    assert "loop.support_to_support" in fields["findings"]
    expected = {"external": "external", "local": "trusted", "sasl": "authenticated"}
    assert fields["client_kind"] == expected[
        "external" if client is STRANGER else "local" if client is OUR_HOST else "sasl"]
    assert ("direction" in fields) == (client is not STRANGER)
    assert mta.postfix.queue() == [] and mta.postfix.delivered() == []


def test_a_notification_submitted_locally_is_refused_before_it_leaves(mta: Rig) -> None:
    """A program on the host (sendmail(1), non_smtpd_milters): an automatic answer
    to the support address is refused, and Postfix returns it to its sender."""
    message_id = unique_id()
    raw = message(from_="Colleague <colleague@example.org>", subject="Out of office",
                  message_id=message_id, extra_headers=("Auto-Submitted: auto-replied",))
    mta.postfix.sendmail(raw, "colleague@example.org", ["support+id4711@example.org"])
    queue_id = mta.postfix.queue_id_for(message_id)
    mta.postfix.wait_for_log(
        rf"{queue_id}: milter-reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: "
        r"5\.7\.1 Mail loop refused: notifications are not sent to a support address")
    fields = mta.daemon.wait_verdict(queue_id).fields
    assert (fields["action"], fields["stage"], fields["direction"]) == (
        "reject", "eom", "outbound")
    assert (fields["client"], fields["client_kind"]) == ("127.0.0.1", "trusted")
    assert fields["findings"] == "loop.notification_to_support"
    [returned] = mta.postfix.wait_delivered(1)
    assert returned.header("Delivered-To") == ["colleague@example.org"], "the bounce, only"
    assert b"Mail loop refused" in returned.raw
    mta.postfix.wait_idle()
    assert mta.postfix.queue() == []


def test_a_bounce_submitted_locally_to_a_support_address_is_refused_whole(mta: Rig) -> None:
    """The null sender shows it at RCPT TO already, but Postfix can refuse non-SMTP
    mail only as a whole ("can't reject recipient in non-smtpd(8) submission",
    and it would retry it for ever): refused at end of message."""
    message_id = unique_id()
    mta.postfix.sendmail(message(from_="MAILER-DAEMON@example.org", message_id=message_id),
                         "", ["support@example.org"])
    queue_id = mta.postfix.queue_id_for(message_id)
    mta.postfix.wait_for_log(rf"{queue_id}: milter-reject: END-OF-MESSAGE "
                             r"from localhost\[127\.0\.0\.1\]: 5\.7\.1 Mail loop refused")
    fields = mta.daemon.wait_verdict(queue_id).fields
    assert (fields["stage"], fields["from"]) == ("eom", "<>")
    mta.postfix.wait_idle()
    assert mta.postfix.queue() == [] and mta.postfix.delivered() == []


def test_a_colleague_writing_to_support_by_hand_is_delivered(mta: Rig) -> None:
    message_id = unique_id()
    raw = message(from_="Colleague <colleague@example.org>", subject="My printer",
                  message_id=message_id)
    mta.postfix.sendmail(raw, "colleague@example.org", ["support@example.org"])
    queue_id = mta.postfix.queue_id_for(message_id)
    [delivered] = mta.postfix.wait_delivered(1)
    assert delivered.header("Subject") == ["My printer"]
    assert delivered.header("Authentication-Results") == []
    fields = mta.daemon.wait_verdict(queue_id).fields
    assert (fields["action"], fields["direction"], fields["findings"]) == (
        "accept", "outbound", "")


def test_our_help_desk_notifying_another_help_desk_over_smtp_is_refused(mta: Rig) -> None:
    """From our own host: that recipient alone is refused."""
    out = smtp(mta, OUR_HOST, "support@example.org",
               ["colleague@example.org", "partner-desk@example.org"],
               message(from_="Support <support@example.org>", message_id=unique_id()))
    assert out.rcpts[0].code == 250
    assert out.rcpts[1].code == 550 and "another help desk" in out.rcpts[1].text
    assert out.data is not None and out.data.code == 250, "the colleague still gets it"
    [delivered] = mta.postfix.wait_delivered(1)
    assert delivered.header("Delivered-To") == ["colleague@example.org"]


def test_our_support_address_from_outside_to_a_colleague(mta: Rig) -> None:
    """A plain message is delivered; the same automated is held as a suspected loop."""
    def from_help(*extra: str) -> Outcome:
        raw = sign(message(from_="Help <help@example.com>", to="colleague@example.org",
                           message_id=unique_id(), extra_headers=extra),
                   rsa_key(1024), "example.com")
        return smtp(mta, STRANGER, "help@example.com", ["colleague@example.org"], raw)

    plain = from_help()
    assert plain.data is not None and plain.data.code == 250, plain
    automated = from_help("Auto-Submitted: auto-generated")
    assert automated.data is not None and automated.data.code == 250, automated
    mta.postfix.wait_idle()
    assert len(mta.postfix.wait_delivered(1)) == 1
    [held] = mta.postfix.hold_queue()
    fields = mta.daemon.wait_verdict(held["queue_id"]).fields
    assert "loop-support-sender" in fields["rules"].split(",")
