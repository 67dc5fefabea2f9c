"""Replies to our own mail and bounces carrying our token (checks/replies.py), and
the shipped rules around them: reply.ours lifts the bulk rule only, an automatic
reply to our mail is held at once, a forged reply gets nothing."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import make_ctx
from trustmilter.checks import replies
from trustmilter.checks.replies import ReplyCheck, returned_headers
from trustmilter.config.errors import InvalidField
from trustmilter.mail.token import KeyFileError, make_token, message_digest, sender_digest
from trustmilter.model import Message
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.state.base import SentMessage, StateError
from trustmilter.state.effects import RememberSent
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action

NOW = 1_790_000_000.0
DAY = 86400.0
KEY = b"k" * 32
OURS = "notice.4711@mx.example.org"
DATE = "Thu, 21 Sep 2026 10:00:00 +0000"
AGENT = "support@example.org"


class NoDns:
    def query(self, name: str, rdtype: str) -> None:
        raise AssertionError(f"the reply check asked DNS for {name} {rdtype}")


class CountingStore(MemoryStore):
    """Counts the digests a check asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        self.asked.extend(digests)
        return super().sent_messages(digests, now)


class DownStore(MemoryStore):
    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        raise StateError("redis 127.0.0.1:6379: connection refused")


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "token.key"
    path.write_bytes(KEY + b"\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def config(key_file: str) -> replies.Config:
    return replies.Config(key_file=key_file)


@pytest.fixture
def store() -> CountingStore:
    """A store that remembers one notification we sent, as the outbound check would."""
    store = CountingStore()
    RememberSent(SentMessage(message_digest(KEY, OURS), sender_digest(KEY, AGENT), NOW - DAY,
                             NOW + 89 * DAY), 100).apply(store)
    return store


def mail(*headers: str, body: bytes = b"Thanks, that solved it.\r\n") -> bytes:
    top = ("From: Carol <carol@example.com>", f"To: {AGENT}", "Subject: Re: Your ticket",
           "Date: Thu, 21 Sep 2026 12:00:00 +0000", "Message-ID: <r1@example.com>", *headers)
    return ("\r\n".join(top) + "\r\n\r\n").encode() + body


def run(config: replies.Config, raw: bytes, state: MemoryStore | None = None,
        mail_from: str = "carol@example.com", rcpt: str = AGENT) -> CheckResult:
    ctx = make_ctx(NoDns(), ip="192.0.2.10", mail_from=mail_from, rcpt_to=(rcpt,), message=raw)
    [result] = ReplyCheck(config).run(replace(ctx, state=state, clock=lambda: NOW))
    assert result.check == "reply"
    return result


def names(result: CheckResult) -> list[str]:
    return [f.name for f in result.findings]


# ---- replies ------------------------------------------------------------------------


def test_a_reply_to_our_message_is_ours(config: replies.Config, store: CountingStore) -> None:
    result = run(config, mail(f"In-Reply-To: <{OURS}>"), store)
    assert (result.outcome, names(result)) == (Outcome.PASS, ["reply.ours"])
    assert result.findings[0].detail == f"answers our <{OURS}>, to the address it came from"


def test_our_message_deep_in_references_is_found(
    config: replies.Config, store: CountingStore
) -> None:
    refs = f"References: <root@example.com> <{OURS}>\r\n <later@example.com>"
    result = run(config, mail(refs, "In-Reply-To: <later@example.com>"), store, rcpt="x@example.org")
    assert names(result) == ["reply.ours"]
    assert result.findings[0].detail == f"answers our <{OURS}>"


def test_a_forged_reply_naming_an_unknown_message_gets_nothing(
    config: replies.Config, store: CountingStore
) -> None:
    result = run(config, mail("In-Reply-To: <guessed.4712@mx.example.org>"), store)
    assert (result.outcome, result.findings) == (Outcome.NONE, ())


def test_a_message_we_forgot_is_no_reply_to_us(config: replies.Config) -> None:
    expired = MemoryStore()
    RememberSent(SentMessage(message_digest(KEY, OURS), "", NOW - 91 * DAY, NOW - DAY),
                 100).apply(expired)
    assert run(config, mail(f"In-Reply-To: <{OURS}>"), expired).findings == ()


def test_the_digest_depends_on_our_key(tmp_path: Path, store: CountingStore) -> None:
    """A store written under another key (or a guess at the hash) matches nothing."""
    other = tmp_path / "other.key"
    other.write_bytes(b"o" * 32)
    other.chmod(0o600)
    result = run(replies.Config(key_file=str(other)), mail(f"In-Reply-To: <{OURS}>"), store)
    assert result.findings == ()


def test_hostile_references_cost_at_most_max_lookups(
    config: replies.Config, store: CountingStore
) -> None:
    refs = "References: " + " ".join(f"<{n}@example.net>" for n in range(100_000))
    result = run(config, mail(refs, "In-Reply-To: " + "<" * 100_000), store)
    assert result.findings == ()
    assert len(store.asked) == config.max_lookups == 20


def test_a_state_outage_is_a_temperror_and_the_token_is_still_read(
    config: replies.Config
) -> None:
    result = run(config, mail(f"In-Reply-To: <{OURS}>"), DownStore())
    assert result.outcome is Outcome.TEMPERROR and "connection refused" in result.reason
    bounce = run(config, dsn(returned_rfc822(make_token(KEY, OURS, DATE))), DownStore(),
                 mail_from="")
    assert (bounce.outcome, names(bounce)) == (Outcome.PASS, ["reply.ours_bounce"])


def test_offline_only_the_token_is_read(config: replies.Config) -> None:
    assert run(config, mail(f"In-Reply-To: <{OURS}>"), None).outcome is Outcome.NONE


# ---- bounces and the token -----------------------------------------------------------


def returned_rfc822(token: str | None, ident: str = OURS, date: str = DATE) -> bytes:
    header = b"Content-Type: message/rfc822\r\n\r\n"
    fields = [f"From: Support <{AGENT}>", "To: gone@example.net", "Subject: Your ticket",
              f"Date: {date}", f"Message-ID: <{ident}>"]
    if token is not None:
        fields.append(f"X-Trustmilter-Token: {token}")
    return header + ("\r\n".join(fields) + "\r\n\r\nYour ticket was updated.\r\n").encode()


def returned_headers_only(token: str) -> bytes:
    return (f"Content-Type: text/rfc822-headers\r\n\r\nFrom: <{AGENT}>\r\n"
            f"Message-ID: <{OURS}>\r\nDate: {DATE}\r\nX-Trustmilter-Token:\r\n {token}\r\n").encode()


def returned_base64(token: str) -> bytes:
    inner = (f"Message-ID: <{OURS}>\r\nDate: {DATE}\r\nX-Trustmilter-Token: {token}\r\n\r\n"
             "body\r\n").encode()
    encoded = base64.encodebytes(inner)
    return b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + encoded


def dsn(returned: bytes, report: bool = True) -> bytes:
    kind = ("multipart/report; report-type=delivery-status" if report else "multipart/mixed")
    return (
        b"From: Mail Delivery System <MAILER-DAEMON@example.net>\r\nTo: " + AGENT.encode()
        + b"\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: " + kind.encode() + b"; boundary=\"b1\"\r\n\r\n"
        b"--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; gone@example.net\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"--b1\r\n" + returned + b"\r\n--b1--\r\n"
    )


@pytest.mark.parametrize("returned", [returned_rfc822, returned_headers_only, returned_base64])
def test_a_bounce_returning_our_token_is_verifiably_ours(config: replies.Config, returned) -> None:
    result = run(config, dsn(returned(make_token(KEY, OURS, DATE))), MemoryStore(), mail_from="")
    assert (result.outcome, names(result)) == (Outcome.PASS, ["reply.ours_bounce"])
    assert result.findings[0].detail == f"returns our <{OURS}>"


@pytest.mark.parametrize("token", [
    make_token(b"f" * 32, OURS, DATE),  # the forger's own key
    make_token(KEY, "other@mx.example.org", DATE),  # a real token of another message
    "1.AAAAAAAAAAAAAAAAAAAAAA",
    "",
])
def test_a_bounce_with_a_token_not_ours_is_flagged(config: replies.Config, token: str) -> None:
    result = run(config, dsn(returned_rfc822(token)), MemoryStore(), mail_from="")
    assert (result.outcome, names(result)) == (Outcome.FAIL, ["reply.forged_token"])


def test_a_bounce_without_a_token_is_neither(config: replies.Config) -> None:
    result = run(config, dsn(returned_rfc822(None)), MemoryStore(), mail_from="")
    assert (result.outcome, result.findings) == (Outcome.NONE, ())


def test_a_forwarded_message_with_our_token_is_no_bounce(config: replies.Config) -> None:
    """A customer forwarding our notification as an attachment returns nothing to us."""
    raw = dsn(returned_rfc822(make_token(KEY, OURS, DATE)), report=False).replace(
        b"MAILER-DAEMON@example.net", b"carol@example.com")
    result = run(config, raw, MemoryStore(), mail_from="carol@example.com")
    assert result.findings == ()


def test_the_mime_walk_keeps_each_returned_header() -> None:
    message = Message(dsn(returned_rfc822("1.x")))
    [fields] = message.mime.messages
    assert ("Message-ID", f"<{OURS}>") in fields and ("X-Trustmilter-Token", "1.x") in fields
    assert list(returned_headers(message.mime)) == [fields]
    assert Message(mail()).mime.messages == ()


def test_returned_headers_are_bounded() -> None:
    parts = b"".join(b"--b1\r\n" + returned_rfc822("1.x") + b"\r\n" for _ in range(50))
    raw = b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" + parts + b"--b1--\r\n"
    assert len(list(returned_headers(Message(raw).mime))) == replies.MAX_RETURNED


# ---- no key, bad settings --------------------------------------------------------------


def test_without_a_key_nothing_is_recognised(store: CountingStore,
                                             caplog: pytest.LogCaptureFixture) -> None:
    result = run(replies.Config(), mail(f"In-Reply-To: <{OURS}>"), store)
    assert result.outcome is Outcome.SKIPPED and "key_file" in result.reason
    with caplog.at_level(logging.INFO):
        replies.preflight(replies.Config())
    assert [r.getMessage() for r in caplog.records] == [
        "checks.replies: no key_file, so our own mail is not stamped or remembered, and "
        "replies and bounces to it are not recognised"]


def test_a_key_file_that_is_set_must_work(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="No such file"):
        replies.preflight(replies.Config(key_file=str(tmp_path / "missing.key")))
    with pytest.raises(InvalidField):
        replies.Config(key_file="relative/token.key")
    with pytest.raises(InvalidField):
        replies.Config(token_header="Bad Header:")


def test_before_the_message_it_waits(config: replies.Config) -> None:
    ctx = make_ctx(NoDns(), mail_from="carol@example.com")
    assert ReplyCheck(config).run(ctx)[0].outcome is Outcome.SKIPPED


# ---- the shipped rules -------------------------------------------------------------------


def verdict(*signals: str) -> tuple[Action, list[str]]:
    results = [CheckResult("x", Outcome.FAIL, "", tuple(Finding(s) for s in signals))]
    decided = evaluate(Policy(), Results(results))
    return decided.action, [hit.rule for hit in decided.hits]


def test_a_customer_reply_through_a_list_is_not_held_as_bulk() -> None:
    assert verdict("auto.bulk") == (Action.QUARANTINE, ["auto-bulk"])
    assert verdict("auto.bulk", "reply.ours") == (Action.ACCEPT, [])


def test_an_automatic_reply_to_our_mail_is_held_at_once() -> None:
    """The two machines: held by its own rule, and no learned reputation lifts it."""
    for automatic in ("auto.autoreply", "auto.helpdesk", "auto.machine_generated",
                      "auto.noreply_sender"):
        action, rules = verdict(automatic, "reply.ours", "reputation.learned")
        assert action is Action.QUARANTINE and rules == ["reply-automatic"]
    action, rules = verdict("auto.machine_generated", "reply.ours")
    assert action is Action.QUARANTINE and rules[0] == "reply-automatic"


def test_reply_ours_lifts_nothing_that_guards_against_forgery() -> None:
    for signals in (("dmarc.fail", "dmarc.policy.reject"), ("spf.mailfrom.fail",),
                    ("dkim.fail",), ("author.unauthenticated",)):
        assert verdict(*signals, "reply.ours") == verdict(*signals)
    assert verdict("loop.marker_seen", "reply.ours")[0] is Action.REJECT
    assert verdict("rate.tier.reject", "reply.ours")[0] is Action.REJECT
    assert verdict("rate.tier.quarantine", "reply.ours")[0] is Action.QUARANTINE
    assert verdict("auto.bounce", "reply.ours")[0] is Action.QUARANTINE
