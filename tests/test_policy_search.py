"""One installation, found by every command (policy_search.py, command_support.py).

Without --policy a command reads /etc/trustmilter/policy.yaml, else
./policy.yaml, else the built-in defaults; --policy always wins. The state
commands say on stderr which policy and store they read, and warn when the
running daemon's note (runfile.py) names another store. The search path is
the real function's order with both places moved into tmp_path (conftest
empties it for every other test); the daemon is a real `trustmilter run`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmilter import policy_search
from trustmilter.cli import main
from trustmilter.policy_search import SYSTEM_POLICY, find_policy, search_path
from trustmilter.testing.daemon import DaemonProcess

# ---- the search itself (plain unit tests) ----------------------------------------


def test_the_system_file_comes_before_the_working_directorys(tmp_path: Path) -> None:
    assert search_path(tmp_path) == (Path("/etc/trustmilter/policy.yaml"),
                                     tmp_path / "policy.yaml")
    assert search_path(tmp_path)[0] == SYSTEM_POLICY


def test_the_first_file_that_exists_is_read(tmp_path: Path) -> None:
    first, second = tmp_path / "etc.yaml", tmp_path / "cwd.yaml"
    second.write_text("")
    assert find_policy(None, [first, second]) == second
    first.write_text("")
    assert find_policy(None, [first, second]) == first


def test_an_explicit_file_wins_even_when_missing(tmp_path: Path) -> None:
    found = tmp_path / "found.yaml"
    found.write_text("")
    explicit = tmp_path / "missing.yaml"
    assert find_policy(explicit, [found]) == explicit  # the loader says it is missing


def test_nothing_found_means_the_built_in_defaults(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    assert find_policy(None, [tmp_path / "missing.yaml", not_a_dir / "policy.yaml"]) is None


def test_an_unreadable_candidate_is_chosen_not_skipped(tmp_path: Path) -> None:
    """A FIFO is there: the loader must refuse it by name, not fall through to defaults."""
    import os

    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    assert find_policy(None, [fifo, tmp_path / "other.yaml"]) == fifo


# ---- the commands, with both places in tmp_path ----------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(system policy, working-directory policy), neither written yet."""
    system = tmp_path / "etc" / "trustmilter" / "policy.yaml"
    system.parent.mkdir(parents=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(policy_search, "search_path", lambda here: (system, here / "policy.yaml"))
    return system, cwd / "policy.yaml"


def sqlite_policy(path: Path, store: Path) -> Path:
    path.write_text(f"state:\n  backend: sqlite\n  sqlite_path: {store}\n")
    return path


def test_policy_show_reads_the_system_file_and_says_so(
    places: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    system, local = places
    local.write_text("thresholds:\n  quarantine: 11\n")
    system.write_text("thresholds:\n  quarantine: 9\n")
    assert main(["policy", "show"]) == 0
    out, err = capsys.readouterr()
    assert "quarantine: 9" in out
    assert err == f"policy: {system}\n"


def test_the_working_directorys_file_when_there_is_no_system_file(
    places: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, local = places
    local.write_text("thresholds:\n  quarantine: 11\n")
    assert main(["policy", "show"]) == 0
    out, err = capsys.readouterr()
    assert "quarantine: 11" in out and err == f"policy: {local}\n"


def test_no_file_anywhere_is_said(places: tuple[Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    system, local = places
    assert main(["policy", "show"]) == 0
    assert capsys.readouterr().err == f"policy: built-in defaults (no {system} or {local})\n"
    assert main(["policy", "check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no policy file to check" in err and str(system) in err


def test_policy_check_without_a_file_checks_the_one_found(
    places: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    system, _ = places
    system.write_text("thresholds:\n  quarantine: nine\n")
    assert main(["policy", "check"]) == 1
    assert str(system) in capsys.readouterr().err
    system.write_text("thresholds:\n  quarantine: 9\n")
    assert main(["policy", "check"]) == 0
    assert capsys.readouterr().out == f"{system}: ok\n"


def test_dash_dash_policy_wins_over_the_search(
    places: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    system, _ = places
    system.write_text("thresholds:\n  quarantine: 9\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("thresholds:\n  quarantine: 12\n")
    assert main(["policy", "show", "--policy", str(mine)]) == 0
    out, err = capsys.readouterr()
    assert "quarantine: 12" in out and err == f"policy: {mine}\n"


@pytest.mark.parametrize("argv", [["reputation", "list"], ["bounces", "list"]])
def test_state_commands_read_the_installations_store_and_say_which(
    places: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    argv: list[str]
) -> None:
    system, _ = places
    store = tmp_path / "state" / "state.sqlite3"
    sqlite_policy(system, store)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == f"policy: {system}, state: sqlite {store}\n"
    assert store.exists()  # the store it named is the one it opened


def test_a_bad_system_policy_is_one_line_not_a_silent_fallback(
    places: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    system, _ = places
    system.write_text("state:\n  backend: floppy\n")
    assert main(["reputation", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(system) in err and "backend" in err


# ---- the running daemon's note: `trustmilter run` writes it, the commands compare -----------


def test_commands_warn_when_the_running_daemon_uses_another_store(
    places: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run_dir))  # the daemon inherits it
    daemons_store = tmp_path / "daemon" / "state.sqlite3"
    daemons_policy = sqlite_policy(tmp_path / "daemon.yaml", daemons_store)
    system, _ = places
    other_store = tmp_path / "other" / "state.sqlite3"
    sqlite_policy(system, other_store)

    daemon = DaemonProcess.start(daemons_policy, tmp_path / "daemon.log")
    try:
        note = (run_dir / "daemon.json").read_text()
        assert f'"pid": {daemon.process.pid}' in note
        assert f'"policy": "{daemons_policy}"' in note

        # Without --policy: the system file, another store than the daemon's.
        assert main(["reputation", "list"]) == 0
        err = capsys.readouterr().err.splitlines()
        assert err == [
            f"trustmilter: warning: the running daemon (process {daemon.process.pid}) keeps its "
            f"state in sqlite {daemons_store}, not in sqlite {other_store} "
            f"(give --policy {daemons_policy})",
            f"policy: {system}, state: sqlite {other_store}",
        ]
        # With the daemon's policy: the same store, no warning.
        assert main(["bounces", "list", "--policy", str(daemons_policy)]) == 0
        assert capsys.readouterr().err == (
            f"policy: {daemons_policy}, state: sqlite {daemons_store}\n")

        # A second `trustmilter run` leaves the first one's note alone, also when it stops.
        second = DaemonProcess.start(sqlite_policy(tmp_path / "second.yaml", other_store),
                                     tmp_path / "second.log")
        second.stop()
        assert f'"pid": {daemon.process.pid}' in (run_dir / "daemon.json").read_text()
    finally:
        daemon.stop()
    assert not (run_dir / "daemon.json").exists()  # removed at exit
    assert main(["reputation", "list"]) == 0
    assert "warning" not in capsys.readouterr().err
