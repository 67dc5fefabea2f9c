"""`trustmilter explain-bounce` (the JSON object issue 5 names, readable text, exit codes)
and `trustmilter bounces list|forget`."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from test_bounce_explain import NOT_A_BOUNCE, POSTFIX_DSN, QMAIL
from test_state_backends import NOW, hard_bounce
from trustmilter.cli import main
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
        store.add_bounce(hard_bounce("bob@example.net", NOW, diagnostic="550 \x1b[2J gone"))
    finally:
        store.close()
    assert main(["bounces", "list", "--policy", str(policy), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)["bounces"]
    assert (record["recipient"], record["status"], record["bounces"]) == ("bob@example.net",
                                                                         "5.1.1", 1)
    assert main(["bounces", "list", "--policy", str(policy)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("<bob@example.net>  5.1.1 user unknown  last=") and "\x1b" not in line
    assert main(["bounces", "forget", "<Bob@example.net>", "--policy", str(policy)]) == 0
    assert capsys.readouterr().out == "bob@example.net: forgotten\n"
    assert main(["bounces", "forget", "bob@example.net", "--policy", str(policy)]) == 1
    assert "no hard bounce recorded" in capsys.readouterr().err
