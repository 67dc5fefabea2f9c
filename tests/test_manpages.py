"""docs/man/ is current: regenerated from the argument parser, it is byte for byte the same.

tools/manpages.py writes one page per command from the parser `trustmilter`
runs. Here it regenerates them and compares (the CI check: an option or
help text changed without its page fails, naming the page and the command
that fixes it); the comparison itself is shown to fail on a stale page;
every page must be valid roff for groff, and the Debian package must
install every page.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "docs" / "man"
TOOL = ROOT / "tools" / "manpages.py"


def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("manpages", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pages_in_the_repository_are_current() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_a_stale_or_missing_page_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    manpages = tool()
    for page in MAN_DIR.glob("*.1"):
        shutil.copy(page, tmp_path)
    monkeypatch.setattr(manpages, "MAN_DIR", tmp_path)
    monkeypatch.setenv("COLUMNS", "80")  # main() sets its own width; this restores ours after
    assert manpages.main(["--check"]) == 0
    check_page = tmp_path / "trustmilter-check.1"
    check_page.write_text(check_page.read_text().replace("the SMTP client's IP", "an IP"))
    (tmp_path / "trustmilter-run.1").unlink()
    (tmp_path / "trustmilter-gone.1").write_text(".TH GONE 1\n")
    capsys.readouterr()
    assert manpages.main(["--check"]) == 1
    named = capsys.readouterr().err
    for page in ("trustmilter-check.1", "trustmilter-run.1", "trustmilter-gone.1"):
        assert f"docs/man/{page} is not current: run .venv/bin/python tools/manpages.py" in named
    assert manpages.main([]) == 0  # rewrites them
    assert manpages.main(["--check"]) == 0
    assert not (tmp_path / "trustmilter-gone.1").exists()


def test_one_page_per_command_and_none_for_the_hidden_one() -> None:
    manpages = tool()
    names = {name for name, _, _ in manpages.public_commands(manpages.build_parser())}
    assert {"check", "run", "policy", "quarantine", "reputation", "bounces", "doctor",
            "explain-bounce"} <= names
    assert "_serve" not in names
    assert {p.name for p in MAN_DIR.glob("*.1")} == {"trustmilter.1"} | {
        f"trustmilter-{name}.1" for name in names}
    overview = (MAN_DIR / "trustmilter.1").read_text()
    for name in names:
        assert f".BR trustmilter\\-{name} (1)" in overview  # listed and in SEE ALSO
    assert "_serve" not in "".join(p.read_text() for p in MAN_DIR.glob("*.1"))


def test_the_pages_document_every_option() -> None:
    """Spot check that the parser, not a template, made them."""
    run_page = (MAN_DIR / "trustmilter-run.1").read_text()
    for option in ("\\-\\-policy", "\\-\\-socket", "\\-\\-foreground\\-log"):
        assert option in run_page
    quarantine = (MAN_DIR / "trustmilter-quarantine.1").read_text()
    for action in ("list", "show", "release", "delete"):
        assert f"'trustmilter quarantine {action}'" in quarantine
    assert "\\-\\-no\\-learn" in quarantine


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
@pytest.mark.parametrize("page", sorted(p.name for p in MAN_DIR.glob("*.1")))
def test_groff_reads_each_page_without_a_warning(page: str) -> None:
    done = subprocess.run(["groff", "-man", "-ww", "-z", str(MAN_DIR / page)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_the_debian_package_installs_every_page() -> None:
    listed = (ROOT / "packaging" / "debian" / "trustmilter.manpages").read_text().split()
    assert listed == ["docs/man/*.1"]
