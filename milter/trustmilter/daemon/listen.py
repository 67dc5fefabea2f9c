"""Taking the milter's socket and the metrics port safely, or refusing in one line.

libmilter, asked to listen on a unix socket, removes whatever socket is at
the path first, and at a clean stop (as a user other than root) removes
whatever socket is at the path then. So a second ``trustmilter run`` on a
live daemon's socket took the path over, and at its stop removed it: the
MTA could no longer reach the first daemon, which kept running and logged
nothing. Here:

- `UnixSocketClaim.take` connects to the path first. Something answers:
  another process serves it, and we refuse (`EXIT_RUNTIME`). Nothing
  answers (ECONNREFUSED: the file of a daemon that is gone): the stale
  file is removed, and said so. Something that is not a socket: refused
  (`EXIT_CONFIG`), never removed.
- libmilter binds at a private name in the same directory
  (``.trustmilter-PID.new``);
  `install` then hard-links that socket to the path — link(2) fails if the
  path exists, so of two instances starting at once only one gets it — and
  removes the private name. libmilter's stop finds nothing at its name and
  removes nothing.
- `release` removes the path at our stop only if it is still our socket
  (same device and inode as the one we linked): a path another process
  has taken since is left alone.

A TCP port in use (the milter's inet socket or metrics.listen) is found
by binding it first (`refuse_if_taken`) with the options libmilter and the
HTTP server use, so the one line names the port and the reason instead of
libmilter's "cannot opensocket" or a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass

from trustmilter.startup import EXIT_RUNTIME, ServeError

log = logging.getLogger("trustmilter")

# How long to wait for a process behind the socket to accept our probe.
PROBE_SECONDS = 2.0


@dataclass
class UnixSocketClaim:
    """The unix socket path we listen on, held so that only we remove it."""

    path: str
    owner: int  # the pid that took it: forked workers never remove it
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) once installed

    @property
    def private_path(self) -> str:
        """Where libmilter binds; linked to `path` by `install`."""
        return os.path.join(os.path.dirname(self.path), f".trustmilter-{self.owner}.new")

    @classmethod
    def take(cls, path: str, what: str = "milter.socket") -> UnixSocketClaim:
        """Refuse if another process serves `path`; remove a stale socket there.
        `what` names the setting in messages."""
        what = f"{what} unix:{path}"
        directory = os.path.dirname(path) or "/"
        if not os.path.isdir(directory):
            raise ServeError(f"{what}: the directory {directory} does not exist")
        try:
            before = os.lstat(path)
        except FileNotFoundError:
            return cls(path, os.getpid())
        except OSError as error:
            raise ServeError(f"{what}: {error.strerror}") from error
        if not stat.S_ISSOCK(before.st_mode):
            raise ServeError(f"{what}: exists and is not a socket; not removing it")
        if _answers(path, what):
            raise ServeError(f"{what}: another process serves this socket"
                             " (is trustmilter already running?); not taking it over",
                             EXIT_RUNTIME)
        with contextlib.suppress(FileNotFoundError):
            now = os.lstat(path)
            if (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino):
                os.unlink(path)  # the one we probed, not one a process made since
                log.info("removed a stale socket at %s (nothing answered on it)", path)
        return cls(path, os.getpid())

    def install(self) -> None:
        """Put the socket libmilter listens on at `path` (after it bound `private_path`)."""
        try:
            os.link(self.private_path, self.path)
        except FileExistsError:
            raise ServeError(f"unix:{self.path}: another process took this socket while we"
                             " started; not taking it over", EXIT_RUNTIME) from None
        except OSError as error:
            raise ServeError(f"unix:{self.path}: {error.strerror}") from error
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.private_path)
        status = os.lstat(self.path)
        self.identity = (status.st_dev, status.st_ino)

    def release(self) -> None:
        """At our stop: remove `path` if it is still our socket; else leave it."""
        if os.getpid() != self.owner:
            return  # a worker: the first process removes it
        with contextlib.suppress(OSError):
            os.unlink(self.private_path)  # left if start-up failed before install
        if self.identity is None:
            return
        try:
            status = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (status.st_dev, status.st_ino) == self.identity:
            os.unlink(self.path)
        else:
            log.warning("%s is no longer our socket (another process made it since);"
                        " leaving it in place", self.path)


def _answers(path: str, what: str) -> bool:
    """Whether a process accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_SECONDS)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except TimeoutError:
            return True  # its backlog is full: alive, and busy
        except OSError as error:
            if error.errno == errno.EAGAIN:  # backlog full (non-blocking semantics)
                return True
            raise ServeError(f"{what}: cannot tell whether another process serves it:"
                             f" {error.strerror}") from error
        return True


def refuse_if_taken(what: str, host: str, port: int) -> None:
    """ServeError naming `what` if ``host:port`` cannot be bound now."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ServeError(f"{what}: cannot resolve {host}: {error.strerror}") from error
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As libmilter and the HTTP server bind: a port in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ServeError(f"{what}: port {port} is in use by another process",
                                 EXIT_RUNTIME) from error
            raise ServeError(f"{what}: cannot listen on {host} port {port}:"
                             f" {error.strerror}") from error


def listen_failure(what: str, error: BaseException) -> ServeError:
    """libmilter or the HTTP server failed to listen after our own check passed."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return ServeError(f"{what}: cannot listen: {reason}", EXIT_RUNTIME)
