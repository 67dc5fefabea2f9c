"""A blocklisted link however deep the MIME nesting hides it, through a real Postfix.

The email package's parser recursed once per nesting level, so a body
nested about a thousand multipart levels deep (57 KB; Postfix's
mime_nesting_limit does not stop it) made the URI check a temperror and
the listed link never scored. Real SMTP into the module's private Postfix
(conftest `postfix`), ``trustmilter run`` as its milter with a URI list
whose zone the DNS test server serves, weighted as policy.yaml suggests
(3). The sender passes SPF, DKIM and DMARC, so the link is the only thing
against it: at the top it marks the message low trust and it is delivered;
a thousand levels down it is still found, and the depth itself is a
weakness, so the message is held.
"""

from __future__ import annotations

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

URI_ZONE = "dbl.example.test"
ZONE = GOOD_SENDER + f"""
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
; RFC 5782 §2.3: the link's registered domain under the list's zone
example.net.{URI_ZONE}.    300 IN A   127.0.1.2
""" + key_zone(rsa_key(1024), "sel", "example.com")
CLIENT = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
LINK = "http://www.evil-link.example.net/offer"


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess


@pytest.fixture(scope="module")
def rig(postfix: PostfixInstance, _dns_test_server: DnsTestServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("uribl")
    policy = write_policy(
        workdir / "policy.yaml", "mx.example.org", _dns_test_server.nameserver,
        dns={"cache_size": 0},
        checks={"uribl": {"lists": [{"zone": URI_ZONE, "name": "dbl", "weight": 3,
                                     "codes": {"127.0.1.2": "spam domain"}}]}},
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


def nested_message(depth: int) -> bytes:
    """Signed by example.com, its one text/plain part `depth` multipart levels down."""
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n'
        for level in range(depth)
    )
    closing = "".join(f"\r\n--n{level}--" for level in reversed(range(depth)))
    body = opening + f"Content-Type: text/plain\r\n\r\nBest offer: {LINK}\r\n" + closing + "\r\n"
    top, _, rest = body.partition("\r\n\r\n")
    raw = message(body=rest.encode(), extra_headers=("MIME-Version: 1.0", top),
                  message_id=f"<{uuid.uuid4().hex}@example.com>")
    return sign(raw, rsa_key(1024), "example.com")


def fate(rig: Rig, out: Outcome) -> tuple[str, dict[str, str]]:
    """hold or accept as Postfix saw it, and trustmilter's verdict line."""
    assert out.data is not None and out.data.code == 250, out
    match = re.search(r"queued as (\S+)", out.data.text)
    assert match, out.data
    queue_id = match.group(1)
    rig.postfix.wait_idle()
    held = queue_id in {entry["queue_id"] for entry in rig.postfix.hold_queue()}
    return ("hold" if held else "accept"), rig.daemon.wait_verdict(queue_id).fields


@pytest.mark.parametrize(
    ("depth", "expected_fate", "action"),
    [(0, "accept", "low-trust"), (10, "accept", "low-trust"), (1000, "hold", "quarantine")],
)
def test_a_listed_link_scores_however_deep(mta: Rig, depth: int, expected_fate: str,
                                           action: str) -> None:
    raw = nested_message(depth)
    if depth == 1000:
        assert len(raw) > 50_000  # the size the attack used; Postfix passes it
    out = send_one(mta.postfix.smtp_port, raw, **CLIENT)
    where, fields = fate(mta, out)
    assert (where, fields["action"], fields["uribl"]) == (expected_fate, action, "fail"), fields
    assert "uribl.listed" in fields["findings"]
    assert ("headers.mime_too_deep" in fields["findings"]) == (depth == 1000)
    assert "failed" not in mta.daemon.log_text()  # no "check uribl failed" traceback
