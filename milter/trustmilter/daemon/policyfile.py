"""Reading the policy file in the daemon: never blocked, never starved, bounded.

Three things went wrong when the daemon read its policy with a plain
``open()`` and parsed it in the serving process:

- A FIFO (or a device) at the policy path blocked ``open()`` for good: the
  reload thread hung with no log line and no later reload was acted on.
  So the path must name a regular file (after symlinks), checked before
  opening, and the file is opened with O_NONBLOCK and checked again, so
  one swapped in between cannot block either.
- A huge file took many seconds of CPU to parse while holding the GIL, so
  the threads answering the MTA (the SQLite writer among them) starved
  past their timeouts and mail was tempfailed. So a file larger than
  `MAX_POLICY_BYTES` is refused unread, and on reload the text is parsed
  in a child process (`load_policy_off_path`) at a lower CPU priority,
  killed after `PARSE_SECONDS`; the serving process only unpickles the
  finished settings.
- Every failure is one line (`PolicyUnusable`), naming the file.

Start-up parses in process (`load_policy`): nothing is served yet.
The child is this module run as ``python -m trustmilter.daemon.policyfile
SOURCE``: the policy bytes on its standard input, a pickled ``("ok",
Settings)`` or ``("refused", message)`` on its standard output. The pickle
comes from our own code in our own child, never from the file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import stat
import subprocess
import sys

from trustmilter.config.load import ConfigError, parse_settings
from trustmilter.config.settings import Settings

# 40 times the shipped policy.yaml (about 50 KB), room for ~20,000 rules;
# a file this size parses in seconds, one a hundred times larger took
# minutes and hundreds of MB.
MAX_POLICY_BYTES = 2 * 1024 * 1024
# A reload's parse (off the serving path) may take this long, then it is refused.
PARSE_SECONDS = 30.0
# The parse yields the CPU to the serving processes (nice(2) increment).
PARSE_NICENESS = 10


class PolicyUnusable(Exception):
    """The policy file cannot be used; str() is one line naming it."""


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_unless_regular(source: str, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise PolicyUnusable(f"{source}: is {_kind(status.st_mode)}, not a regular file")
    if status.st_size > MAX_POLICY_BYTES:
        raise PolicyUnusable(f"{source}: {status.st_size} bytes, more than a policy may have"
                             f" ({MAX_POLICY_BYTES} bytes)")


def read_policy_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes if it is a regular file of at most MAX_POLICY_BYTES;
    else PolicyUnusable. Never blocks on a FIFO or a device."""
    source = os.fspath(path)
    try:
        _refuse_unless_regular(source, os.stat(source))  # before opening: a FIFO blocks open()
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise PolicyUnusable(f"{source}: cannot read policy: {error.strerror}") from error
    try:
        _refuse_unless_regular(source, os.fstat(fd))  # the file we opened, whatever came since
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_POLICY_BYTES + 1)
    except OSError as error:
        raise PolicyUnusable(f"{source}: cannot read policy: {error.strerror}") from error
    finally:
        os.close(fd)
    if len(data) > MAX_POLICY_BYTES:  # it grew since fstat
        raise PolicyUnusable(f"{source}: more than a policy may have ({MAX_POLICY_BYTES} bytes)")
    return data


def parse_policy_bytes(data: bytes, source: str) -> Settings:
    """Settings from the file's bytes; PolicyUnusable with load.py's one-line message."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:  # worded as load_settings words it
        line = data[: error.start].count(b"\n") + 1
        raise PolicyUnusable(
            str(ConfigError(source, line, (), "expected UTF-8 text, got invalid bytes"))
        ) from None
    try:
        return parse_settings(text, source)
    except ConfigError as error:
        raise PolicyUnusable(str(error)) from error


def load_policy(path: str | os.PathLike[str]) -> Settings:
    """The policy at `path`, parsed in this process (start-up); PolicyUnusable."""
    return parse_policy_bytes(read_policy_bytes(path), os.fspath(path))


def load_policy_off_path(path: str | os.PathLike[str], timeout: float = PARSE_SECONDS) -> Settings:
    """The policy at `path`, parsed in a child process within `timeout` seconds
    (a reload, while this process serves mail); PolicyUnusable."""
    source = os.fspath(path)
    data = read_policy_bytes(source)
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, source], input=data, capture_output=True,
            timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed it
        raise PolicyUnusable(f"{source}: parsing took longer than {timeout:g} s") from None
    except OSError as error:
        raise PolicyUnusable(f"{source}: cannot start the policy parser: {error}") from error
    try:
        outcome, value = pickle.loads(done.stdout)
    except Exception:  # it died (the OOM killer, a signal): say how, in one line
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [
            f"exit status {done.returncode}"]
        raise PolicyUnusable(f"{source}: the policy parser failed: {last[0]}") from None
    if outcome != "ok" or not isinstance(value, Settings):
        raise PolicyUnusable(str(value))
    return value


def _child(source: str) -> int:
    """The parse, in the child: bytes on stdin, the pickled outcome on stdout."""
    # Started from the milter process, where SIGTERM and friends are blocked
    # for libmilter: a stop of the process group must stop us too.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # The unit's SystemCallFilter (~@resources) may refuse setpriority(2):
    # then the parse still runs, in its own process.
    with contextlib.suppress(OSError):
        os.nice(PARSE_NICENESS)
    outcome: tuple[str, object]
    try:
        outcome = ("ok", parse_policy_bytes(sys.stdin.buffer.read(), source))
    except PolicyUnusable as error:
        outcome = ("refused", str(error))
    sys.stdout.buffer.write(pickle.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
