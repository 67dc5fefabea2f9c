"""`trustmilter explain-bounce`: the JSON object issue 5 names, readable text, exit codes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from test_bounce_explain import NOT_A_BOUNCE, POSTFIX_DSN, QMAIL
from trustmilter.cli import main


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(POSTFIX_DSN)
    assert main(["explain-bounce", str(path), "--json", "--own-domain", "example.com"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["is_bounce"] is True and data["own"] is True
    assert data["reporting_mta"] == "mail.example.com"
    assert data["original_message_id"] == "<q1.20261124@example.com>"
    assert [(r["address"], r["action"], r["status"], r["class"]) for r in data["recipients"]] == [
        ("bob@example.net", "failed", "5.1.1", "permanent"),
        ("carol@example.org", "delayed", "4.2.2", "temporary"),
        ("dave@example.org", "failed", "5.7.1", "permanent"),
    ]
    assert data["recipients"][0]["diagnostic"].startswith("550 5.1.1 <bob@example.net>")
    assert data["recipients"][0]["cause"] == "user unknown"


def test_readable_from_stdin(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(QMAIL)))
    assert main(["explain-bounce", "-"]) == 0
    out = capsys.readouterr().out
    assert "reported by mx.example.net" in out
    assert "Recipient gina@example.org: failed, permanent failure" in out
    assert "status 5.1.1: Addressing Status / Bad destination mailbox address" in out
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
