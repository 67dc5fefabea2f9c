"""The daemon's note in /run/trustmilter (runfile.py): written, read, never clobbered.

Pure parts (the store in words, the directory from the environment) are
plain unit tests; liveness uses real processes: a stale note names a
process that has ended, a recycled PID runs something that is not
trustmilter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmilter.config.state import StateConfig
from trustmilter.runfile import (
    DEFAULT_RUNTIME_DIR,
    NOTE_NAME,
    DaemonNote,
    describe_state,
    noted,
    read_note,
    runtime_directory,
)


def started(argv: list[str]) -> subprocess.Popen[bytes]:
    """`argv` running, once its command line shows (it is empty while the process execs)."""
    process = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{process.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, argv
        time.sleep(0.01)
    return process


@pytest.fixture
def trustmilter_like() -> Iterator[int]:
    """A live process whose command line names trustmilter, as `trustmilter run`'s does."""
    process = started([sys.executable, "-c", "import time; time.sleep(60)", "trustmilter", "run"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write(directory: Path, pid: int, state: str = "sqlite /var/lib/x.sqlite3") -> None:
    (directory / NOTE_NAME).write_text(json.dumps({"pid": pid, "policy": None, "state": state}))


# ---- the store in words ---------------------------------------------------------


def test_sqlite_is_named_by_its_normalised_path() -> None:
    config = StateConfig(sqlite_path="/var/lib/trustmilter/../trustmilter/state.sqlite3")
    assert describe_state(config) == "sqlite /var/lib/trustmilter/state.sqlite3"


def test_redis_is_named_without_its_password() -> None:
    config = StateConfig(backend="redis", redis_url="redis://:s3cret@127.0.0.1:6380/2",
                         key_prefix="mx1:")
    assert describe_state(config) == "redis redis://127.0.0.1:6380/2 prefix mx1:"


def test_memory_says_it_is_the_daemons_own() -> None:
    assert describe_state(StateConfig(backend="memory")).startswith("memory")


@pytest.mark.parametrize("environ, expected", [
    ({}, DEFAULT_RUNTIME_DIR),
    ({"RUNTIME_DIRECTORY": ""}, DEFAULT_RUNTIME_DIR),
    ({"RUNTIME_DIRECTORY": "/run/tm"}, Path("/run/tm")),
    ({"RUNTIME_DIRECTORY": "/run/tm:/run/other"}, Path("/run/tm")),  # systemd: several
])
def test_the_directory_is_systemds_runtime_directory(environ: dict[str, str],
                                                     expected: Path) -> None:
    assert runtime_directory(environ) == expected


# ---- reading ----------------------------------------------------------------------


def test_a_live_daemons_note_is_read(tmp_path: Path, trustmilter_like: int) -> None:
    write(tmp_path, trustmilter_like)
    assert read_note(tmp_path) == DaemonNote(trustmilter_like, None, "sqlite /var/lib/x.sqlite3")


def test_a_note_whose_process_ended_is_ignored(tmp_path: Path, ended_pid: int) -> None:
    write(tmp_path, ended_pid)
    assert read_note(tmp_path) is None


def test_a_recycled_pid_running_something_else_is_ignored(tmp_path: Path) -> None:
    other = started(["sleep", "60"])
    try:
        write(tmp_path, other.pid)
        assert read_note(tmp_path) is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("text", ["", "{", "[]", '{"pid": "x", "policy": null, "state": "s"}',
                                  '{"pid": 1}', '{"pid": 1, "policy": 5, "state": "s"}'])
def test_a_damaged_note_is_ignored(tmp_path: Path, text: str) -> None:
    (tmp_path / NOTE_NAME).write_text(text)
    assert read_note(tmp_path) is None


def test_no_directory_no_note(tmp_path: Path) -> None:
    assert read_note(tmp_path / "missing") is None


# ---- writing ------------------------------------------------------------------------


def test_the_note_lives_as_long_as_the_block(tmp_path: Path, trustmilter_like: int) -> None:
    directory = tmp_path / "run"  # made when missing
    note = DaemonNote(trustmilter_like, "/etc/trustmilter/policy.yaml", "sqlite /s.sqlite3")
    with noted(directory, note) as written:
        assert written
        assert read_note(directory) == note
        assert (directory / NOTE_NAME).stat().st_mode & 0o777 == 0o644
    assert not (directory / NOTE_NAME).exists()
    assert list(directory.iterdir()) == []  # no partial file left either


def test_a_second_daemon_leaves_the_first_ones_note_alone(
    tmp_path: Path, trustmilter_like: int
) -> None:
    write(tmp_path, trustmilter_like, "sqlite /first.sqlite3")
    second = DaemonNote(trustmilter_like + 100000, None, "sqlite /second.sqlite3")
    with noted(tmp_path, second) as written:
        assert not written
        assert read_note(tmp_path).state == "sqlite /first.sqlite3"  # type: ignore[union-attr]
    assert read_note(tmp_path).state == "sqlite /first.sqlite3"  # type: ignore[union-attr]


def test_a_stale_note_is_replaced(tmp_path: Path, ended_pid: int, trustmilter_like: int) -> None:
    write(tmp_path, ended_pid, "sqlite /old.sqlite3")
    note = DaemonNote(trustmilter_like, None, "sqlite /new.sqlite3")
    with noted(tmp_path, note) as written:
        assert written
        assert read_note(tmp_path) == note


def test_an_unwritable_directory_does_not_stop_the_daemon(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    ran = False
    with noted(blocker / "run", DaemonNote(1, None, "memory")) as written:
        ran = True
        assert not written
    assert ran
