"""Postfix's queue tools, run as argv lists: list, read, release, delete.

NAME
    postfix - the hold queue as seen through postqueue, postcat and postsuper

DESCRIPTION
    `PostfixQueue` runs ``postqueue -j`` (every queued message, one JSON
    object per line), ``postcat -ehq ID`` (the envelope records and the
    header section of one queued message), ``postcat -hbq ID`` (the
    message itself, read up to a limit: a held message may be huge),
    ``postsuper -H ID`` (release
    from hold; then ``postqueue -i ID``, so it is delivered now rather than
    at the next queue run) and ``postsuper -d ID hold`` (delete from the
    hold queue, and from no other), each with
    ``-c CONFIG_DIR`` when one is given. There is no
    shell: every command is an argv list, and the only value from outside
    that ever reaches a command line is a queue ID, after `valid_queue_id`
    accepted it. That matters because postsuper reads ``ALL`` and ``-``
    (standard input) as special IDs, and an option-looking ID would be an
    option: neither can pass the syntax check.

    Nothing here decides what a message means; review.py does.

DIAGNOSTICS
    `PostfixCommandError`: a tool is missing, timed out, exited non-zero,
    printed what we cannot read, or did not report doing what was asked
    (the message left the queue in between). `InvalidQueueId`: the text is
    not a Postfix queue ID. Both carry one line fit for a terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Debian installs the queue tools in /usr/sbin, which a user's PATH may lack.
SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_TIMEOUT = 30.0  # seconds for one Postfix command

# Postfix's two queue-ID shapes (global/mail_queue.h):
# - short: hex, five digits of microseconds then the inode number in hex;
# - long (enable_long_queue_ids): seconds and microseconds in a 52-character
#   "safe" alphabet (digits, consonants; six or more and exactly four
#   characters), 'z', then the inode number in base 51 (the alphabet minus 'z').
_SAFE = "0-9BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_SAFE_NO_Z = "0-9BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxy"
_SHORT_ID = re.compile(r"[0-9A-F]{6,32}\Z")
_LONG_ID = re.compile(rf"[{_SAFE}]{{10,32}}z[{_SAFE_NO_Z}]{{1,16}}\Z")

HOLD = "hold"


class PostfixCommandError(Exception):
    """A Postfix command failed; the message is one line, with Postfix's own words."""


class InvalidQueueId(ValueError):
    """Not a Postfix queue ID (so it never reaches a command line)."""


def valid_queue_id(text: str) -> bool:
    """True if `text` has the syntax of a Postfix queue ID, short or long."""
    return bool(_SHORT_ID.match(text) or _LONG_ID.match(text))


def checked_queue_id(text: str) -> str:
    """`text` if it is a queue ID; InvalidQueueId otherwise."""
    if not valid_queue_id(text):
        raise InvalidQueueId(f"not a Postfix queue ID: {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One queued message as ``postqueue -j`` describes it."""

    queue_id: str
    queue_name: str  # hold, deferred, active, incoming, maildrop
    arrival_time: float  # epoch seconds
    size: int
    sender: str  # '' for the null sender
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueueFile:
    """What `PostfixQueue.read` takes from a queue file."""

    sender: str  # the envelope sender; '' for the null sender (RFC 5321 §4.5.5)
    headers: bytes  # the header section as stored, Postfix's Received on top


class PostfixQueue:
    """The queue of the Postfix whose main.cf is in `config_dir` (None: the default one)."""

    def __init__(self, config_dir: Path | None = None, timeout: float = COMMAND_TIMEOUT) -> None:
        self.config_dir = config_dir
        self.timeout = timeout

    def entries(self) -> list[QueueEntry]:
        """Every queued message, in whatever queue (``postqueue -j``)."""
        out = self._run("postqueue", "-j")
        entries = []
        for line in out.splitlines():
            if not line.strip():
                continue
            try:
                entries.append(_entry(json.loads(line)))
            except (ValueError, KeyError, TypeError) as error:
                raise PostfixCommandError(
                    f"postqueue -j: unreadable line {line[:80]!r}: {error}"
                ) from error
        return entries

    def held(self) -> list[QueueEntry]:
        """The messages in the hold queue, oldest first."""
        held = [entry for entry in self.entries() if entry.queue_name == HOLD]
        return sorted(held, key=lambda e: (e.arrival_time, e.queue_id))

    def read(self, queue_id: str) -> QueueFile:
        """The envelope sender and header section of a queued message (``postcat -ehq``)."""
        # -e: the envelope records, for the sender exactly as stored (postqueue
        # shows the null sender as MAILER-DAEMON); -h: the header section.
        return _queue_file(self._run_bytes("postcat", "-ehq", checked_queue_id(queue_id)))

    def read_message(self, queue_id: str, limit: int) -> tuple[bytes, bool]:
        """The header and body of a queued message (``postcat -hbq``), its first
        `limit` bytes; and whether there was more (then postcat is stopped)."""
        argv = self._argv("postcat", "-hbq", checked_queue_id(queue_id))
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=_env())
        except FileNotFoundError as error:
            raise PostfixCommandError("postcat: not found (is Postfix installed?)") from error
        with process:
            data, more = self._read_bounded(process, limit)
            if more:
                process.kill()
            _, errors = process.communicate(timeout=self.timeout)
        if not more and process.returncode != 0:
            done = subprocess.CompletedProcess(argv, process.returncode, b"", errors)
            raise PostfixCommandError(f"{' '.join(_short(argv))}: {_last_line(done)}")
        return data[:limit], more

    def _read_bounded(self, process: subprocess.Popen[bytes], limit: int) -> tuple[bytes, bool]:
        """Up to `limit` bytes of the process's output (and whether it had more),
        within the command timeout."""
        assert process.stdout is not None
        stream = process.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            left = deadline - time.monotonic()
            if left <= 0:
                process.kill()
                raise PostfixCommandError(f"postcat: no answer after {self.timeout:g}s")
            ready, _, _ = select.select([stream], [], [], left)
            if not ready:
                continue
            chunk = os.read(stream, 65536)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), True

    def release(self, queue_id: str) -> None:
        """Release a held message (``postsuper -H``) and ask for its delivery now."""
        self._super("-H", queue_id, "released from hold")
        # postsuper -H puts it in the deferred queue, scanned every
        # queue_run_delay (300 s by default): ask for delivery now. Only a
        # wish — if the flush service cannot take it, the next scan does.
        with contextlib.suppress(PostfixCommandError):
            self._complete("postqueue", "-i", queue_id)

    def delete(self, queue_id: str) -> None:
        """Delete a held message (``postsuper -d ID hold``).

        Only from the hold queue: postsuper -d alone also looks in the
        incoming, active and deferred queues, so a message released since
        it was checked (or a reused queue ID) would be deleted instead.
        """
        self._super("-d", queue_id, "removed", HOLD)

    # ---- internals -------------------------------------------------------

    def _super(self, option: str, queue_id: str, done: str, *queues: str) -> None:
        """postsuper OPTION ID [QUEUE...]; it exits 0 even for an ID it did not
        find, so its per-message line ("ID: released from hold", "ID:
        removed") is what tells us it happened."""
        queue_id = checked_queue_id(queue_id)
        completed = self._complete("postsuper", option, queue_id, *queues)
        if f"{queue_id}: {done}" not in completed.stderr.decode(errors="replace"):
            raise PostfixCommandError(f"postsuper {option} {queue_id}: no such queued message")

    def _argv(self, tool: str, *args: str) -> list[str]:
        config = ["-c", str(self.config_dir)] if self.config_dir is not None else []
        return [tool, *config, *args]

    def _run(self, tool: str, *args: str) -> str:
        return self._run_bytes(tool, *args).decode("utf-8", errors="replace")

    def _run_bytes(self, tool: str, *args: str) -> bytes:
        return self._complete(tool, *args).stdout

    def _complete(self, tool: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        argv = self._argv(tool, *args)
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=_env(),
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as error:
            raise PostfixCommandError(f"{tool}: not found (is Postfix installed?)") from error
        except subprocess.TimeoutExpired as error:
            raise PostfixCommandError(f"{tool}: no answer after {self.timeout:g}s") from error
        if done.returncode != 0:
            raise PostfixCommandError(f"{' '.join(_short(argv))}: {_last_line(done)}")
        return done


def _entry(data: Any) -> QueueEntry:
    """A QueueEntry from one parsed ``postqueue -j`` line (KeyError, TypeError,
    ValueError when a field is missing or of the wrong kind)."""
    return QueueEntry(
        queue_id=str(data["queue_id"]),
        queue_name=str(data["queue_name"]),
        arrival_time=float(data["arrival_time"]),
        size=int(data.get("message_size", 0)),
        sender=str(data.get("sender", "")),
        recipients=tuple(str(r["address"]) for r in data.get("recipients") or ()),
    )


def _queue_file(out: bytes) -> QueueFile:
    """Parse postcat's sections, each opened by a line ``*** NAME queue/ID ***``.

    A header line cannot start with "*** " (it starts with a field name or,
    folded, with white space), so the labels cannot be forged by the message.
    """
    section = b""
    sender: str | None = None
    headers: list[bytes] = []
    for line in out.splitlines(keepends=True):
        if line.startswith(b"*** ") and line.rstrip().endswith(b" ***"):
            section = line[4:].rsplit(b" ", 2)[0]
        elif section == b"ENVELOPE RECORDS" and line.startswith(b"sender:") and sender is None:
            sender = line[len(b"sender:"):].strip().decode("utf-8", errors="replace")
        elif section == b"MESSAGE CONTENTS":
            headers.append(line)
    if sender is None:
        raise PostfixCommandError("postcat: no envelope sender record in its output")
    return QueueFile(sender, b"".join(headers))


def _env() -> dict[str, str]:
    """Our environment with the sbin directories on PATH and without
    MAIL_CONFIG (it would override ``-c``)."""
    env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
    env["PATH"] = SBIN_PATH + ":" + env.get("PATH", "")
    return env


def _short(argv: Sequence[str]) -> list[str]:
    """argv without ``-c DIR``, for a shorter error line."""
    out = list(argv)
    if len(out) > 2 and out[1] == "-c":
        del out[1:3]
    return out


def _last_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """Postfix's own complaint: the last line it printed (its fatal: line)."""
    text = (done.stderr or done.stdout).decode(errors="replace").strip()
    lines = text.splitlines()
    return lines[-1] if lines else f"exited {done.returncode}"
