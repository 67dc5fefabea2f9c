"""8-bit input through the real daemon, over the raw milter protocol.

pymilter's C layer decodes the HELO name and header field names itself,
strictly; for bytes that are not UTF-8 it never called trustmilter, and its
default answer made libmilter abandon the message: end of message went
unanswered (the MTA waited for its timeout). Postfix never passes an 8-bit
header name, but Sendmail might, so the packets here are written by hand
(the bench client's codec sends text only). Each conversation must end in a
reply, a verdict line, and no traceback in the daemon's log.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from miltertest import codec
from miltertest import constants as c
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer

ZONE = """
example.net.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.net.               300 IN A   192.0.2.10
mail.example.net.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.net.
"""
MESSAGE_HEADERS = [(b"From", b" <a@example.net>"), (b"To", b" <b@example.org>"),
                   (b"Subject", b" test"), (b"Message-ID", b" <1@example.net>")]


def packet(command: str, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload) + 1) + command.encode() + payload


def strings(*values: bytes) -> bytes:
    return b"".join(value + b"\0" for value in values)


class RawMta:
    """One milter connection, packets as the MTA would send them, bytes unrestricted."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buffer = b""
        self.sock.sendall(codec.encode_optneg(c.SMFI_V6_ACTS, c.SMFI_V6_PROT))
        command, payload = self.frame()
        assert command == c.SMFIC_OPTNEG
        self.protocol = struct.unpack("!III", payload[:12])[2]

    def frame(self) -> tuple[str, bytes]:
        while True:
            while len(self.buffer) < 4 or len(self.buffer) < 4 + struct.unpack(
                    "!I", self.buffer[:4])[0]:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("the milter closed the connection")
                self.buffer += data
            length = struct.unpack("!I", self.buffer[:4])[0]
            command, payload = chr(self.buffer[4]), self.buffer[5:4 + length]
            self.buffer = self.buffer[4 + length:]
            if command != c.SMFIR_PROGRESS:
                return command, payload

    def send(self, data: bytes, no_reply_bit: int = 0) -> tuple[str, bytes] | None:
        """Send; the reply unless the milter negotiated not to give one."""
        self.sock.sendall(data)
        if no_reply_bit and self.protocol & no_reply_bit:
            return None
        return self.frame()

    def end_of_message(self, queue_id: str) -> tuple[str, bytes]:
        """The reply that ends the message, past any header edits."""
        self.sock.sendall(packet(c.SMFIC_MACRO, b"E" + strings(b"i", queue_id.encode()))
                          + packet(c.SMFIC_BODYEOB))
        while True:
            command, payload = self.frame()
            if command not in (c.SMFIR_INSHEADER, c.SMFIR_ADDHEADER, c.SMFIR_CHGHEADER,
                               c.SMFIR_QUARANTINE):
                return command, payload

    def close(self) -> None:
        self.sock.sendall(packet(c.SMFIC_QUIT))
        self.sock.close()


@pytest.fixture(scope="module")
def daemon(_dns_test_server: DnsTestServer, tmp_path_factory) -> Iterator[DaemonProcess]:
    work: Path = tmp_path_factory.mktemp("trustmilter-8bit")
    policy = write_policy(work / "policy.yaml", "mx.example.org", _dns_test_server.nameserver)
    running = DaemonProcess.start(policy, work / "trustmilter.log")
    try:
        yield running
    finally:
        running.stop()


def converse(daemon: DaemonProcess, queue_id: str, helo: bytes, mail_from: bytes, rcpt: bytes,
             headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes]:
    """A whole transaction; the end-of-message reply."""
    mta = RawMta(daemon.port)
    try:
        mta.send(packet(c.SMFIC_CONNECT, strings(b"mail.example.net") + b"4"
                        + struct.pack("!H", 25) + strings(b"192.0.2.10")), c.SMFIP_NR_CONN)
        mta.send(packet(c.SMFIC_HELO, strings(helo)), c.SMFIP_NR_HELO)
        assert mta.send(packet(c.SMFIC_MAIL, strings(b"<" + mail_from + b">"))) == (
            c.SMFIR_CONTINUE, b"")
        assert mta.send(packet(c.SMFIC_RCPT, strings(b"<" + rcpt + b">"))) == (
            c.SMFIR_CONTINUE, b"")
        for name, value in headers:
            mta.send(packet(c.SMFIC_HEADER, strings(name, value)), c.SMFIP_NR_HDR)
        mta.send(packet(c.SMFIC_EOH), c.SMFIP_NR_EOH)
        mta.send(packet(c.SMFIC_BODY, b"hello\r\n"), c.SMFIP_NR_BODY)
        return mta.end_of_message(queue_id)
    finally:
        mta.close()


def test_an_8bit_header_name_gets_on_error_at_end_of_message(daemon, dns_server) -> None:
    dns_server.load(ZONE)
    headers = [*MESSAGE_HEADERS, (b"X-\xc3(", b" value")]
    command, payload = converse(daemon, "4RAWHDR", b"mail.example.net", b"a@example.net",
                                b"b@example.org", headers)
    assert command == c.SMFIR_REPLYCODE and payload.startswith(b"451 4.3.0"), (command, payload)
    verdict = daemon.wait_verdict("4RAWHDR")
    assert verdict.fields["action"] == "tempfail" and verdict.fields["stage"] == "eom"
    log = daemon.log_text()
    assert "header field name that is not UTF-8" in log and "b'X-\\xc3('" in log
    assert "Traceback" not in log, daemon.log_tail()


@pytest.mark.parametrize(
    ("queue_id", "helo", "mail_from", "rcpt", "expect"),
    [
        ("4RAWHELO", b"h\xff\xfe.example.net", b"a@example.net", b"b@example.org",
         {"helo": "h\\xff\\xfe.example.net"}),
        ("4RAWMAIL", b"mail.example.net", b"\xff\xfe@example.net", b"b@example.org",
         {"from": "<\\xff\\xfe@example.net>"}),
        ("4RAWRCPT", b"mail.example.net", b"a@example.net", b"\xff@example.org",
         {"rcpt": "<\\xff@example.org>"}),
    ],
    ids=["helo", "mail-from", "rcpt"],
)
def test_8bit_envelope_and_helo_are_judged_with_their_bytes_escaped(
    daemon, dns_server, queue_id, helo, mail_from, rcpt, expect
) -> None:
    dns_server.load(ZONE)
    headers = [*MESSAGE_HEADERS, (b"X-Note", b" caf\xe9")]  # an 8-bit value: bytes throughout
    before = len(daemon.log_text())
    command, _ = converse(daemon, queue_id, helo, mail_from, rcpt, headers)
    assert command in (c.SMFIR_CONTINUE, c.SMFIR_ACCEPT, c.SMFIR_REPLYCODE), command
    verdict = daemon.wait_verdict(queue_id)
    for key, value in expect.items():
        assert verdict.fields[key] == value, verdict.fields
    assert verdict.fields.get("reputation") != "temperror", verdict.fields
    log = daemon.log_text()[before:]
    assert "Traceback" not in log and "Logging error" not in log, log
