"""`trustmilter policy check FILE` and `trustmilter policy show`."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmilter.cli import main
from trustmilter.config.load import parse_settings
from trustmilter.config.settings import Settings

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"


def test_the_shipped_policy_checks_ok(capsys):
    assert main(["policy", "check", str(SHIPPED)]) == 0
    assert capsys.readouterr().out.strip() == f"{SHIPPED}: ok"


@pytest.mark.parametrize(
    "text, line, key",
    [
        ("checks:\n  spff: {}\n", 2, "checks.spff"),
        ("thresholds:\n  low_trust: 3\n  quarantine: lots\n", 3, "thresholds.quarantine"),
        ("rules:\n  - name: x\n    when: [dmarc.fial]\n    action: reject\n", 3, "rules[0].when[0]"),
        ("actions:\n  reject: {code: 250, dsn: 2.0.0, text: ok}\n", 2, "actions.reject.code"),
    ],
)
def test_a_bad_policy_names_file_line_and_key(tmp_path, capsys, text, line, key):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    assert main(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"trustmilter: {path}:{line}: {key}")


def test_show_prints_every_default_and_loads_back_equal(capsys):
    assert main(["policy", "show"]) == 0
    shown = capsys.readouterr().out
    for section in ("dns:", "checks:", "scores:", "rules:", "thresholds:", "actions:", "headers:"):
        assert section in shown
    assert parse_settings(shown, "<shown>") == Settings()


def test_show_reflects_a_policy_file(tmp_path, capsys):
    path = tmp_path / "policy.yaml"
    path.write_text("thresholds:\n  low_trust: 4\n  quarantine: 9\n")
    assert main(["policy", "show", "--policy", str(path)]) == 0
    assert parse_settings(capsys.readouterr().out, "<shown>").policy.thresholds.quarantine == 9
