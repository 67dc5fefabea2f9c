"""Out-of-office replies through a real Postfix and the daemon, held at the first one.

One private Postfix (conftest `postfix`) with ``trustmilter run`` as its
milter and the shipped defaults, the test DNS server vouching for the
sender (SPF, DKIM and DMARC in order, PTR and HELO too), so the only thing
that can hold a message is the sign it carries. Each reply comes from a
new sender: it is that sender's first message, far below any rate tier.

The replies carry nothing but their Subject, as many responders send them,
each encoded as its mailers do: English plain, German ISO-8859-1 Q,
French UTF-8 B, Japanese ISO-2022-JP B with an ISO-2022-JP body (7bit), as
Japanese mailers write. A person's "Re: absence" passes, untouched.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import Outcome, send_one
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance
from zones import GOOD_SENDER

AUTHSERV_ID = "mx.example.org"
KEY = rsa_key(1024)
ZONE = GOOD_SENDER + key_zone(KEY, "sel", "example.com")
CLIENT = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}


def iso_2022_jp_subject(text: str) -> str:
    return f"=?ISO-2022-JP?B?{base64.b64encode(text.encode('iso-2022-jp')).decode()}?="


@dataclass(frozen=True)
class Reply:
    language: str
    subject: str  # as it travels: RFC 2047-encoded where the language needs it
    extra_headers: tuple[str, ...] = ()
    body: bytes = b"I am out of the office until Monday.\r\n"


REPLIES = (
    Reply("English", "Out of Office: Your request"),
    Reply("German", "=?iso-8859-1?q?Automatische_Antwort:_Ihre_Anfrage_f=FCr_M=E4rz?="),
    Reply("French", "=?UTF-8?B?" + base64.b64encode(
        "Réponse automatique : votre demande".encode()).decode() + "?="),
    Reply("Japanese", iso_2022_jp_subject("自動応答: お問い合わせ"),
          ("MIME-Version: 1.0", "Content-Type: text/plain; charset=ISO-2022-JP",
           "Content-Transfer-Encoding: 7bit"),
          "ただいま不在にしております。\r\n".encode("iso-2022-jp")),
)


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess


@pytest.fixture(scope="module")
def rig(postfix: PostfixInstance, _dns_test_server: DnsTestServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("autoreply")
    policy = write_policy(workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
                          dns={"cache_size": 0})
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


def send_reply(mta: Rig, subject: str, extra_headers: tuple[str, ...] = (),
               body: bytes = b"Hello\r\n") -> tuple[str, Outcome]:
    """One message from a sender never seen before, DKIM-signed by example.com."""
    sender = f"person-{uuid.uuid4().hex[:10]}@example.com"
    raw = sign(message(from_=f"Person <{sender}>", subject=subject, body=body,
                       extra_headers=extra_headers,
                       message_id=f"<{uuid.uuid4().hex}@example.com>"), KEY, "example.com")
    return sender, send_one(mta.postfix.smtp_port, raw, mail_from=sender, **CLIENT)


def queue_id_of(out: Outcome) -> str:
    assert out.data is not None and out.data.code == 250, out
    match = re.search(r"queued as (\S+)", out.data.text)
    assert match, out.data
    return match.group(1)


def test_an_out_of_office_reply_in_each_language_is_held_at_the_first_message(mta: Rig) -> None:
    queue_ids = {}
    for reply in REPLIES:
        _, out = send_reply(mta, reply.subject, reply.extra_headers, reply.body)
        queue_ids[reply.language] = queue_id_of(out)
    mta.postfix.wait_idle()
    held = {entry["queue_id"] for entry in mta.postfix.hold_queue()}
    assert {language for language, qid in queue_ids.items() if qid in held} == {
        reply.language for reply in REPLIES}
    for language, queue_id in queue_ids.items():
        fields = mta.daemon.wait_verdict(queue_id).fields
        assert fields["action"] == "quarantine", (language, fields)
        assert "auto-autoreply" in fields["rules"].split(","), (language, fields)
        assert "auto.autoreply" in fields["findings"].split(","), (language, fields)
        assert "rate.tier" not in fields["findings"], "the first message: no rate tier"
    assert mta.postfix.delivered() == []


def test_a_person_writing_about_an_absence_is_delivered_untouched(mta: Rig) -> None:
    _, out = send_reply(mta, "Re: absence", body=b"I will be away on Monday.\r\n")
    queue_id = queue_id_of(out)
    fields = mta.daemon.wait_verdict(queue_id).fields
    # Delivered (low trust or not is the connection checks' business here).
    assert fields["action"] in ("accept", "low-trust"), fields
    assert "auto." not in fields["findings"], fields
    [delivered] = mta.postfix.wait_delivered(1)
    assert delivered.header("Auto-Submitted") == []
    assert delivered.header("X-Auto-Response-Suppress") == []


def test_the_japanese_reply_travels_as_seven_bit_iso_2022_jp() -> None:
    """What the test sends is what Japanese mailers send: no 8-bit byte anywhere."""
    japanese = REPLIES[-1]
    raw = message(subject=japanese.subject, body=japanese.body,
                  extra_headers=japanese.extra_headers)
    assert raw.isascii() and b"\x1b$B" in raw
    assert japanese.subject.startswith("=?ISO-2022-JP?B?")
