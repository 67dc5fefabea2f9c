"""The MTA side of one milter conversation, shaped like Postfix's.

`MilterClient.converse(message)` opens a connection to the milter,
negotiates (protocol version 6, offering every action and every protocol
step Postfix can skip), and plays one SMTP session: connect, HELO, MAIL
FROM, each RCPT TO, DATA, the headers, end of headers, the body in chunks
and end of message, with the macros Postfix sends by default at each
stage, then QUIT. It returns what the milter decided (`Outcome`).

The packets are encoded and decoded by the `miltertest` codec; the
conversation is driven here because it must honour what the milter
negotiated, as an MTA does: a step the milter asked to skip (SMFIP_NO*) is
not sent, and a step it asked not to answer (SMFIP_NR_*) is not waited
for (miltertest's own helpers wait for a reply per header, which would
hang against a milter that negotiated SMFIP_NR_HDR). Packets that need no
reply are sent together with the next one that does, in one write.

Headers go out as Postfix sends them (milter8.c): a folded header is one
value with its lines joined by a bare newline, and the one space after
the colon is dropped unless the milter asked for SMFIP_HDR_LEADSPC. The
body goes out with CRLF line ends in chunks of at most 65535 bytes.

Limits: one transaction per connection; messages must be ASCII (the codec
sends text); no TLS or AUTH macros. Errors: `MilterProtocolError` for a
reply the protocol does not allow at that point, OSError (socket.timeout
included) for the connection; every socket operation has a timeout.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from miltertest import codec
from miltertest import constants as c
from trustmilter.bench.corpus import BenchMessage
from trustmilter.config.socket import SocketSpec

MILTER_VERSION = 6
# Postfix offers these actions and these skippable steps with milter_protocol = 6.
MTA_ACTIONS = c.SMFI_V6_ACTS
MTA_PROTOCOL = c.SMFI_V6_PROT
DAEMON_NAME = "mx.bench.example.org"
DAEMON_ADDR = "192.0.2.25"
MTA_VERSION = "Postfix 3.7.11"

# Replies that end a stage for good (anything but "continue with the next step").
_FINAL = frozenset({c.SMFIR_ACCEPT, c.SMFIR_REJECT, c.SMFIR_TEMPFAIL, c.SMFIR_REPLYCODE,
                    c.SMFIR_DISCARD, c.SMFIR_SHUTDOWN, c.SMFIR_CONN_FAIL})
# What may follow end of message before its disposition: modifications and quarantine
# (which, as milter8.c notes, is not a disposition of its own).
_EOM_ACTIONS = frozenset({c.SMFIR_ADDHEADER, c.SMFIR_INSHEADER, c.SMFIR_CHGHEADER,
                          c.SMFIR_ADDRCPT, c.SMFIR_DELRCPT, c.SMFIR_ADDRCPT_PAR,
                          c.SMFIR_CHGFROM, c.SMFIR_REPLBODY, c.SMFIR_QUARANTINE})
_NAMES = {
    c.SMFIR_ACCEPT: "accept", c.SMFIR_CONTINUE: "accept", c.SMFIR_DISCARD: "discard",
    c.SMFIR_REJECT: "reject", c.SMFIR_TEMPFAIL: "tempfail",
    c.SMFIR_SHUTDOWN: "tempfail", c.SMFIR_CONN_FAIL: "tempfail",
}


class MilterProtocolError(Exception):
    """The milter said something the protocol does not allow at that point."""


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the milter asked for in its SMFIC_OPTNEG reply."""

    version: int
    actions: int
    protocol: int
    # Macro lists set with smfi_setsymlist: (stage index, "macro names").
    symlists: tuple[tuple[int, str], ...] = ()

    def has(self, bit: int) -> bool:
        return bool(self.protocol & bit)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The milter's decision on one message."""

    action: str  # accept, reject, tempfail, discard
    stage: str  # where it was decided: connect, helo, mail, rcpt, ..., eom
    reply: str = ""  # "550 5.7.1 text" when the milter set one (SMFIR_REPLYCODE)
    quarantine: str = ""  # the reason, when the milter asked to quarantine
    # End-of-message modifications: (reply code, fields) in the order received.
    modifications: tuple[tuple[str, dict[str, Any]], ...] = ()
    # Every reply the milter sent, in order, as (stage, reply code, fields): the
    # CONTINUEs and each recipient's answer too, which `action` sums up
    # (tools/compare_commits.py compares them between two commits).
    replies: tuple[tuple[str, str, dict[str, Any]], ...] = ()

    def headers(self, name: str) -> list[str]:
        """Values of headers named `name` that the milter added or inserted."""
        return [
            fields["value"] for cmd, fields in self.modifications
            if cmd in (c.SMFIR_ADDHEADER, c.SMFIR_INSHEADER)
            and fields["name"].lower() == name.lower()
        ]


@dataclass(frozen=True, slots=True)
class _Step:
    """Bytes to send in one write, and whether a reply is then awaited."""

    stage: str
    data: bytes
    reply: bool


@dataclass(slots=True)
class _Script:
    steps: list[_Step] = field(default_factory=list)
    pending: bytearray = field(default_factory=bytearray)

    def add(self, stage: str, packets: bytes, reply: bool) -> None:
        self.pending += packets
        if reply:
            self.steps.append(_Step(stage, bytes(self.pending), True))
            self.pending.clear()


def _macros(stage_cmd: str, pairs: list[tuple[str, str]]) -> bytes:
    """One SMFIC_MACRO packet for the command `stage_cmd`, or nothing."""
    if not pairs:
        return b""
    packet: bytes = codec.encode_msg(c.SMFIC_MACRO, cmdcode=stage_cmd,
                                     nameval=[x for pair in pairs for x in pair])
    return packet


def split_message(raw: bytes, leading_space: bool) -> tuple[list[tuple[str, str]], str]:
    """(headers as the MTA sends them, body text) of a CRLF message."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, body = raw, b""
    headers: list[tuple[str, str]] = []
    for line in head.decode("ascii").split("\r\n"):
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line)
            continue
        name, _, value = line.partition(":")
        if not leading_space and value.startswith(" "):
            value = value[1:]  # Sendmail and Postfix eat one space (not a tab) after ':'
        headers.append((name.rstrip(" \t"), value))
    return headers, body.decode("ascii")


def build_script(message: BenchMessage, negotiated: Negotiated, queue_id: str) -> list[_Step]:
    """Every write of the conversation for `message`, after negotiation."""
    n = negotiated
    script = _Script()
    family = c.SMFIA_INET6 if ":" in message.client_ip else c.SMFIA_INET
    name = message.client_name if message.client_name != "unknown" else f"[{message.client_ip}]"
    if not n.has(c.SMFIP_NOCONNECT):
        macros = [("j", DAEMON_NAME), ("{daemon_name}", DAEMON_NAME),
                  ("{daemon_addr}", DAEMON_ADDR), ("v", MTA_VERSION),
                  ("_", f"{message.client_name} [{message.client_ip}]"),
                  ("{client_addr}", message.client_ip), ("{client_name}", message.client_name)]
        script.add("connect", _macros(c.SMFIC_CONNECT, macros) + codec.encode_msg(
            c.SMFIC_CONNECT, hostname=name, family=family, port=25,
            address=message.client_ip), not n.has(c.SMFIP_NR_CONN))
    if not n.has(c.SMFIP_NOHELO):
        script.add("helo", codec.encode_msg(c.SMFIC_HELO, helo=message.helo),
                   not n.has(c.SMFIP_NR_HELO))
    if not n.has(c.SMFIP_NOMAIL):
        domain = message.mail_from.rpartition("@")[2]
        macros = [("{mail_addr}", message.mail_from), ("{mail_host}", domain),
                  ("{mail_mailer}", "smtp")]
        args = [f"<{message.mail_from}>", f"SIZE={len(message.raw)}"]
        script.add("mail", _macros(c.SMFIC_MAIL, macros)
                   + codec.encode_msg(c.SMFIC_MAIL, args=args), not n.has(c.SMFIP_NR_MAIL))
    if not n.has(c.SMFIP_NORCPT):
        for rcpt in message.rcpts:
            macros = [("{rcpt_addr}", rcpt), ("{rcpt_host}", rcpt.rpartition("@")[2]),
                      ("{rcpt_mailer}", "smtp")]
            script.add("rcpt", _macros(c.SMFIC_RCPT, macros)
                       + codec.encode_msg(c.SMFIC_RCPT, args=[f"<{rcpt}>"]),
                       not n.has(c.SMFIP_NR_RCPT))
    queue = [("i", queue_id)]
    if not n.has(c.SMFIP_NODATA):
        script.add("data", _macros(c.SMFIC_DATA, queue) + codec.encode_msg(c.SMFIC_DATA),
                   not n.has(c.SMFIP_NR_DATA))
    headers, body = split_message(message.raw, n.has(c.SMFIP_HDR_LEADSPC))
    if not n.has(c.SMFIP_NOHDRS):
        for hname, hvalue in headers:
            script.add("header", codec.encode_msg(c.SMFIC_HEADER, name=hname, value=hvalue),
                       not n.has(c.SMFIP_NR_HDR))
    if not n.has(c.SMFIP_NOEOH):
        script.add("eoh", _macros(c.SMFIC_EOH, queue) + codec.encode_msg(c.SMFIC_EOH),
                   not n.has(c.SMFIP_NR_EOH))
    if not n.has(c.SMFIP_NOBODY):
        for start in range(0, len(body), c.MILTER_CHUNK_SIZE):
            chunk = body[start : start + c.MILTER_CHUNK_SIZE]
            script.add("body", codec.encode_msg(c.SMFIC_BODY, buf=chunk),
                       not n.has(c.SMFIP_NR_BODY))
    script.add("eom", _macros(c.SMFIC_BODYEOB, queue) + codec.encode_msg(c.SMFIC_BODYEOB),
               True)
    return script.steps


class _Connection:
    """A socket that yields whole milter packets; every read has the socket's timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            data = self.sock.recv(65536)
            if not data:
                raise MilterProtocolError("the milter closed the connection")
            self._buffer += data

    def frame(self) -> tuple[str, bytes]:
        """The next packet's command and its data, progress reports skipped."""
        while True:
            self._fill(5)
            length, _ = codec.decode_u32(self._buffer)
            self._fill(4 + length)
            cmd, _ = codec.decode_chr(self._buffer[4:5])
            payload, self._buffer = self._buffer[5 : 4 + length], self._buffer[4 + length :]
            if cmd != c.SMFIR_PROGRESS:
                return cmd, payload

    def reply(self) -> tuple[str, dict[str, Any]]:
        """The next packet, decoded by the miltertest codec."""
        cmd, payload = self.frame()
        packet = codec.encode_u32(len(payload) + 1) + codec.encode_chr(cmd) + payload
        try:
            decoded, fields, _rest = codec.decode_msg(packet)
        except codec.MilterProtoError as error:
            raise MilterProtocolError(f"undecodable reply {cmd!r}: {error}") from None
        return decoded, fields


def _decode_optneg(payload: bytes) -> Negotiated:
    """The milter's SMFIC_OPTNEG, with any macro lists libmilter appends after it."""
    try:
        version, rest = codec.decode_u32(payload)
        actions, rest = codec.decode_u32(rest)
        protocol, rest = codec.decode_u32(rest)
        symlists = []
        while rest:
            where, rest = codec.decode_u32(rest)
            names, rest = codec.decode_str(rest)
            symlists.append((where, names))
    except codec.MilterProtoError as error:
        raise MilterProtocolError(f"malformed option negotiation: {error}") from None
    return Negotiated(version, actions, protocol, tuple(symlists))


def _final(cmd: str, fields: dict[str, Any], stage: str,
           replies: list[tuple[str, str, dict[str, Any]]]) -> Outcome:
    if cmd == c.SMFIR_REPLYCODE:
        code = fields["smtpcode"]
        reply = f"{code}{fields['space']}{fields['text']}".rstrip()
        return Outcome("tempfail" if code.startswith("4") else "reject", stage, reply,
                       replies=tuple(replies))
    return Outcome(_NAMES[cmd], stage, replies=tuple(replies))


class MilterClient:
    """Connects to one milter socket and plays conversations with it."""

    def __init__(self, spec: SocketSpec, timeout: float = 30.0) -> None:
        self.spec = spec
        self.timeout = timeout

    def _open(self) -> socket.socket:
        if self.spec.family == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self.spec.path
        else:
            family = socket.AF_INET6 if self.spec.family == "inet6" else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            # Postfix leaves Nagle on as well, but we write each step in one
            # piece, so turning it off only removes our own delays.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            address = (self.spec.host.strip("[]"), self.spec.port)
        sock.settimeout(self.timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock

    def _negotiate(self, conn: _Connection) -> Negotiated:
        conn.sock.sendall(codec.encode_optneg(MTA_ACTIONS, MTA_PROTOCOL))
        cmd, payload = conn.frame()
        if cmd != c.SMFIC_OPTNEG:
            raise MilterProtocolError(f"expected option negotiation, got {cmd!r}")
        negotiated = _decode_optneg(payload)
        if negotiated.actions & ~MTA_ACTIONS or negotiated.protocol & ~MTA_PROTOCOL:
            raise MilterProtocolError(
                f"milter asked for actions 0x{negotiated.actions:x} / protocol "
                f"0x{negotiated.protocol:x} beyond what was offered")
        return negotiated

    def negotiate(self) -> Negotiated:
        """Only the option negotiation (to see what the milter asks for), then QUIT."""
        with self._open() as sock:
            conn = _Connection(sock)
            negotiated = self._negotiate(conn)
            sock.sendall(codec.encode_msg(c.SMFIC_QUIT))
            return negotiated

    def converse(self, message: BenchMessage, queue_id: str = "4BENCH0001") -> Outcome:
        """One whole SMTP session for `message`; the milter's decision."""
        with self._open() as sock:
            conn = _Connection(sock)
            negotiated = self._negotiate(conn)
            outcome = self._play(conn, build_script(message, negotiated, queue_id))
            if outcome.stage != "eom":
                # The transaction ended early: Postfix tells the milter (milter8_abort).
                sock.sendall(codec.encode_msg(c.SMFIC_ABORT))
            sock.sendall(codec.encode_msg(c.SMFIC_QUIT))
            return outcome

    def _play(self, conn: _Connection, steps: list[_Step]) -> Outcome:
        rcpts_total = sum(1 for step in steps if step.stage == "rcpt")
        rcpts_refused: list[Outcome] = []
        replies: list[tuple[str, str, dict[str, Any]]] = []
        skip_body = False
        for step in steps:
            if skip_body and step.stage == "body":
                continue
            conn.sock.sendall(step.data)
            if step.stage == "eom":
                return self._end_of_message(conn, replies)
            cmd, fields = conn.reply()
            replies.append((step.stage, cmd, fields))
            if cmd == c.SMFIR_CONTINUE:
                continue
            if cmd == c.SMFIR_SKIP and step.stage == "body":
                skip_body = True  # SMFIP_SKIP: no more body chunks, go to end of message
                continue
            if cmd not in _FINAL:
                raise MilterProtocolError(f"reply {cmd!r} not allowed after {step.stage}")
            outcome = _final(cmd, fields, step.stage, replies)
            if step.stage == "rcpt" and outcome.action in ("reject", "tempfail"):
                # Only this recipient is refused; the transaction goes on if any is left.
                rcpts_refused.append(outcome)
                if len(rcpts_refused) == rcpts_total:
                    first = rcpts_refused[0]
                    return Outcome(first.action, first.stage, first.reply,
                                   replies=tuple(replies))
                continue
            return outcome
        raise MilterProtocolError("conversation ended without end of message")

    def _end_of_message(self, conn: _Connection,
                        replies: list[tuple[str, str, dict[str, Any]]]) -> Outcome:
        modifications: list[tuple[str, dict[str, Any]]] = []
        quarantine = ""
        while True:
            cmd, fields = conn.reply()
            replies.append(("eom", cmd, fields))
            if cmd in _EOM_ACTIONS:
                modifications.append((cmd, fields))
                if cmd == c.SMFIR_QUARANTINE:
                    quarantine = fields["reason"] or "quarantined"
                continue
            if cmd not in _FINAL and cmd != c.SMFIR_CONTINUE:
                raise MilterProtocolError(f"reply {cmd!r} not allowed at end of message")
            outcome = _final(cmd, fields, "eom", replies)
            return Outcome(outcome.action, "eom", outcome.reply, quarantine,
                           tuple(modifications), tuple(replies))
