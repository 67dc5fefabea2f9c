"""The compat registry: every patch fits the installed libraries, and a patch
that does not is reported in one line and handled as its kind demands."""

from __future__ import annotations

import importlib.util
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from trustmilter import compat
from trustmilter.app import App
from trustmilter.compat.patches import MISSING, Patch, fingerprint, installed_version
from trustmilter.config.settings import Settings
from trustmilter.startup import StartupError

IDS = [patch.name for patch in compat.REGISTRY]


@pytest.mark.parametrize("patch", compat.REGISTRY, ids=IDS)
def test_each_patch_fits_the_installed_library(patch: Patch) -> None:
    """Fails after an upgrade that renames, removes or rewrites what a patch
    replaces: update the registry only after reading the upstream change."""
    assert patch.original is not MISSING, f"{patch.name} is gone"
    assert patch.verify() is None


def test_the_registry_reports_no_mismatch() -> None:
    assert compat.verify() == []
    assert all(line.endswith(("in place", "relied on, unchanged")) for line in compat.status())


def test_install_puts_every_replacement_in_place() -> None:
    compat.install()
    compat.install()  # idempotent
    for patch in compat.REGISTRY:
        if patch.replacement is not None:
            assert getattr(patch.owner, patch.attr) is patch.replacement, patch.name
            assert patch.original is not patch.replacement, patch.name


def test_originals_are_the_librarys_even_after_install() -> None:
    compat.install()
    original = compat.original("dkim.select_headers")
    assert getattr(original, "__module__", None) == "dkim"
    assert original is not compat.dkimpy.headers.select_headers
    with pytest.raises(KeyError):
        compat.original("dkim.no_such_name")


# ---- a patch against a library that moved on ------------------------------------


@pytest.fixture
def fakelib(tmp_path: Path) -> Iterator[ModuleType]:
    """A module with a slow function, loaded from a file (inspect reads its source)."""
    source = tmp_path / "fakelib.py"
    source.write_text(textwrap.dedent('''
        def slow(text):
            return text.replace("  ", " ")

        def caller(text):
            return slow(text)
    '''))
    spec = importlib.util.spec_from_file_location("fakelib", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fakelib"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["fakelib"]


def fast(text: str) -> str:
    return " ".join(text.split(" "))


def patch_of(module: ModuleType, *, fingerprint_: str | None = None, versions: str = "",
             required: bool = False, attr: str = "slow") -> Patch:
    """A patch of fakelib.slow, claimed for pyspf (a distribution that is installed)."""
    real = fingerprint((getattr(module, attr, MISSING), module.caller))
    return Patch(module, attr, fast, "pyspf",
                 frozenset({versions or installed_version("pyspf")}),
                 fingerprint_ if fingerprint_ is not None else (real or ""),
                 guards=("caller",), required=required)


def compat_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trustmilter.compat"]


def test_a_fitting_patch_is_applied(fakelib: ModuleType) -> None:
    original = fakelib.slow
    patch = patch_of(fakelib)
    assert patch.verify() is None
    compat.install([patch])
    assert fakelib.slow is fast
    assert patch.original is original


def test_changed_source_keeps_the_original_with_one_line(
    fakelib: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    original = fakelib.slow
    patch = patch_of(fakelib, fingerprint_="0" * 64)
    with caplog.at_level(logging.INFO, "trustmilter.compat"):
        compat.install([patch])
    assert fakelib.slow is original
    version = installed_version("pyspf")
    [line] = compat_lines(caplog)
    assert line.startswith(f"compat: fakelib.slow: pyspf {version}: source differs")
    assert line.endswith(": keeping the original (linear-time protection lost)")
    assert caplog.records[0].levelno == logging.WARNING


def test_other_version_keeps_the_original_with_one_line(
    fakelib: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    original = fakelib.slow
    patch = patch_of(fakelib, versions="0.0.1")
    with caplog.at_level(logging.INFO, "trustmilter.compat"):
        compat.install([patch])
    assert fakelib.slow is original
    assert compat_lines(caplog) == [
        f"compat: fakelib.slow: pyspf {installed_version('pyspf')} not in {{0.0.1}}: "
        "keeping the original (linear-time protection lost)"
    ]
    assert compat.verify([patch]) == [
        f"fakelib.slow: pyspf {installed_version('pyspf')} not in {{0.0.1}}"]


def test_a_vanished_name_is_reported(fakelib: ModuleType) -> None:
    patch = patch_of(fakelib, attr="renamed")
    assert patch.verify() == "fakelib.renamed no longer exists"
    compat.install([patch])
    assert not hasattr(fakelib, "renamed")  # not created by the assignment


def test_a_required_mismatch_refuses_start_and_applies_nothing(
    fakelib: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    original = fakelib.slow
    fitting = Patch(fakelib, "caller", fast, "pyspf", frozenset({installed_version("pyspf")}),
                    fingerprint((fakelib.caller,)) or "")
    broken = patch_of(fakelib, fingerprint_="0" * 64, required=True)
    with caplog.at_level(logging.INFO, "trustmilter.compat"), \
            pytest.raises(StartupError) as refused:
        compat.install([fitting, broken])
    [line] = compat_lines(caplog)
    assert line.endswith(": refusing to start")
    assert str(refused.value) == line
    assert fakelib.slow is original
    assert fakelib.caller is not fast  # no half-patch either


def test_a_required_mismatch_without_strict_keeps_the_original(
    fakelib: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    original = fakelib.slow
    broken = patch_of(fakelib, fingerprint_="0" * 64, required=True)
    with caplog.at_level(logging.INFO, "trustmilter.compat"):
        compat.install([broken], strict=False)
    assert fakelib.slow is original
    [line] = compat_lines(caplog)
    assert line.endswith(": keeping the original (linear-time protection lost)")
    assert caplog.records[0].levelno == logging.ERROR


def test_app_build_refuses_to_start_on_a_required_mismatch(
    fakelib: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = patch_of(fakelib, fingerprint_="0" * 64, required=True)
    monkeypatch.setattr(compat, "REGISTRY", (*compat.REGISTRY, broken))
    with pytest.raises(StartupError, match=r"^compat: fakelib\.slow: .*refusing to start$"):
        App.build(Settings(authserv_id="mx.example.com"))


def test_a_reliance_that_no_longer_holds_falls_back(fakelib: ModuleType) -> None:
    reliance = Patch(fakelib, "slow", None, "pyspf", frozenset({"0.0.1"}),
                     fingerprint((fakelib.slow,)) or "")
    assert not reliance.holds()
    compat.install([reliance])  # nothing to apply, nothing raised
    assert compat.status([reliance]) == [
        f"fakelib.slow: pyspf {installed_version('pyspf')} not in {{0.0.1}}: "
        "keeping the original (linear-time protection lost)"]


def test_the_upgrade_helper_prints_status_and_fingerprints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trustmilter.compat.__main__ import main

    assert main() == 0
    out = capsys.readouterr().out
    assert "dkim.select_headers: in place" in out
    for patch in compat.REGISTRY:
        assert f"sha256 {patch.fingerprint}" in out, patch.name
