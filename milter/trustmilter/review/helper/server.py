"""The privileged helper: the one process of the review page that runs as root.

NAME
    server - answer list, show, release and delete on Postfix's hold queue

DESCRIPTION
    Postfix's queue tools (postqueue -j, postcat, postsuper) need root; the
    page that serves HTTP must not have it. So the page asks this process,
    over a unix socket, and this process does exactly four things
    (protocol.py) and nothing else:

    - The socket is mode 0660, owned by root and the primary group of the
      page's user (review.user); its directory, made here when missing,
      0750 root:that group. A directory someone other than root could write
      to is refused: its socket could be swapped under the page.
    - For each connection the kernel's SO_PEERCRED names the peer; only
      uid 0 and review.user's uid are answered, whatever the file modes.
    - One request line, read within `IO_SECONDS`, at most
      protocol.MAX_REQUEST_BYTES; one answer; the connection ends.
    - Every queue ID is checked twice before any postcat or postsuper: its
      syntax (protocol.py) and its presence in the hold queue (postqueue -j:
      at that moment for release and delete; for show, as listed at most
      `SHOW_LISTING_SECONDS` ago, so that the page reading a list of N held
      messages costs N postcat runs, not N listings of the whole queue too).
      Release is ``postsuper -H`` (which acts on the hold queue only),
      delete is ``postsuper -d ID hold``: a message that is not held is
      never touched. The tools run as argv lists (postfix.py), never
      through a shell.
    - One log line per request: the peer's uid and pid, what it asked, and
      the outcome. An error is a refusal answer and that one line, never a
      traceback, and the helper goes on.

    Requests are answered one at a time, in the order they come: the page
    sends few, and two postsuper runs never race each other. SIGTERM (and
    SIGINT) end the loop after the request in hand (`HelperServer.stop`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import struct
import time
from dataclasses import dataclass

from trustmilter.daemon.listen import UnixSocketClaim
from trustmilter.quarantine.postfix import InvalidQueueId, PostfixCommandError, PostfixQueue
from trustmilter.review.helper.protocol import (
    INVALID_QUEUE_ID,
    MAX_REQUEST_BYTES,
    REFUSED,
    ProtocolError,
    Request,
    decode_request,
    entry_json,
    ok_answer,
    one_line,
    refusal_answer,
    to_base64,
)
from trustmilter.startup import ServeError

log = logging.getLogger("trustmilter.review.helper")

# Seconds a peer has to send its request, and again to take the answer.
IO_SECONDS = 10.0
# How old the hold-queue listing that admits a `show` may be (see above).
SHOW_LISTING_SECONDS = 2.0
SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750
BACKLOG = 16
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (socket(7))


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end, as the kernel names it."""

    pid: int
    uid: int
    gid: int


def peer_of(connection: socket.socket) -> Peer:
    """The peer's credentials (SO_PEERCRED: taken at connect, not claimed by it)."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Peer(pid, uid, gid)


def bind_socket(path: str, group: int) -> tuple[socket.socket, UnixSocketClaim]:
    """The listening socket at `path` (0660 root:`group`), and its claim, which
    removes it at the stop only if it is still ours (daemon/listen.py).

    ServeError when the directory is unsafe or cannot be made, when `path`
    is not a socket, or when another process serves it (never taken over);
    a stale socket nobody answers on is replaced.
    """
    what = f"review.helper_socket {path}"
    _directory(os.path.dirname(path), group, what)
    claim = UnixSocketClaim.take(path, "review.helper_socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Bound at a private name and linked into place only once its owner
        # and mode are right: nobody ever sees the socket with other rights.
        listener.bind(claim.private_path)
        os.chown(claim.private_path, 0, group)
        os.chmod(claim.private_path, SOCKET_MODE)
        listener.listen(BACKLOG)
        claim.install()
    except OSError as error:
        listener.close()
        claim.release()
        raise ServeError(f"{what}: cannot listen: {error.strerror}") from error
    except ServeError:
        listener.close()
        claim.release()
        raise
    return listener, claim


def _directory(directory: str, group: int, what: str) -> None:
    """Make `directory` 0750 root:`group` if it is missing; refuse one that a
    user other than root could write to."""
    try:
        os.mkdir(directory, DIRECTORY_MODE)
    except FileExistsError:
        pass
    except OSError as error:
        raise ServeError(f"{what}: cannot make the directory {directory}:"
                         f" {error.strerror}") from error
    else:
        try:
            os.chown(directory, 0, group)
            os.chmod(directory, DIRECTORY_MODE)  # mkdir's mode passed through the umask
        except OSError as error:
            raise ServeError(f"{what}: cannot give the directory {directory} to root:{group}:"
                             f" {error.strerror}") from error
        log.info("made the directory %s (root:%d, %o)", directory, group, DIRECTORY_MODE)
    try:
        status = os.stat(directory)
    except OSError as error:
        raise ServeError(f"{what}: {directory}: {error.strerror}") from error
    if not stat.S_ISDIR(status.st_mode):
        raise ServeError(f"{what}: {directory} is not a directory")
    if status.st_uid != 0 or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ServeError(f"{what}: the directory {directory} is writable by others than root"
                         " (the socket could be swapped there); choose one only root can write")


class HelperServer:
    """Answers the requests of root and of one user (`allowed_uid`) on `queue`."""

    def __init__(self, queue: PostfixQueue, allowed_uid: int, io_seconds: float = IO_SECONDS):
        self._queue = queue
        self._allowed = frozenset({0, allowed_uid})
        self._io_seconds = io_seconds
        self._stopping = False
        self._listed: tuple[float, frozenset[str]] = (-SHOW_LISTING_SECONDS, frozenset())
        # stop() wakes the select() of serve() through this pipe (a signal
        # handler's flag alone would wait for the next connection).
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def stop(self) -> None:
        """End `serve` after the request in hand; safe in a signal handler."""
        self._stopping = True
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes it already
            os.write(self._wake_write, b"x")

    def close(self) -> None:
        os.close(self._wake_read)
        os.close(self._wake_write)

    def serve(self, listener: socket.socket) -> None:
        """Answer connections on `listener`, one at a time, until `stop`."""
        listener.setblocking(False)
        while not self._stopping:
            ready, _, _ = select.select([listener.fileno(), self._wake_read], [], [])
            if self._stopping:
                break
            if listener.fileno() in ready:
                try:
                    connection, _ = listener.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue  # the peer left before we took it
                except OSError as error:
                    log.error("cannot accept a connection: %s", error.strerror)
                    continue
                with connection:
                    try:
                        self.handle(connection)
                    except Exception as error:  # one line, and the helper goes on
                        log.error("connection failed: %s: %s", type(error).__name__,
                                  one_line(str(error)))

    def handle(self, connection: socket.socket) -> None:
        """One connection: check the peer, read its request, answer, log one line."""
        peer = peer_of(connection)
        asked = "-"
        if peer.uid not in self._allowed:
            answer = refusal_answer(REFUSED, f"uid {peer.uid} may not use the helper")
            outcome = "refused: not an allowed user"
        else:
            asked, answer, outcome = self._answer(connection)
        try:
            connection.settimeout(self._io_seconds)
            connection.sendall(answer)
        except OSError as error:
            outcome += f"; answer not sent: {error.strerror or 'timed out'}"
        log.info("peer uid=%d pid=%d: %s: %s", peer.uid, peer.pid, asked, outcome)

    def _answer(self, connection: socket.socket) -> tuple[str, bytes, str]:
        """(what was asked, the answer, the outcome for the log)."""
        asked = "-"
        try:
            request = decode_request(self._read_request(connection))
            asked = request.describe()
            answer, done = self._do(request)
            return asked, answer, done
        except ProtocolError as error:
            kind, text = error.kind, str(error)
        except InvalidQueueId as error:  # raised before any tool ran
            kind, text = INVALID_QUEUE_ID, str(error)
        except PostfixCommandError as error:
            kind, text = REFUSED, str(error)
        except Exception as error:  # a refusal and the log line, never a traceback
            answer = refusal_answer(REFUSED, "internal error (see the helper's log)")
            detail = f"{type(error).__name__}: {one_line(str(error))}"
            return asked, answer, f"refused: internal error: {detail}"
        return asked, refusal_answer(kind, text), f"refused: {one_line(text)}"

    def _read_request(self, connection: socket.socket) -> bytes:
        """The request line, within `io_seconds` and MAX_REQUEST_BYTES."""
        deadline = time.monotonic() + self._io_seconds
        data = b""
        while b"\n" not in data:
            if len(data) > MAX_REQUEST_BYTES:
                raise ProtocolError(f"request longer than {MAX_REQUEST_BYTES} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no complete request within {self._io_seconds:g}s")
            connection.settimeout(left)
            try:
                chunk = connection.recv(MAX_REQUEST_BYTES + 1 - len(data))
            except TimeoutError:
                raise ProtocolError(f"no complete request within {self._io_seconds:g}s") from None
            if not chunk:
                raise ProtocolError("the connection ended before the request's newline")
            data += chunk
        line, _, rest = data.partition(b"\n")
        if rest:
            raise ProtocolError("one request per connection (bytes after the newline)")
        return line + b"\n"

    def _held_ids(self, fresh: bool) -> frozenset[str]:
        """The held queue IDs: listed now, or (not `fresh`) as listed at most
        SHOW_LISTING_SECONDS ago."""
        listed_at, ids = self._listed
        if fresh or time.monotonic() - listed_at > SHOW_LISTING_SECONDS:
            ids = frozenset(entry.queue_id for entry in self._queue.held())
            self._listed = (time.monotonic(), ids)
        return ids

    def _do(self, request: Request) -> tuple[bytes, str]:
        """Run `request` on the queue: (the answer, the outcome for the log)."""
        if request.command == "list":
            held = self._queue.held()
            self._listed = (time.monotonic(), frozenset(entry.queue_id for entry in held))
            return ok_answer(held=[entry_json(entry) for entry in held]), f"ok, {len(held)} held"
        queue_id = request.queue_id
        # In the hold queue, not merely well formed: nothing else in
        # Postfix's queue is the help desk's to read or change.
        fresh = request.command != "show"
        if queue_id not in self._held_ids(fresh) and (
                fresh or queue_id not in self._held_ids(fresh=True)):
            raise PostfixCommandError(f"{queue_id}: not in the hold queue")
        if request.command == "show" and request.part == "headers":
            stored = self._queue.read(queue_id)
            return ok_answer(sender=stored.sender, headers=to_base64(stored.headers)), "ok"
        if request.command == "show":
            data, more = self._queue.read_message(queue_id, request.limit)
            return (ok_answer(message=to_base64(data), more=more),
                    f"ok, {len(data)} bytes{' (more left)' if more else ''}")
        if request.command == "release":
            self._queue.release(queue_id)
            return ok_answer(), "ok, released"
        if request.command == "delete":
            self._queue.delete(queue_id)
            return ok_answer(), "ok, deleted"
        raise ProtocolError(f"unknown command {request.command!r}")  # decode_request allows none
