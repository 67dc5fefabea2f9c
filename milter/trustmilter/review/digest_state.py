"""When the last digest went out, kept in review.data_dir, and one digest at a time.

The time is the end of the last digest's window (review/digest.py
`Window`), a whole epoch second in a small file, ``digest.last``. It is
written only after sendmail(1) took the mail: a digest that could not be
handed over leaves it as it was, so the next one lists the same messages
again rather than losing them. The file is replaced atomically (a
temporary file renamed over it), so a crash leaves the old time or the new
one, never half a number. An unreadable file counts as no digest yet: the
next digest lists everything held, twice rather than never.

A lock file (``digest.lock``, flock) keeps a digest started by hand from
running alongside the timer's: both would list and send the same window.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAST_FILE = "digest.last"
LOCK_FILE = "digest.lock"


class DigestBusy(Exception):
    """Another digest holds the lock; one line."""


@dataclass(frozen=True, slots=True)
class LastDigest:
    """What the file says: the end of the last window (None: no digest yet),
    and why it could not be read (None: it could, or there is none)."""

    end: int | None
    problem: str | None = None


def data_directory(path: Path) -> Path:
    """review.data_dir, made (0700: accounts and the session key live there too)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def read_last(data_dir: Path) -> LastDigest:
    path = data_dir / LAST_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return LastDigest(None)
    except (OSError, UnicodeDecodeError) as error:
        return LastDigest(None, f"{path}: unreadable ({error})")
    if not text.isdigit() or len(text) > 12:
        return LastDigest(None, f"{path}: not a time: {text[:40]!r}")
    return LastDigest(int(text))


def write_last(data_dir: Path, end: int) -> None:
    """Record `end` as the last digest's, atomically (0600)."""
    handle, temporary = tempfile.mkstemp(prefix=".digest.", dir=data_dir)
    try:
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(f"{end}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, data_dir / LAST_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def digest_lock(data_dir: Path) -> Iterator[None]:
    """Held while one digest runs; DigestBusy at once if another holds it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DigestBusy(f"another digest is being sent ({data_dir / LOCK_FILE} is "
                             "locked)") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
