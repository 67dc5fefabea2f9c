"""The review page's side of the privileged helper: the hold queue over its socket.

`HelperQueue` has the methods and errors of `PostfixQueue` that
`QuarantineReview` uses (quarantine/queue.py `HoldQueue`), so the review
works the same on either: each call is one connection to the helper
(server.py), one request, one answer. A refusal becomes the error
PostfixQueue would raise, with the helper's own words: `InvalidQueueId`
for text that is not a queue ID (checked here first, so it is never
sent), `PostfixCommandError` for everything else, one line each. A helper
that is not running is one line naming its socket and how to start it.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from trustmilter.quarantine.postfix import (
    InvalidQueueId,
    PostfixCommandError,
    QueueEntry,
    QueueFile,
    checked_queue_id,
)
from trustmilter.review.helper.protocol import (
    INVALID_QUEUE_ID,
    ProtocolError,
    Refusal,
    Request,
    decode_answer,
    encode_request,
    entry_from_json,
    from_base64,
)

if TYPE_CHECKING:
    from trustmilter.config.settings import Settings
    from trustmilter.quarantine.queue import HoldQueue

# The helper is root and trusted; this bound only stops a runaway answer.
# The largest is a header section (up to Postfix's message_size_limit) in
# base64; a message body is capped at protocol.MAX_MESSAGE_LIMIT.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
START_HINT = "systemctl start trustmilter-review-helper"


class HelperQueue:
    """Postfix's hold queue, through the privileged helper listening on `socket_path`."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def held(self) -> list[QueueEntry]:
        """The messages in the hold queue, oldest first."""
        answer = self._ask(Request("list"))
        items = answer.get("held")
        if not isinstance(items, list):
            raise PostfixCommandError("the privileged helper's list answer has no list")
        try:
            return [entry_from_json(item) for item in items]
        except ProtocolError as error:
            raise PostfixCommandError(str(error)) from error

    def read(self, queue_id: str) -> QueueFile:
        """The envelope sender and header section of a held message."""
        answer = self._ask(Request("show", checked_queue_id(queue_id), "headers"))
        sender = answer.get("sender")
        if not isinstance(sender, str):
            raise PostfixCommandError("the privileged helper's answer has no sender")
        return QueueFile(sender, self._bytes(answer.get("headers")))

    def read_message(self, queue_id: str, limit: int) -> tuple[bytes, bool]:
        """The first `limit` bytes of a held message (the helper may send fewer,
        up to its own cap), and whether there was more."""
        answer = self._ask(Request("show", checked_queue_id(queue_id), "message", limit))
        more = answer.get("more")
        if not isinstance(more, bool):
            raise PostfixCommandError("the privileged helper's answer lacks its more field")
        return self._bytes(answer.get("message"))[:limit], more

    def release(self, queue_id: str) -> None:
        """Release a held message (the helper runs postsuper -H and asks for delivery)."""
        self._ask(Request("release", checked_queue_id(queue_id)))

    def delete(self, queue_id: str) -> None:
        """Delete a held message (the helper runs postsuper -d ID hold)."""
        self._ask(Request("delete", checked_queue_id(queue_id)))

    # ---- internals -------------------------------------------------------

    def _ask(self, request: Request) -> dict[str, Any]:
        """The fields of the helper's success answer; the matching error otherwise."""
        try:
            answer = decode_answer(self._exchange(encode_request(request)))
        except ProtocolError as error:
            raise PostfixCommandError(f"{error} ({self.socket_path})") from error
        if isinstance(answer, Refusal):
            if answer.kind == INVALID_QUEUE_ID:
                raise InvalidQueueId(answer.text)
            raise PostfixCommandError(answer.text)
        return answer

    def _exchange(self, line: bytes) -> bytes:
        """Send `line`, read the answer to the end, all within `timeout`."""
        deadline = time.monotonic() + self.timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(self.timeout)
                connection.connect(self.socket_path)
                connection.sendall(line)
                connection.shutdown(socket.SHUT_WR)
                return self._read_all(connection, deadline)
        except (FileNotFoundError, ConnectionRefusedError):
            raise PostfixCommandError(
                f"the privileged helper is not running (nothing answers on {self.socket_path});"
                f" start it: {START_HINT}") from None
        except PermissionError:
            raise PostfixCommandError(
                f"{self.socket_path}: permission denied (the helper answers root and"
                " review.user only)") from None
        except TimeoutError:
            raise PostfixCommandError(
                f"the privileged helper did not answer within {self.timeout:g}s"
                f" ({self.socket_path})") from None
        except OSError as error:
            raise PostfixCommandError(
                f"the privileged helper ({self.socket_path}): {error.strerror or error}") from None

    def _read_all(self, connection: socket.socket, deadline: float) -> bytes:
        """The answer line. It ends at its newline (a JSON line has no other):
        a helper that refused without reading our request closes with it
        unread, and the kernel then reports a reset after the answer."""
        chunks: list[bytes] = []
        size = 0
        while not chunks or not chunks[-1].endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            connection.settimeout(left)
            chunk = connection.recv(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise PostfixCommandError(f"the privileged helper's answer is larger than"
                                          f" {MAX_ANSWER_BYTES} bytes ({self.socket_path})")
            chunks.append(chunk)
        if not chunks:
            raise PostfixCommandError(f"the privileged helper closed the connection without"
                                      f" an answer ({self.socket_path})")
        return b"".join(chunks)

    @staticmethod
    def _bytes(text: Any) -> bytes:
        try:
            return from_base64(text)
        except ProtocolError as error:
            raise PostfixCommandError(str(error)) from error


def open_queue(settings: Settings) -> HoldQueue:
    """The hold queue the review page uses: the helper on review.helper_socket."""
    return HelperQueue(settings.review.helper_socket)
