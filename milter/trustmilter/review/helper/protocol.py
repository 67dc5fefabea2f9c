"""The privileged helper's wire format: one request line, one answer, per connection.

A request is one line of JSON (UTF-8, ending in a newline, at most
`MAX_REQUEST_BYTES` with it), one object with exactly the fields its
command takes and nothing else:

    {"command": "list"}
    {"command": "show", "queue_id": ID, "part": "headers"}
    {"command": "show", "queue_id": ID, "part": "message", "limit": BYTES}
    {"command": "release", "queue_id": ID}
    {"command": "delete", "queue_id": ID}

There is no fifth command, no list of IDs and no option: "release ALL" is
an unknown command, and an ID is a string with the syntax of a Postfix
queue ID (postfix.py `valid_queue_id`), so neither postsuper's ``ALL`` nor
``-`` (standard input) nor anything option-like can pass. The helper
reads ``limit`` as a wish, capped at `MAX_MESSAGE_LIMIT`.

The answer is one line of JSON too: ``{"ok": true, ...}`` with the
command's fields (`entry_json`; byte strings in base64, RFC 4648 §4, since
a message need not be UTF-8), or ``{"ok": false, "kind": KIND, "error":
TEXT}``: KIND ``invalid-queue-id`` when the text is not a queue ID,
``refused`` for everything else (not in the hold queue, a malformed
request, a Postfix command that failed, a peer not allowed), and TEXT one
line for a person.

Both sides use the functions here, so what is sent and what is accepted
are written down once.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

from trustmilter.quarantine.postfix import HOLD, QueueEntry, valid_queue_id

# A request is a command and one queue ID: a few dozen bytes. The bound is
# what the helper reads at most before it refuses.
MAX_REQUEST_BYTES = 4096
# The most of a message `show` returns (what QuarantineReview reads for its
# body view; quarantine/review.py MAX_MESSAGE_READ).
MAX_MESSAGE_LIMIT = 4 * 1024 * 1024

Command = Literal["list", "show", "release", "delete"]
Part = Literal["headers", "message"]
COMMANDS: tuple[Command, ...] = ("list", "show", "release", "delete")
PARTS: tuple[Part, ...] = ("headers", "message")

INVALID_QUEUE_ID = "invalid-queue-id"
REFUSED = "refused"

# The fields each command takes, and no other.
_FIELDS: dict[str, frozenset[str]] = {
    "list": frozenset({"command"}),
    "show headers": frozenset({"command", "queue_id", "part"}),
    "show message": frozenset({"command", "queue_id", "part", "limit"}),
    "release": frozenset({"command", "queue_id"}),
    "delete": frozenset({"command", "queue_id"}),
}


class ProtocolError(ValueError):
    """A request or answer that breaks the format; `kind` is the answer's KIND."""

    def __init__(self, text: str, kind: str = REFUSED) -> None:
        super().__init__(text)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Request:
    """One validated request. `queue_id` is '' for list; `part` and `limit`
    only for show (`limit` 0 for the headers)."""

    command: Command
    queue_id: str = ""
    part: Part | None = None
    limit: int = 0

    def describe(self) -> str:
        """``show message EB9D420C462`` or ``list``: for the log line."""
        return " ".join(word for word in (self.command, self.part or "", self.queue_id) if word)


def encode_request(request: Request) -> bytes:
    """The request line for `request` (which `decode_request` accepts)."""
    data: dict[str, Any] = {"command": request.command}
    if request.command != "list":
        data["queue_id"] = request.queue_id
    if request.command == "show":
        data["part"] = request.part
        if request.part == "message":
            data["limit"] = request.limit
    line = _line(data)
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    return line


def decode_request(line: bytes) -> Request:
    """The request in `line` (one JSON object, its newline included or not);
    ProtocolError for anything else, naming what is wrong in one line."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # "[[[[..." nests too deep
        raise ProtocolError("request is not one line of JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("request is not a JSON object")
    command = data.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise ProtocolError(f"unknown command {_shown(command)}")
    part = data.get("part")
    if command == "show" and (not isinstance(part, str) or part not in PARTS):
        raise ProtocolError(f"show: unknown part {_shown(part)} (headers or message)")
    shape = f"show {part}" if command == "show" else command
    extra = sorted(set(data) - _FIELDS[shape])
    if extra:
        raise ProtocolError(f"{shape}: unexpected field {_shown(extra[0])}")
    if command == "list":
        return Request("list")
    queue_id = data.get("queue_id")
    if not isinstance(queue_id, str):
        raise ProtocolError(f"{command}: queue_id must be a string")
    if not valid_queue_id(queue_id):
        raise ProtocolError(f"not a Postfix queue ID: {_shown(queue_id)}", INVALID_QUEUE_ID)
    if command != "show":
        return Request(command, queue_id)
    if part == "headers":
        return Request("show", queue_id, "headers")
    limit = data.get("limit")
    # bool is an int in Python; JSON's true is no byte count.
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ProtocolError("show message: limit must be a positive whole number of bytes")
    return Request("show", queue_id, "message", min(limit, MAX_MESSAGE_LIMIT))


def ok_answer(**fields: Any) -> bytes:
    """A success answer with `fields` (JSON values; bytes go through `to_base64`)."""
    return _line({"ok": True, **fields})


def refusal_answer(kind: str, text: str) -> bytes:
    """A refusal answer: `kind` (INVALID_QUEUE_ID or REFUSED) and one line of text."""
    return _line({"ok": False, "kind": kind, "error": one_line(text)})


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal as the client reads it."""

    kind: str
    text: str


def decode_answer(data: bytes) -> dict[str, Any] | Refusal:
    """The fields of a success answer, or the Refusal; ProtocolError if `data`
    is neither."""
    try:
        answer = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("the helper's answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ProtocolError("the helper's answer has no ok field")
    if answer["ok"]:
        return answer
    kind, text = answer.get("kind"), answer.get("error")
    if not isinstance(kind, str) or not isinstance(text, str):
        raise ProtocolError("the helper's refusal has no kind or error")
    return Refusal(kind, one_line(text))


def entry_json(entry: QueueEntry) -> dict[str, Any]:
    """A held message's queue entry as the list answer carries it."""
    return {"queue_id": entry.queue_id, "arrival_time": entry.arrival_time,
            "size": entry.size, "sender": entry.sender, "recipients": list(entry.recipients)}


def entry_from_json(data: Any) -> QueueEntry:
    """The QueueEntry in one item of a list answer; ProtocolError if malformed."""
    try:
        queue_id, arrival, size = data["queue_id"], data["arrival_time"], data["size"]
        sender, recipients = data["sender"], data["recipients"]
    except (TypeError, KeyError):
        raise ProtocolError("the helper's list has an item without its fields") from None
    if not (isinstance(queue_id, str) and valid_queue_id(queue_id)
            and isinstance(arrival, (int, float)) and not isinstance(arrival, bool)
            and isinstance(size, int) and not isinstance(size, bool)
            and isinstance(sender, str) and isinstance(recipients, list)
            and all(isinstance(r, str) for r in recipients)):
        raise ProtocolError("the helper's list has an item of the wrong shape")
    return QueueEntry(queue_id, HOLD, float(arrival), size, sender, tuple(recipients))


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_base64(text: Any) -> bytes:
    """The bytes in `text`; ProtocolError if it is not base64."""
    if not isinstance(text, str):
        raise ProtocolError("the helper's answer lacks its bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("the helper's answer has bytes that are not base64") from None


def one_line(text: str) -> str:
    """`text` with control characters escaped: one line, safe in a log or a page."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown(value: object) -> str:
    """A value from a request, for an error line: escaped and short."""
    text = repr(value)
    return one_line(text if len(text) <= 40 else text[:37] + "...")


def _line(data: dict[str, Any]) -> bytes:
    # ensure_ascii: every byte of the line is ASCII, and no newline can occur
    # inside it, so the newline ends it.
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
