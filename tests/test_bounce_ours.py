"""Ours or not: the marks of our own mail on a bounce, each alone (bounce/ours.py,
batv.py, signature.py) and through the bounce check. DKIM keys are looked up
from the test DNS server."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import make_ctx
from keys import key_zone, message, rsa_key, sign
from trustmilter.bounce import batv
from trustmilter.bounce.ours import Mark, decide, is_own_mta, reporting_mta_mark, token_mark
from trustmilter.bounce.signature import dkim_marks, returned_copy
from trustmilter.checks import bounce
from trustmilter.checks.bounce import BounceCheck
from trustmilter.checks.replies import TokenEvidence
from trustmilter.i18n import Text
from trustmilter.mail.token import KeyFileError
from trustmilter.results import CheckResult, Outcome
from trustmilter.state.memory import MemoryStore

NOW = 1_790_000_000.0
DAY = 86400
SECRET = b"0123456789abcdef" * 3  # 48 bytes
OUR_KEY = rsa_key(1024)
OTHER_KEY = rsa_key(2048)
OUR_ZONE = key_zone(OUR_KEY, "sel", "example.org")


def notification(body: bytes = b"Your ticket was updated.\r\n") -> bytes:
    return message(from_="Help Desk <support@example.org>", to="bob@example.net",
                   subject="[#4711] Your ticket", message_id="<t4711@example.org>", body=body)


def dsn(returned: bytes, kind: str = "message/rfc822", reporter: str = "mx.example.net",
        recipient: str = "bob@example.net", encoding: str | None = None) -> bytes:
    """A report from `reporter` that `recipient` does not exist, returning `returned`."""
    cte = f"Content-Transfer-Encoding: {encoding}\r\n" if encoding else ""
    return (b"From: Mail Delivery System <MAILER-DAEMON@" + reporter.encode() + b">\r\n"
            b"To: support@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            b"report-type=delivery-status; boundary=\"r1\"\r\n\r\n"
            b"--r1\r\nContent-Type: text/plain\r\n\r\nCould not be delivered.\r\n"
            b"--r1\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; " + reporter.encode() + b"\r\n\r\n"
            b"Final-Recipient: rfc822; " + recipient.encode() + b"\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n"
            b"--r1\r\nContent-Type: " + kind.encode() + b"\r\n" + cte.encode() + b"\r\n"
            + returned + b"\r\n--r1--\r\n")


def header_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


# ---- the decision --------------------------------------------------------------------


def test_any_proof_makes_it_ours_and_names_the_evidence_strongest_first() -> None:
    marks = [Mark("dkim", "proves", Text("d")), Mark("token", "contradicts", Text("t")),
             Mark("reporting-mta", "proves", Text("r"))]
    ours = decide(False, marks)
    assert (ours.value, ours.evidence, ours.word) == (
        "yes", ("reporting-mta", "dkim"), "yes:reporting-mta+dkim")
    assert ours.lines == ("dkim: d", "token: t", "reporting-mta: r")


@pytest.mark.parametrize(("claimed", "marks", "value"), [
    (True, [], "claims"),  # a From of ours inside, nothing else
    (False, [Mark("reporting-mta", "claims", Text("named"))], "claims"),
    (True, [Mark("token", "contradicts", Text("forged"))], "no"),  # a wrong mark outweighs a claim
    (False, [], "no"),
])
def test_without_proof(claimed: bool, marks: list[Mark], value: str) -> None:
    ours = decide(claimed, marks)
    assert (ours.value, ours.evidence, ours.word) == (value, (), value)


def test_our_mtas_by_name_or_by_domain() -> None:
    mtas = ("relay.example.org", ".out.example.org")
    assert is_own_mta("Relay.Example.ORG.", mtas) and is_own_mta("[relay.example.org]", mtas)
    assert is_own_mta("a.out.example.org", mtas)
    assert not is_own_mta("out.example.org.evil.example.net", mtas)
    assert not is_own_mta("relay.example.org.example.net", mtas) and not is_own_mta(None, mtas)


def test_the_reporter_is_ours_only_when_ours_delivered_it() -> None:
    mtas = ("relay.example.org",)
    assert reporting_mta_mark("relay.example.org", "relay.example.org", mtas).status == "proves"
    assert reporting_mta_mark("relay.example.org", "mx.example.net", mtas).status == "claims"
    assert reporting_mta_mark("relay.example.org", None, mtas).status == "claims"
    assert reporting_mta_mark("mx.example.net", "relay.example.org", mtas) is None
    assert reporting_mta_mark("relay.example.org", "relay.example.org", ()) is None


def test_the_token_mark() -> None:
    assert token_mark("t1@example.org", False).status == "proves"
    assert token_mark(None, True).status == "contradicts"
    assert token_mark(None, False) is None


# ---- BATV --------------------------------------------------------------------------------


def test_a_tag_is_exims_prvs() -> None:
    """HMAC-SHA1 over key number, three-digit day and address; the first three bytes in hex."""
    day = (int(NOW // DAY) + 7) % 1000
    expected = hmac.new(SECRET, f"0{day:03d}support@example.org".encode(),
                        hashlib.sha1).hexdigest()[:6]
    assert batv.tagged(SECRET, "support@example.org", NOW) == (
        f"prvs=0{day:03d}{expected}=support@example.org")


def test_a_valid_tag_proves_a_wrong_one_contradicts_an_old_one_claims() -> None:
    good = batv.tagged(SECRET, "support@example.org", NOW)
    assert batv.return_path_mark([good], SECRET, NOW).status == "proves"
    assert batv.return_path_mark([good.upper()], SECRET, NOW) is not None  # any case of letters
    assert batv.return_path_mark(["plain@example.org", f"<{good}>"], SECRET, NOW).status == (
        "proves")
    assert batv.return_path_mark([good], b"another secret of 32 bytes......", NOW).status == (
        "contradicts")
    forged = good.replace("=support@", "=sales@")
    assert batv.return_path_mark([forged], SECRET, NOW).status == "contradicts"
    assert batv.return_path_mark([good], SECRET, NOW + 8 * DAY).status == "claims"  # expired
    assert batv.return_path_mark(["support@example.org"], SECRET, NOW) is None


def test_the_batv_key_file_is_checked_at_start(tmp_path: Path) -> None:
    path = tmp_path / "batv.key"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    assert bounce.batv_secret(bounce.Config(batv_key_file=str(path))) == SECRET
    path.write_bytes(SECRET * 2)  # 96 bytes: Exim refuses a secret over 64
    with pytest.raises(KeyFileError, match="at most 64"):
        bounce.preflight(bounce.Config(batv_key_file=str(path)))
    path.chmod(0o644)
    with pytest.raises(KeyFileError):
        bounce.preflight(bounce.Config(batv_key_file=str(path)))
    bounce.preflight(bounce.Config())  # none set: nothing to check


# ---- the returned copy ------------------------------------------------------------------


def test_the_returned_message_is_found_as_it_was_sent() -> None:
    original = notification()
    copy = returned_copy(dsn(original))
    assert copy is not None and not copy.headers_only
    assert copy.data == original


def test_a_returned_header_alone_is_a_header() -> None:
    copy = returned_copy(dsn(header_of(notification()), "text/rfc822-headers"))
    assert copy is not None and copy.headers_only
    assert copy.data == header_of(notification()) + b"\r\n"


def test_an_encoded_copy_and_lf_line_ends_are_read() -> None:
    encoded = base64.encodebytes(notification()).replace(b"\n", b"\r\n")
    copy = returned_copy(dsn(encoded, encoding="base64"))
    assert copy is not None and copy.data == notification()
    saved = dsn(notification()).replace(b"\r\n", b"\n")  # a bounce saved by a mail client
    assert returned_copy(saved).data == notification()


def test_a_report_inside_a_mixed_message_and_no_copy() -> None:
    mixed = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n"
             b"--m1\r\n" + dsn(notification()).split(b"MIME-Version: 1.0\r\n", 1)[1]
             + b"\r\n--m1--\r\n")
    assert returned_copy(mixed).data == notification()
    assert returned_copy(message()) is None
    assert returned_copy(b"") is None and returned_copy(b"\x00\xff" * 100) is None


# ---- our DKIM signature on the copy -------------------------------------------------------


def marks_of(raw: bytes, resolver, own: tuple[str, ...] = ("example.org",)) -> list[Mark]:
    copy = returned_copy(raw)
    assert copy is not None
    return dkim_marks(copy, own, resolver, NOW)


def test_our_signature_on_the_whole_copy_proves_it(dns_server, resolver) -> None:
    dns_server.load(OUR_ZONE)
    [mark] = marks_of(dsn(sign(notification(), OUR_KEY, "example.org")), resolver)
    assert mark.status == "proves"
    assert mark.detail.render() == ("our signature d=example.org s=sel verifies over the "
                                    "returned header; the returned body is the one signed")


def test_the_header_alone_verifies(dns_server, resolver) -> None:
    """Postfix above bounce_size_limit, and many others, return the header only."""
    dns_server.load(OUR_ZONE)
    signed = sign(notification(), OUR_KEY, "example.org")
    [mark] = marks_of(dsn(header_of(signed), "text/rfc822-headers"), resolver)
    assert mark.status == "proves"
    assert mark.detail.render().endswith("only the header was returned")


def test_a_cut_or_re_encoded_body_still_proves_by_the_header(dns_server, resolver) -> None:
    dns_server.load(OUR_ZONE)
    signed = sign(notification(b"Caf\xc3\xa9 au lait.\r\n" * 50), OUR_KEY, "example.org")
    cut = signed[: len(signed) - 200]
    [mark] = marks_of(dsn(cut), resolver)
    assert mark.status == "proves"
    assert mark.detail.render().endswith(
        "differs from the one signed (cut or re-encoded on its way back)")


def test_a_changed_header_or_another_key_only_claims(dns_server, resolver) -> None:
    dns_server.load(OUR_ZONE)
    signed = sign(notification(), OUR_KEY, "example.org")
    changed = signed.replace(b"Subject: [#4711]", b"Subject: [#4712]")
    [mark] = marks_of(dsn(changed), resolver)
    assert (mark.status, mark.detail.render()) == (
        "claims", "our signature d=example.org s=sel does not verify over the returned header")
    [mark] = marks_of(dsn(sign(notification(), OTHER_KEY, "example.org")), resolver)
    assert mark.status == "claims"


def test_a_missing_key_or_a_failing_lookup_only_claims(dns_server, resolver) -> None:
    signed = dsn(sign(notification(), OUR_KEY, "example.org"))
    dns_server.load("")
    [mark] = marks_of(signed, resolver)
    assert mark.status == "claims"
    dns_server.load("$SERVFAIL sel._domainkey.example.org.\n")
    [mark] = marks_of(signed, resolver)
    assert (mark.status, mark.detail.render()) == (
        "claims", "our signature d=example.org s=sel: its key could not be looked up")


def test_other_domains_signatures_are_not_looked_up(dns_server, resolver) -> None:
    dns_server.load(key_zone(OUR_KEY, "sel", "example.net"))
    raw = dsn(sign(notification(), OUR_KEY, "example.net"))
    assert marks_of(raw, resolver) == []
    assert marks_of(raw, resolver, own=()) == []
    assert dns_server.queries == []


def test_historic_algorithms_only_claim(dns_server, resolver) -> None:
    """RFC 8301 §3.1: rsa-sha1 is not verified, for the returned copy either."""
    dns_server.load(OUR_ZONE)
    signed = sign(notification(), OUR_KEY, "example.org", algorithm=b"rsa-sha1")
    [mark] = marks_of(dsn(signed), resolver)
    assert mark.status == "claims" and "rsa-sha1" in mark.detail.render()


# ---- through the bounce check ---------------------------------------------------------------


def check(raw: bytes, resolver, config: bounce.Config, rcpt: str = "support@example.org",
          results: tuple[CheckResult, ...] = (), client: str | None = "mx.example.net",
          store: MemoryStore | None = None) -> CheckResult:
    ctx = make_ctx(resolver, ip="198.51.100.7", mail_from="", rcpt_to=[rcpt], message=raw,
                   results=results, hostname=client)
    ctx = replace(ctx, clock=lambda: NOW, state=store)
    [result] = BounceCheck(config).run(ctx)
    if store is not None:
        for effect in result.effects:
            effect.apply(store)
    return result


def ours_field(result: CheckResult) -> str:
    return (bounce.summary_of(result) or "").split("; ")[1]


CLAIMED = bounce.Config(own_domains=("example.org",))


def test_a_from_of_ours_from_a_strangers_mta_only_claims(resolver) -> None:
    store = MemoryStore()
    result = check(dsn(notification()), resolver, CLAIMED, store=store)
    assert ours_field(result) == "ours=claims" and "bounce.ours" not in str(result.findings)
    assert result.findings[0].name == "bounce.own"
    assert store.hard_bounces(NOW) == [] and result.effects == ()


def test_our_token_makes_it_ours_a_forged_one_does_not(resolver) -> None:
    def reply(evidence: TokenEvidence) -> tuple[CheckResult, ...]:
        return (CheckResult("reply", Outcome.PASS, evidence=evidence),)

    store = MemoryStore()
    result = check(dsn(notification()), resolver, CLAIMED,
                   results=reply(TokenEvidence("t4711@example.org", False)), store=store)
    assert ours_field(result) == "ours=yes:token"
    assert [b.ours for b in store.hard_bounces(NOW)] == ["token"]
    forged = check(dsn(notification()), resolver, CLAIMED,
                   results=reply(TokenEvidence(None, True)), store=MemoryStore())
    assert ours_field(forged) == "ours=no" and forged.effects == ()


def test_our_signature_makes_it_ours(dns_server, resolver) -> None:
    dns_server.load(OUR_ZONE)
    store = MemoryStore()
    result = check(dsn(sign(notification(), OUR_KEY, "example.org")), resolver, CLAIMED,
                   store=store)
    assert ours_field(result) == "ours=yes:dkim"
    assert [f.detail for f in result.findings if f.name == "bounce.ours"] == ["dkim"]
    assert [(b.recipient, b.ours) for b in store.hard_bounces(NOW)] == [
        ("bob@example.net", "dkim")]


def test_our_batv_return_path_makes_it_ours(tmp_path: Path, resolver) -> None:
    path = tmp_path / "batv.key"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    config = replace(CLAIMED, batv_key_file=str(path))
    tagged = batv.tagged(SECRET, "support@example.org", NOW)
    assert ours_field(check(dsn(notification()), resolver, config, rcpt=tagged)) == (
        "ours=yes:return-path")
    wrong = tagged[:-len("=support@example.org")] + "=sales@example.org"
    assert ours_field(check(dsn(notification()), resolver, config, rcpt=wrong)) == "ours=no"


def test_our_own_mta_makes_it_ours(resolver) -> None:
    config = replace(CLAIMED, own_mtas=("relay.example.org",))
    raw = dsn(notification(), reporter="relay.example.org")
    assert ours_field(check(raw, resolver, config, client="relay.example.org")) == (
        "ours=yes:reporting-mta")
    assert ours_field(check(raw, resolver, config, client="mx.example.net")) == "ours=claims"
