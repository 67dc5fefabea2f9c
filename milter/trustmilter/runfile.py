"""The running daemon's note of what it uses: ``/run/trustmilter/daemon.json``.

`trustmilter run` writes it at start and removes it at exit. The
administrator's commands (quarantine, reputation, bounces) read it to warn
when they are about to open another state store than the daemon's: the
mistake of a command run without ``--policy`` on a host whose daemon was
started with one, which reads an empty store and reports nothing learned.

The directory is systemd's RuntimeDirectory: ``$RUNTIME_DIRECTORY`` under
the unit (systemd sets it), else ``/run/trustmilter``, made if missing and
allowed. Nothing here is a lock: a second `trustmilter run` leaves the
note of a live first one alone, and a note whose process is gone is
ignored (and replaced by the next daemon).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from trustmilter.config.state import StateConfig

DEFAULT_RUNTIME_DIR = Path("/run/trustmilter")
NOTE_NAME = "daemon.json"


@dataclass(frozen=True, slots=True)
class DaemonNote:
    """What a running `trustmilter run` process uses."""

    pid: int
    policy: str | None  # absolute path; None: the built-in defaults
    state: str  # describe_state() of its state store


def runtime_directory(environ: Mapping[str, str]) -> Path:
    """Where the note lives: the first of systemd's ``$RUNTIME_DIRECTORY``, else the default."""
    first = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(first) if first else DEFAULT_RUNTIME_DIR


def describe_state(config: StateConfig) -> str:
    """The store `config` names, in words two processes can compare (no password)."""
    if config.backend == "sqlite":
        return f"sqlite {os.path.normpath(config.sqlite_path)}"
    if config.backend == "redis":
        parts = urlsplit(config.redis_url)
        host = parts.netloc.rpartition("@")[2]
        return f"redis {urlunsplit(parts._replace(netloc=host))} prefix {config.key_prefix}"
    return "memory (inside the daemon's processes)"


def read_note(directory: Path) -> DaemonNote | None:
    """The note of a live daemon in `directory`; None if absent, unreadable or stale."""
    try:
        data = json.loads((directory / NOTE_NAME).read_text(encoding="utf-8"))
        note = DaemonNote(int(data["pid"]), data["policy"], str(data["state"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if note.policy is not None and not isinstance(note.policy, str):
        return None
    return note if _is_trustmilter(note.pid) else None


@contextlib.contextmanager
def noted(directory: Path, note: DaemonNote) -> Iterator[bool]:
    """Write `note` for the life of the block (True if written); remove it after.

    Not written when a live daemon's note is there already. The note is
    advice for the commands, so a directory we may not write is no reason
    to refuse to start: the block runs all the same.
    """
    written = _write(directory, note)
    try:
        yield written
    finally:
        if written:
            _remove_if_ours(directory, note.pid)


def _write(directory: Path, note: DaemonNote) -> bool:
    if read_note(directory) is not None:
        return False
    try:
        directory.mkdir(mode=0o755, exist_ok=True)
        partial = directory / f".{NOTE_NAME}.{note.pid}"
        partial.write_text(json.dumps(asdict(note)) + "\n", encoding="utf-8")
        # Readable by all: it names files, no secret (describe_state drops passwords).
        partial.chmod(0o644)
        partial.replace(directory / NOTE_NAME)  # a reader sees the old note or the new one
    except OSError:
        return False
    return True


def _remove_if_ours(directory: Path, pid: int) -> None:
    path = directory / NOTE_NAME
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _is_trustmilter(pid: int) -> bool:
    """True while `pid` runs trustmilter (a recycled PID running anything else is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's (the daemon runs as its own user)
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask: trust the signal test
    # Empty for a moment while a process execs: nothing to tell, trust the signal test.
    return not command_line or b"trustmilter" in command_line
