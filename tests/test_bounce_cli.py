"""`trustmilter explain-bounce` (the JSON object issue 5 names, readable text, exit codes)
and `trustmilter bounces list|forget`."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from test_bounce_explain import NOT_A_BOUNCE, POSTFIX_DSN, QMAIL
from test_state_backends import NOW, hard_bounce
from trustmilter.bounce import batv
from trustmilter.cli import main
from trustmilter.mail.token import make_token
from trustmilter.state.sqlite import SqliteStore


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(POSTFIX_DSN)
    assert main(["explain-bounce", str(path), "--json", "--own-domain", "example.com"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["is_bounce"] is True and data["own"] is True
    assert data["reporting_mta"] == "mail.example.com"
    assert data["original_message_id"] == "<q1.20261124@example.com>"
    assert [(r["address"], r["action"], r["status"], r["class"]) for r in data["recipients"]] == [
        ("Bob@example.net", "failed", "5.1.1", "permanent"),
        ("carol@example.org", "delayed", "4.2.2", "temporary"),
        ("dave@example.org", "failed", "5.7.1", "permanent"),
    ]
    assert data["recipients"][0]["diagnostic"].startswith("550 5.1.1 <bob@example.net>")
    bob = data["recipients"][0]
    assert {key: bob[key] for key in ("cause", "status", "status_source", "permanent",
                                      "original_recipient", "final_recipient", "preferred")} == {
        "cause": "user unknown", "status": "5.1.1", "status_source": "report", "permanent": True,
        "original_recipient": "Bob@example.net", "final_recipient": "bob@example.net",
        "preferred": "original"}
    assert bob["cause_explanation"].startswith("The address does not exist")
    carol = data["recipients"][1]
    assert (carol["permanent"], carol["cause"], carol["original_recipient"]) == (
        False, "mailbox full", None)


def test_readable_from_stdin(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(QMAIL)))
    assert main(["explain-bounce", "-"]) == 0
    out = capsys.readouterr().out
    assert "reported by mx.example.net" in out
    assert "Recipient gina@example.org: failed, permanent failure" in out
    assert ("status 5.1.1 (from the server's reply): Addressing Status / "
            "Bad destination mailbox address") in out
    assert "cause: user unknown" in out
    assert "Message-ID: <gina.2@example.com>" in out


def test_not_a_bounce(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mail.eml"
    path.write_bytes(NOT_A_BOUNCE)
    assert main(["explain-bounce", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["is_bounce"] is False
    assert main(["explain-bounce", str(path)]) == 0
    assert "not a bounce" in capsys.readouterr().out


def test_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain-bounce", str(tmp_path / "missing.eml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read message" in err


def test_own_domains_come_from_the_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(POSTFIX_DSN)
    assert main(["explain-bounce", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["own"] is False
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  bounce:\n    own_domains: [example.com]\n")
    assert main(["explain-bounce", str(path), "--json", "--policy", str(policy)]) == 0
    assert json.loads(capsys.readouterr().out)["own"] is True


def test_a_bad_policy_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(POSTFIX_DSN)
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  bounce:\n    own_domains: [not a domain]\n")
    assert main(["explain-bounce", str(path), "--policy", str(policy)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "policy.yaml:3" in err and "own_domains" in err, err


def sqlite_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state:\n  sqlite_path: {tmp_path / 'state.sqlite3'}\n")
    return policy


def test_bounces_list_and_forget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = sqlite_policy(tmp_path)
    assert main(["bounces", "list", "--policy", str(policy)]) == 0
    assert capsys.readouterr().out == "no hard bounces recorded\n"
    store = SqliteStore(tmp_path / "state.sqlite3", 1.0)
    try:
        store.add_bounce(hard_bounce("bob@example.net", NOW, diagnostic="550 \x1b[2J gone",
                                     ours="token+dkim"))
    finally:
        store.close()
    assert main(["bounces", "list", "--policy", str(policy), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)["bounces"]
    assert (record["recipient"], record["status"], record["bounces"], record["ours"]) == (
        "bob@example.net", "5.1.1", 1, "token+dkim")
    assert main(["bounces", "list", "--policy", str(policy)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("<bob@example.net>  5.1.1 user unknown  last=") and "\x1b" not in line
    assert line.rstrip().endswith("ours=token+dkim")
    assert main(["bounces", "forget", "<Bob@example.net>", "--policy", str(policy)]) == 0
    assert capsys.readouterr().out == "bob@example.net: forgotten\n"
    assert main(["bounces", "forget", "bob@example.net", "--policy", str(policy)]) == 1
    assert "no hard bounce recorded" in capsys.readouterr().err


# ---- ours or not -------------------------------------------------------------------------

TOKEN_KEY = b"f00dfeedcafebabe" * 4
OUR_DKIM_KEY = rsa_key(1024)


def returned(extra: bytes = b"") -> bytes:
    return message(from_="Help Desk <support@example.org>", to="bob@example.net",
                   subject="[#4711] Your ticket", message_id="<t4711@example.org>",
                   extra_headers=tuple(h for h in [extra.decode()] if h))


def report(copy: bytes, reporter: str = "relay.example.org",
           to: str = "support@example.org") -> bytes:
    return (b"From: MAILER-DAEMON@" + reporter.encode() + b"\r\nTo: " + to.encode() + b"\r\n"
            b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b1\r\n\r\n"
            b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; " + reporter.encode() + b"\r\n\r\n"
            b"Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            b"\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n" + copy + b"\r\n--b1--\r\n")


def ours_policy(tmp_path: Path, nameserver: str = "127.0.0.1:9", **extra: str) -> Path:
    key = tmp_path / "token.key"
    key.write_bytes(TOKEN_KEY)
    key.chmod(0o600)
    policy = tmp_path / "policy.yaml"
    lines = [f"dns: {{nameservers: ['{nameserver}'], timeout: 0.5, lifetime: 1.0}}",
             "checks:",
             "  bounce: {own_domains: [example.org], own_mtas: [relay.example.org]"
             + "".join(f", {k}: '{v}'" for k, v in extra.items()) + "}",
             f"  replies: {{key_file: '{key}'}}"]
    policy.write_text("\n".join(lines) + "\n")
    return policy


def explained(tmp_path: Path, raw: bytes, capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    path = tmp_path / "bounce.eml"
    path.write_bytes(raw)
    assert main(["explain-bounce", str(path), "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_ours_is_claims_unless_a_mark_proves_it(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    policy = ours_policy(tmp_path)
    data = explained(tmp_path, report(returned()), capsys, "--policy", str(policy))
    assert (data["own"], data["ours"], data["ours_evidence"]) == (True, "claims", [])
    assert "reporting-mta: names our relay.example.org as its reporter, but came from a client " \
           "with no verified name" in data["ours_details"]
    # A file holds no SMTP session: the operator names the host it came from.
    data = explained(tmp_path, report(returned()), capsys, "--policy", str(policy),
                     "--client-name", "relay.example.org")
    assert (data["ours"], data["ours_evidence"]) == ("yes", ["reporting-mta"])
    path = tmp_path / "bounce.eml"
    assert main(["explain-bounce", str(path), "--policy", str(policy),
                 "--client-name", "relay.example.org"]) == 0
    assert ("It returns our own mail, verifiably: reported by one of our own MTAs."
            in capsys.readouterr().out)
    assert main(["explain-bounce", str(path), "--lang", "de", "--policy", str(policy)]) == 0
    assert "Sie gibt an, unsere eigene Mail zu betreffen; nichts beweist es." in (
        capsys.readouterr().out)


def test_our_token_and_a_forged_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = ours_policy(tmp_path)
    token = make_token(TOKEN_KEY, "t4711@example.org", "Mon, 01 Jan 2024 10:00:00 +0000")
    copy = returned(f"X-Trustmilter-Token: {token}".encode())
    data = explained(tmp_path, report(copy, reporter="mx.example.net"), capsys,
                     "--policy", str(policy))
    assert (data["ours"], data["ours_evidence"]) == ("yes", ["token"])
    forged = copy.replace(token.encode(), b"1.AAAAAAAAAAAAAAAAAAAAAA")
    data = explained(tmp_path, report(forged, reporter="mx.example.net"), capsys,
                     "--policy", str(policy))
    assert (data["ours"], data["ours_evidence"]) == ("no", [])


def test_our_dkim_signature_is_looked_up_with_the_policys_dns(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], dns_server) -> None:
    dns_server.load(key_zone(OUR_DKIM_KEY, "sel", "example.org"))
    policy = ours_policy(tmp_path, dns_server.nameserver)
    signed = sign(returned(), OUR_DKIM_KEY, "example.org")
    data = explained(tmp_path, report(signed, reporter="mx.example.net"), capsys,
                     "--policy", str(policy))
    assert (data["ours"], data["ours_evidence"]) == ("yes", ["dkim"])


def test_a_batv_return_path_and_a_key_that_cannot_be_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = b"s3cret-for-our-return-paths-0123456789"
    key = tmp_path / "batv.key"
    key.write_bytes(secret)
    key.chmod(0o600)
    policy = ours_policy(tmp_path, batv_key_file=str(key))
    tagged = batv.tagged(secret, "support@example.org", time.time())
    data = explained(tmp_path, report(returned(), reporter="mx.example.net", to=tagged), capsys,
                     "--policy", str(policy))
    assert (data["ours"], data["ours_evidence"]) == ("yes", ["return-path"])
    key.chmod(0o644)  # readable by others: refused, said so, the rest still read
    data = explained(tmp_path, report(returned(), reporter="mx.example.net", to=tagged), capsys,
                     "--policy", str(policy))
    assert data["ours"] == "claims" and data["is_bounce"] is True
    assert any(d.startswith("return-path: not checked: ") for d in data["ours_details"])
