"""The pymilter adapter, driven in-process by pymilter's TestCtx (no MTA).

A handful of tests for what only the adapter does: the protocol it
negotiates, header edits and replies at end of message, several messages
on one connection, and on_error when a callback fails. The real MTA
conversation is tested through Postfix in test_postfix_*.py.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx

from keys import key_zone, message, rsa_key, sign
from trustmilter.authresults import parse_header_value
from trustmilter.config.load import parse_settings
from trustmilter.daemon.adapter import TrustMilter
from trustmilter.daemon.apps import AppHolder, build_app
from trustmilter.daemon.metrics import NullMetrics
from trustmilter.daemon.session import SmtpSession
from trustmilter.model import Message
from zones import GOOD_SENDER

ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
$NXDOMAIN nowhere.example.net.
"""


class RecordingCtx(MilterTestCtx):
    """TestCtx that also records quarantine and the position of inserted headers.

    TestCtx closes the connection on any answer but CONTINUE, NOREPLY
    included, so this MTA does not offer no-reply for connect and HELO.
    """

    def _negotiate(self):
        rc = super()._negotiate()
        no_reply = Milter.P_NR_CONN | Milter.P_NR_HELO
        self._protocol &= ~no_reply
        self._priv._protocol &= ~no_reply
        return rc

    def __init__(self) -> None:
        super().__init__()
        self.quarantined: str | None = None
        self.inserted: list[tuple[int, str, str]] = []
        self.removed: list[tuple[str, int]] = []

    def quarantine(self, reason):
        self.quarantined = reason

    def addheader(self, field, value, idx):
        self.inserted.append((idx, field, value))

    def chgheader(self, field, idx, value):
        self.removed.append((field, idx))


@pytest.fixture
def holder(dns_server):
    policy = parse_settings(
        f"authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n",
        "test-policy.yaml",
    )
    with ThreadPoolExecutor(8) as pool:
        yield AppHolder(build_app(policy, pool), None, pool)


def connect(holder, ip="192.0.2.10", helo="mail.example.com") -> RecordingCtx:
    ctx = RecordingCtx()
    metrics = NullMetrics()
    Milter.factory = lambda: TrustMilter(SmtpSession(holder, metrics), metrics)
    ctx._connect(host="mail.example.com", helo=helo, ip=ip)
    return ctx


def deliver(ctx: RecordingCtx, raw: bytes, sender="<alice@example.com>", rcpt="<support@example.org>"):
    """MAIL, RCPT, headers, body, EOM as libmilter calls them; the first refusal ends it."""
    for step in (lambda: ctx._envfrom(sender), lambda: ctx._envrcpt(rcpt)):
        rc = step()
        if rc not in (Milter.CONTINUE, Milter.NOREPLY):
            return rc
    parsed = Message(raw)
    for name, value in parsed.headers:
        ctx._header(name, " " + value)
    ctx._eoh()
    ctx._priv.body(parsed.body)
    return ctx._eom()


def test_negotiates_only_what_it_uses(holder):
    ctx = MilterTestCtx()
    metrics = NullMetrics()
    Milter.factory = lambda: TrustMilter(SmtpSession(holder, metrics), metrics)
    ctx._negotiate()
    protocol = ctx._protocol
    for step in (Milter.P_NR_CONN, Milter.P_NR_HELO, Milter.P_NR_HDR, Milter.P_NR_EOH,
                 Milter.P_NR_BODY, Milter.P_NODATA, Milter.P_NOUNKNOWN, Milter.P_HDR_LEADSPC):
        assert protocol & step, hex(step)
    assert not protocol & Milter.P_NOMAIL and not protocol & Milter.P_NORCPT


def test_accepted_mail_gets_authentication_results_on_top(holder, dns_server):
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    ctx = connect(holder)
    rc = deliver(ctx, sign(message(), rsa_key(1024), "example.com"))
    assert rc == Milter.CONTINUE
    idx, name, value = ctx.inserted[0]
    assert (idx, name) == (0, "Authentication-Results")
    results = {(r.method, r.result) for r in parse_header_value(value).results}
    assert {("iprev", "pass"), ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")} <= results


def test_nonexistent_sender_is_refused_at_rcpt_with_the_policy_reply(holder, dns_server):
    dns_server.load(ZONE)
    ctx = connect(holder)
    rc = deliver(ctx, message(), sender="<x@nowhere.example.net>")
    assert rc == Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.1.8")


def test_forged_authentication_results_are_deleted(holder, dns_server):
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    raw = (b"Authentication-Results: other.example.net; spf=pass smtp.mailfrom=a@example.com\r\n"
           b"Authentication-Results: mx.example.org; dmarc=pass header.from=example.com\r\n"
           + sign(message(), rsa_key(1024), "example.com"))
    ctx = connect(holder)
    assert deliver(ctx, raw) == Milter.CONTINUE
    assert ctx.removed == [("Authentication-Results", 2)]


def test_an_exception_in_a_callback_is_answered_with_on_error(holder, dns_server, monkeypatch, caplog):
    """Never lose mail: a bug answers 451 4.3.0 (sender retries) and logs one line."""
    dns_server.load(ZONE)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(SmtpSession, "mail_from", broken)
    ctx = connect(holder)
    with caplog.at_level(logging.ERROR, logger="trustmilter"):
        rc = ctx._envfrom("<alice@example.com>")
    assert rc == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.0")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "mail callback failed" in errors[0].getMessage()


def test_an_exception_in_a_no_reply_callback_is_answered_at_end_of_message(holder, dns_server, monkeypatch, caplog):
    dns_server.load(ZONE)

    def broken(*args, **kwargs):
        raise ValueError("header bug")

    monkeypatch.setattr(SmtpSession, "header", broken)
    ctx = connect(holder)
    with caplog.at_level(logging.ERROR, logger="trustmilter"):
        rc = deliver(ctx, message())
    assert rc == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.0")
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) >= 1


def test_one_verdict_line_per_message_with_every_field(holder, dns_server, caplog):
    from trustmilter.daemon.verdictlog import LEADING_KEYS, TRAILING_KEYS, parse_verdict_line

    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    ctx = connect(holder)
    ctx._setsymval("i", "4BxYz0Qm1z9t1")
    with caplog.at_level(logging.INFO, logger="trustmilter.verdict"):
        deliver(ctx, sign(message(), rsa_key(1024), "example.com"))
    lines = [r.getMessage() for r in caplog.records if r.name == "trustmilter.verdict"]
    assert len(lines) == 1
    queue_id, fields = parse_verdict_line(lines[0])
    assert queue_id == "4BxYz0Qm1z9t1"
    for key in (*LEADING_KEYS, *TRAILING_KEYS, "iprev", "spf.mailfrom", "dkim", "dmarc"):
        assert key in fields, key
    assert fields["action"] == "accept" and fields["from"] == "<alice@example.com>"
    assert fields["rcpt"] == "<support@example.org>" and fields["dmarc"] == "pass"
    assert fields["client"] == "192.0.2.10" and fields["stage"] == "eom"


def holder_with(dns_server, pool, extra: str) -> AppHolder:
    policy = parse_settings(
        f"authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 2, lifetime: 5}}\n" + extra,
        "test-policy.yaml",
    )
    return AppHolder(build_app(policy, pool), None, pool)


def test_a_message_over_the_size_limit_is_refused_552(dns_server):
    """Bodies past the limit are not kept; end of message answers 552 5.3.4 (RFC 3463)."""
    dns_server.load(ZONE)
    with ThreadPoolExecutor(4) as pool:
        holder = holder_with(dns_server, pool, "milter: {max_message_size: 2000}\n")
        ctx = connect(holder)
        rc = deliver(ctx, message(body=b"x" * 5000 + b"\r\n"))
        assert rc == Milter.REJECT and ctx._reply[:2] == ("552", "5.3.4")
        ctx = connect(holder)  # a declared SIZE= over the limit is refused at once
        assert ctx._envfrom("<alice@example.com>", "SIZE=9000") == Milter.REJECT
        assert ctx._reply[:2] == ("552", "5.3.4")


def test_a_failed_connect_callback_is_answered_with_on_error_not_trusted(holder, dns_server, monkeypatch, caplog):
    """Without the client's address the client must not count as trusted (fail closed)."""
    dns_server.load(ZONE)

    def broken(*args, **kwargs):
        raise RuntimeError("connect bug")

    monkeypatch.setattr(SmtpSession, "connect", broken)
    with caplog.at_level(logging.ERROR, logger="trustmilter"):
        ctx = connect(holder)
        rc = ctx._envfrom("<alice@example.com>")
    assert rc == Milter.TEMPFAIL and ctx._reply[:2] == ("451", "4.3.0")


def deliver_body(ctx: RecordingCtx) -> int:
    parsed = Message(message())
    for name, value in parsed.headers:
        ctx._header(name, " " + value)
    ctx._eoh()
    ctx._priv.body(parsed.body)
    return ctx._eom()


# ---- input that is not UTF-8 ---------------------------------------------------


class BytesCtx(RecordingCtx):
    """TestCtx that calls the adapter as daemon/callbacks.py registers it: the
    envelope as bytes (libmilter's), header values as bytes. For the HELO name
    and header names pymilter's C layer fails before any Python runs; the hook
    in callbacks.py then passes the raw bytes to `undecodable`, as here."""

    def _helo(self, helo):
        if isinstance(helo, str):
            return super()._helo(helo)
        try:
            helo.decode("utf-8")  # what Py_BuildValue("s") does
        except UnicodeDecodeError as error:
            self._priv.undecodable(error.object)
            return Milter.CONTINUE
        return super()._helo(helo.decode())

    def _envfrom(self, *args):
        self._stage = Milter.M_ENVFROM  # TestCtx's getsymval needs it
        try:
            return self._priv.envfrom_raw(*(a if isinstance(a, bytes) else a.encode()
                                            for a in args))
        finally:
            self._stage = None

    def _envrcpt(self, rcpt):
        self._stage = Milter.M_ENVRCPT
        try:
            return self._priv.envrcpt_raw(rcpt if isinstance(rcpt, bytes) else rcpt.encode())
        finally:
            self._stage = None

    def header_bytes(self, name: bytes, value: bytes):
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError as error:
            self._priv.undecodable(error.object)
            return Milter.CONTINUE
        return self._priv.header(text, value)


def connect_bytes(holder, helo: bytes) -> BytesCtx:
    ctx = BytesCtx()
    metrics = NullMetrics()
    Milter.factory = lambda: TrustMilter(SmtpSession(holder, metrics), metrics)
    ctx._connect(host="mail.example.com", helo=helo, ip="192.0.2.10")
    return ctx


def deliver_bytes(ctx: BytesCtx, sender: bytes, rcpt: bytes, headers: list[tuple[bytes, bytes]]):
    for rc in (ctx._envfrom(sender), ctx._envrcpt(rcpt)):
        if rc not in (Milter.CONTINUE, Milter.NOREPLY):
            return rc
    for name, value in headers:
        ctx.header_bytes(name, value)
    ctx._eoh()
    ctx._priv.body(b"hello\r\n")
    return ctx._eom()


HEADERS = [(b"From", b" <alice@example.com>"), (b"To", b" <support@example.org>"),
           (b"Subject", b" hi"), (b"X-Note", b" caf\xe9")]


def one_verdict(caplog) -> dict[str, str]:
    from trustmilter.daemon.verdictlog import parse_verdict_line

    lines = [r.getMessage() for r in caplog.records if r.name == "trustmilter.verdict"]
    assert len(lines) == 1, lines
    lines[0].encode("utf-8")  # what SysLogHandler does with it
    return parse_verdict_line(lines[0])[1]


@pytest.mark.parametrize(
    ("helo", "sender", "rcpt", "field", "written"),
    [
        (b"h\xff.example.com", b"<alice@example.com>", b"<support@example.org>",
         "helo", "h\\xff.example.com"),
        (b"mail.example.com", b"<\xff\xfe@example.com>", b"<support@example.org>",
         "from", "<\\xff\\xfe@example.com>"),
        (b"mail.example.com", b"<alice@example.com>", b"<\xe9t\xe9@example.org>",
         "rcpt", "<\\xe9t\\xe9@example.org>"),
    ],
    ids=["helo", "mail-from", "rcpt"],
)
def test_8bit_helo_and_envelope_are_judged_with_the_bytes_escaped(
    holder, dns_server, caplog, helo, sender, rcpt, field, written
):
    dns_server.load(ZONE)
    ctx = connect_bytes(holder, helo)
    with caplog.at_level(logging.INFO, logger="trustmilter"):
        rc = deliver_bytes(ctx, sender, rcpt, HEADERS)
    assert rc in (Milter.CONTINUE, Milter.REJECT, Milter.TEMPFAIL)
    fields = one_verdict(caplog)
    assert fields[field] == written and fields["stage"] in ("rcpt", "eom")
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


def test_an_8bit_header_name_is_answered_on_error_with_a_verdict_line(holder, dns_server, caplog):
    dns_server.load(ZONE)
    ctx = connect_bytes(holder, b"mail.example.com")
    ctx._setsymval("i", "4HDR8BIT")
    with caplog.at_level(logging.INFO, logger="trustmilter"):
        rc = deliver_bytes(ctx, b"<alice@example.com>", b"<support@example.org>",
                           [*HEADERS, (b"X-\xc3(", b" v")])
    assert rc == Milter.TEMPFAIL and ctx._reply[:2] == ("451", "4.3.0")
    fields = one_verdict(caplog)
    assert fields["action"] == "tempfail" and fields["stage"] == "eom"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "header field name that is not UTF-8" in warnings[0]
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    # The next message on the connection is judged afresh.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trustmilter"):
        deliver_bytes(ctx, b"<alice@example.com>", b"<support@example.org>", HEADERS)
    assert one_verdict(caplog)["action"] != "tempfail"
