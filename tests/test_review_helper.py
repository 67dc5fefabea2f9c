"""The privileged helper (`trustmilter review helper`) and its client, on a real Postfix.

The module's private Postfix runs the null milter from smtp_helpers.py,
which holds every message whose Subject says "hold", so its hold queue
fills as trustmilter's quarantine fills it. The helper runs as it ships: a
subprocess `trustmilter review helper`, as root, answering root and the
user ``nobody``, on a socket in a directory it makes itself. The client
(`HelperQueue`) and raw socket peers talk to it; what they see is
compared with what Postfix's own tools (`PostfixQueue`, run directly)
report, and its log (standard error, to a file) is read back. Peers of
other users are child processes that drop to their uid. The protocol
codec has plain unit tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helper_rig import TRUSTMILTER, Helper, running_helper, start_helper, wait_listening
from helper_rig import socket_base as open_socket_base
from keys import message
from review_rig import null_milter_on
from smtp_helpers import send_one
from trustmilter.config.review import ReviewConfig
from trustmilter.config.settings import Settings
from trustmilter.quarantine.postfix import (
    InvalidQueueId,
    PostfixCommandError,
    PostfixQueue,
    QueueEntry,
    QueueFile,
)
from trustmilter.quarantine.review import QuarantineReview
from trustmilter.review.helper import protocol
from trustmilter.review.helper.client import HelperQueue, open_queue
from trustmilter.review.helper.protocol import (
    INVALID_QUEUE_ID,
    MAX_MESSAGE_LIMIT,
    MAX_REQUEST_BYTES,
    REFUSED,
    ProtocolError,
    Refusal,
    Request,
    decode_answer,
    decode_request,
    encode_request,
)
from trustmilter.review.helper.server import HelperServer
from trustmilter.testing.postfix import PostfixInstance

HELPERS = Path(__file__).with_name("smtp_helpers.py")
TRUST = ("X-Trustmilter-Trust: low; score=8.0; reasons=auto.noreply_sender; "
         "action=quarantine; rules=noreply-quarantine")
NOBODY = 65534  # the user the helper answers besides root; its group is nogroup (65534)
STRANGER = 65533  # another uid, for peers that must be refused


# ---- the protocol codec (no Postfix) ------------------------------------------


@pytest.mark.parametrize("request_", [
    Request("list"),
    Request("show", "EB9D420C462", "headers"),
    Request("show", "4dYk0X6y7Nz2Fq", "message", 1000),
    Request("release", "EB9D420C462"),
    Request("delete", "EB9D420C462"),
])
def test_every_request_round_trips(request_: Request) -> None:
    line = encode_request(request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_request(line) == request_


@pytest.mark.parametrize(("line", "error"), [
    (b"list\n", "request is not one line of JSON"),
    (b"\xff\xfe\n", "request is not one line of JSON"),
    (b"[" * 3000 + b"\n", "request is not one line of JSON"),
    (b'["list"]\n', "request is not a JSON object"),
    (b"{}\n", "unknown command None"),
    (b'{"command": "release ALL"}\n', "unknown command 'release ALL'"),
    (b'{"command": "-d", "queue_id": "EB9D420C462"}\n', "unknown command '-d'"),
    (b'{"command": "flush"}\n', "unknown command 'flush'"),
    (b'{"command": "LIST"}\n', "unknown command 'LIST'"),
    (b'{"command": ["list"]}\n', "unknown command ['list']"),
    (b'{"command": "list", "queue_id": "EB9D420C462"}\n', "list: unexpected field 'queue_id'"),
    (b'{"command": "release", "queue_id": "EB9D420C462", "queue": "deferred"}\n',
     "release: unexpected field 'queue'"),
    (b'{"command": "release", "queue_ids": ["EB9D420C462"]}\n',
     "release: unexpected field 'queue_ids'"),
    (b'{"command": "delete"}\n', "delete: queue_id must be a string"),
    (b'{"command": "delete", "queue_id": 12345678}\n', "delete: queue_id must be a string"),
    (b'{"command": "show", "queue_id": "EB9D420C462"}\n', "show: unknown part None (headers or message)"),
    (b'{"command": "show", "queue_id": "EB9D420C462", "part": "body"}\n',
     "show: unknown part 'body' (headers or message)"),
    (b'{"command": "show", "queue_id": "EB9D420C462", "part": "headers", "limit": 5}\n',
     "show headers: unexpected field 'limit'"),
    (b'{"command": "show", "queue_id": "EB9D420C462", "part": "message"}\n',
     "show message: limit must be a positive whole number of bytes"),
    (b'{"command": "show", "queue_id": "EB9D420C462", "part": "message", "limit": true}\n',
     "show message: limit must be a positive whole number of bytes"),
    (b'{"command": "show", "queue_id": "EB9D420C462", "part": "message", "limit": 0}\n',
     "show message: limit must be a positive whole number of bytes"),
    (b'{"command": "show", "queue_id": "EB9D420C462", "part": "message", "limit": 1.5}\n',
     "show message: limit must be a positive whole number of bytes"),
])
def test_malformed_requests_are_refused_in_one_line(line: bytes, error: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert (str(caught.value), caught.value.kind) == (error, REFUSED)


@pytest.mark.parametrize("queue_id", ["ALL", "-", "-d", "deferred", "../EB9D420C462",
                                      "EB9D420C462\n", "eb9d420c462x", ""])
def test_what_is_not_a_queue_id_is_refused_as_such(queue_id: str) -> None:
    """postsuper reads ALL and '-' as every message and standard input."""
    line = json.dumps({"command": "release", "queue_id": queue_id}).encode() + b"\n"
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert caught.value.kind == INVALID_QUEUE_ID
    assert str(caught.value).startswith("not a Postfix queue ID: ")
    assert "\n" not in str(caught.value)


def test_a_request_is_bounded_and_the_message_limit_capped() -> None:
    padded = b'{"command": "list"' + b" " * MAX_REQUEST_BYTES + b"}\n"
    with pytest.raises(ProtocolError, match=f"longer than {MAX_REQUEST_BYTES} bytes"):
        decode_request(padded)
    with pytest.raises(ProtocolError, match="longer than"):
        encode_request(Request("release", "A" * MAX_REQUEST_BYTES))
    huge = encode_request(Request("show", "EB9D420C462", "message", 10**12))
    assert decode_request(huge).limit == MAX_MESSAGE_LIMIT


def test_answers_round_trip_and_a_refusal_stays_one_line() -> None:
    answer = decode_answer(protocol.ok_answer(held=[], more=False))
    assert answer == {"ok": True, "held": [], "more": False}
    refusal = decode_answer(protocol.refusal_answer(REFUSED, "bad\nline\x1b[31m"))
    assert refusal == Refusal(REFUSED, "bad\\nline\\x1b[31m")
    for broken in (b"", b"nope\n", b"[]\n", b'{"ok": "yes"}\n', b'{"ok": false}\n'):
        with pytest.raises(ProtocolError):
            decode_answer(broken)


def test_queue_entries_and_bytes_round_trip() -> None:


    entry = QueueEntry("EB9D420C462", "hold", 1700000000.5, 812, "", ("a@example.org",))
    assert protocol.entry_from_json(protocol.entry_json(entry)) == entry
    for broken in ({}, [], {**protocol.entry_json(entry), "queue_id": "ALL"},
                   {**protocol.entry_json(entry), "size": True},
                   {**protocol.entry_json(entry), "recipients": [1]}):
        with pytest.raises(ProtocolError):
            protocol.entry_from_json(broken)
    assert protocol.from_base64(protocol.to_base64(b"\x00\xff\r\n")) == b"\x00\xff\r\n"
    with pytest.raises(ProtocolError):
        protocol.from_base64("not base64!")


# ---- the server loop on a socket pair (no Postfix) ------------------------------


def _handled(sent: bytes, io_seconds: float = 0.5, close_write: bool = True) -> bytes:
    """What HelperServer.handle answers `sent` on a socket pair (the peer is us: root)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = HelperServer(PostfixQueue(Path("/nonexistent")), allowed_uid=NOBODY,
                          io_seconds=io_seconds)
    with ours, theirs:
        ours.sendall(sent)
        if close_write:
            ours.shutdown(socket.SHUT_WR)
        server.handle(theirs)
        theirs.close()
        ours.settimeout(5)
        answer = ours.makefile("rb").readline()  # then a reset: we sent more than it read
    server.close()
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="the peer must be root to be answered")
def test_a_silent_peer_is_cut_off_and_the_request_must_end_in_a_newline() -> None:
    started = time.monotonic()
    answer = decode_answer(_handled(b'{"command": "li', close_write=False))
    assert answer == Refusal(REFUSED, "no complete request within 0.5s")
    assert time.monotonic() - started < 5
    assert decode_answer(_handled(b'{"command": "list"}')) == Refusal(
        REFUSED, "the connection ended before the request's newline")
    assert decode_answer(_handled(b'{"command": "list"}\n{"command": "list"}\n')) == Refusal(
        REFUSED, "one request per connection (bytes after the newline)")
    assert decode_answer(_handled(b"x" * (MAX_REQUEST_BYTES * 4))) == Refusal(
        REFUSED, f"request longer than {MAX_REQUEST_BYTES} bytes")


class _CountingQueue(PostfixQueue):
    """A hold queue in memory that counts its listings (the cost of `show`)."""

    def __init__(self, held: list[str]) -> None:
        super().__init__(None)
        self.ids = held
        self.listings = 0

    def held(self) -> list[QueueEntry]:
        self.listings += 1
        return [QueueEntry(qid, "hold", 0.0, 1, "a@example.org", ("b@example.org",))
                for qid in self.ids]

    def read(self, queue_id: str) -> QueueFile:
        return QueueFile("a@example.org", b"Subject: x\r\n")

    def release(self, queue_id: str) -> None:
        self.ids.remove(queue_id)


def _asked(server: HelperServer, request: bytes) -> Any:
    """The decoded answer of `server` to `request` (a dict, or a Refusal)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        ours.sendall(request)
        server.handle(theirs)
        return decode_answer(ours.makefile("rb").readline())


@pytest.mark.skipif(os.geteuid() != 0, reason="the peer must be root to be answered")
def test_show_after_a_listing_does_not_list_the_queue_again_but_release_does() -> None:
    queue = _CountingQueue(["EB9D420C462", "EB9D420C463"])
    server = HelperServer(queue, allowed_uid=NOBODY)
    assert _asked(server, b'{"command": "list"}\n')["ok"] is True
    for qid in queue.ids * 3:
        show = json.dumps({"command": "show", "queue_id": qid, "part": "headers"})
        assert _asked(server, show.encode() + b"\n")["ok"] is True
    assert queue.listings == 1  # N shows after a list: N reads, no listing each
    # A message held after the listing is found by listing again on the miss.
    queue.ids.append("EB9D420C464")
    show = json.dumps({"command": "show", "queue_id": "EB9D420C464", "part": "headers"})
    assert _asked(server, show.encode() + b"\n")["ok"] is True
    assert queue.listings == 2
    # Release and delete always look at the queue as it is now.
    release = json.dumps({"command": "release", "queue_id": "EB9D420C462"})
    assert _asked(server, release.encode() + b"\n")["ok"] is True
    assert _asked(server, release.encode() + b"\n") == Refusal(
        REFUSED, "EB9D420C462: not in the hold queue")
    assert queue.listings == 4
    server.close()


# ---- the helper as it ships, on a real Postfix ------------------------------------


@pytest.fixture(scope="module")
def socket_base() -> Iterator[Path]:
    """A directory other users may enter (pytest's tmp dirs are root's alone)."""
    with open_socket_base() as base:
        yield base


@pytest.fixture(scope="module")
def holding_postfix(postfix: PostfixInstance, tmp_path_factory) -> Iterator[PostfixInstance]:
    """The module's Postfix with the null milter (Subject "hold" -> hold queue)."""
    with null_milter_on(postfix, tmp_path_factory) as mta:
        yield mta


@pytest.fixture(scope="module")
def helper(holding_postfix: PostfixInstance, socket_base: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helper]:
    """The helper, on a socket in a directory it makes (socket_base/run)."""
    log_path = tmp_path_factory.mktemp("helper") / "helper.log"
    with running_helper(holding_postfix.config_dir, socket_base, log_path) as running:
        yield running


@pytest.fixture
def mta(holding_postfix: PostfixInstance) -> PostfixInstance:
    holding_postfix.reset()
    return holding_postfix


@pytest.fixture
def queue(helper: Helper, mta: PostfixInstance) -> HelperQueue:
    return HelperQueue(helper.socket_path, timeout=60)


def hold(mta: PostfixInstance, subject: str = "hold me", body: bytes = b"Hello.\r\n",
         trust: str | None = TRUST) -> str:
    """Send a message the null milter holds; its queue ID."""
    raw = message(from_="noreply@example.com", subject=subject, body=body)
    if trust:
        raw = trust.encode() + b"\r\n" + raw
    out = send_one(mta.smtp_port, raw, mail_from="noreply@example.com")
    assert out.data is not None and out.data.code == 250, out
    match = re.search(r"queued as (\S+)", out.data.text)
    assert match, out.data
    return match.group(1)


def raw_exchange(path: str, sent: bytes) -> Any:
    """Send `sent` as it is on one connection; the answer, decoded."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(30)
        connection.connect(path)
        try:
            connection.sendall(sent)
            connection.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # it stopped reading (the request is too long): its answer is here
        return decode_answer(connection.makefile("rb").readline())


def test_the_socket_and_its_directory_belong_to_root_and_the_users_group(
        helper: Helper) -> None:
    status = os.lstat(helper.socket_path)
    assert stat.S_ISSOCK(status.st_mode)
    assert (stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid) == (0o660, 0, NOBODY)
    directory = os.stat(os.path.dirname(helper.socket_path))
    assert (stat.S_IMODE(directory.st_mode), directory.st_uid, directory.st_gid) == (
        0o750, 0, NOBODY)


def test_list_and_show_answer_what_postfix_holds(
        helper: Helper, queue: HelperQueue, mta: PostfixInstance) -> None:
    first = hold(mta, subject="hold one")
    big_body = b"".join(b"line %06d of a long held message\r\n" % n for n in range(4000))
    second = hold(mta, subject="hold two", body=big_body, trust=None)
    out = send_one(mta.smtp_port, message(subject="delivered"))  # not held: not listed
    assert out.final.code == 250
    direct = PostfixQueue(mta.config_dir)

    held = queue.held()
    assert [entry.queue_id for entry in held] == [first, second]
    assert held == direct.held()
    assert queue.read(first) == direct.read(first)
    assert b"\n" + TRUST.encode() + b"\n" in queue.read(first).headers

    whole, more = direct.read_message(second, 10**7)
    assert not more and len(whole) > 100_000
    assert queue.read_message(second, 10**7) == (whole, False)
    assert queue.read_message(second, 1000) == (whole[:1000], True)  # the limit is honoured

    # The helper logs a request after answering it, so the line of the one
    # before may land after this count: wait for this request's own line.
    before = len(helper.log())
    queue.read_message(second, 4321)
    line = helper.wait_for_log(f"show message {second}: ok, 4321 ", after=before)
    assert re.fullmatch(rf"trustmilter review helper: peer uid=0 pid=\d+: show message "
                        rf"{second}: ok, 4321 bytes \(more left\)", line), line


def test_the_review_releases_and_deletes_through_the_helper(
        helper: Helper, queue: HelperQueue, mta: PostfixInstance) -> None:
    """QuarantineReview on the helper: what the page will do."""
    released, deleted = hold(mta, subject="hold release"), hold(mta, subject="hold delete")
    review = QuarantineReview(queue)
    assert [(m.queue_id, m.reasons) for m in review.held()] == [
        (released, ("auto.noreply_sender",)), (deleted, ("auto.noreply_sender",))]

    before = len(helper.log())
    review.release([released], None)
    helper.wait_for_log(rf"uid=0 pid=\d+: release {released}: ok, released$", after=before)
    (delivered,) = mta.wait_delivered(1)
    assert delivered.header("Subject") == ["hold release"]

    review.delete([deleted])
    helper.wait_for_log(rf"uid=0 pid=\d+: delete {deleted}: ok, deleted$", after=before)
    assert {str(e["queue_id"]) for e in mta.queue()} == set()
    assert review.held() == []


def test_an_id_not_in_the_hold_queue_is_refused(
        helper: Helper, queue: HelperQueue, mta: PostfixInstance) -> None:
    """Made up, or really queued but deferred: postcat and postsuper never see it."""
    held = hold(mta)
    made_up = "ABCDEF012345"
    mta.reload_with(defer_transports="virtual")  # ordinary mail now waits in deferred
    try:
        out = send_one(mta.smtp_port, message(subject="deferred"))
        assert out.final.code == 250
        deferred = re.search(r"queued as (\S+)", out.final.text).group(1)  # type: ignore[union-attr]
        mta.wait_idle()
        assert {str(e["queue_id"]): e["queue_name"] for e in mta.queue()} == {
            held: "hold", deferred: "deferred"}
        before = len(helper.log())
        for queue_id in (deferred, made_up):
            for action in (queue.read, queue.release, queue.delete,
                           lambda q: queue.read_message(q, 100)):
                with pytest.raises(PostfixCommandError) as caught:
                    action(queue_id)
                assert str(caught.value) == f"{queue_id}: not in the hold queue"
        line = helper.wait_for_log(f"delete {deferred}: ", after=before)
        assert line.endswith(f": refused: {deferred}: not in the hold queue")
        assert {str(e["queue_id"]): e["queue_name"] for e in mta.queue()} == {
            held: "hold", deferred: "deferred"}  # untouched
    finally:
        mta.reload_with(defer_transports="")


def test_text_that_is_no_queue_id_never_leaves_the_client_and_the_helper_refuses_it(
        helper: Helper, queue: HelperQueue, mta: PostfixInstance) -> None:
    held = hold(mta)
    before = len(helper.log())
    for text in ("ALL", "-", "-d", f"{held} ALL"):
        with pytest.raises(InvalidQueueId):
            queue.release(text)
    assert helper.log()[before:] == []  # nothing was sent
    assert raw_exchange(helper.socket_path, b'{"command": "release", "queue_id": "ALL"}\n') == \
        Refusal(INVALID_QUEUE_ID, "not a Postfix queue ID: 'ALL'")
    helper.wait_for_log(r"uid=0 pid=\d+: -: refused: not a Postfix queue ID: 'ALL'", after=before)
    assert [str(e["queue_id"]) for e in mta.hold_queue()] == [held]


@pytest.mark.parametrize(("sent", "refusal"), [
    (b'{"command": "release ALL"}\n', "unknown command 'release ALL'"),
    (b'{"command": "-d", "queue_id": "ABCDEF012345"}\n', "unknown command '-d'"),
    (b'{"command": "flush"}\n', "unknown command 'flush'"),
    (b'{"command": "list", "queue": "deferred"}\n', "list: unexpected field 'queue'"),
    (b"release ABCDEF012345\n", "request is not one line of JSON"),
    (b'{"command": "list"}\n{"command": "list"}\n',
     "one request per connection (bytes after the newline)"),
    (b'{"command": "list"' + b" " * (2 * MAX_REQUEST_BYTES) + b"}\n",
     f"request longer than {MAX_REQUEST_BYTES} bytes"),
    (b" " * (64 * MAX_REQUEST_BYTES), f"request longer than {MAX_REQUEST_BYTES} bytes"),
    (b"", "the connection ended before the request's newline"),
])
def test_anything_but_the_four_commands_is_refused_and_the_helper_goes_on(
        helper: Helper, mta: PostfixInstance, sent: bytes, refusal: str) -> None:
    held = hold(mta)
    before = len(helper.log())
    assert raw_exchange(helper.socket_path, sent) == Refusal(REFUSED, refusal)
    # This request's own line (the previous one's may land after the count).
    line = helper.wait_for_log(r"peer uid=0 pid=\d+: -: refused: ", after=before)
    assert line.endswith(f": -: refused: {refusal}")
    assert [e.queue_id for e in HelperQueue(helper.socket_path).held()] == [held]
    assert helper.process.poll() is None


def _as_user(uid: int, gid: int, path: str) -> subprocess.CompletedProcess[str]:
    """A child process running as `uid`:`gid` sends list on `path`; it prints the
    answer, or the error of its connect."""
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print(type(e).__name__); sys.exit(0)\n"
        "try:\n"
        "    s.sendall(b'{\"command\": \"list\"}\\n')\n"
        "except BrokenPipeError:\n"
        "    pass  # refused before it read: the answer is there\n"
        "print(s.makefile('rb').readline().decode().strip())\n")
    return subprocess.run(["/usr/bin/python3", "-I", "-c", script, path], user=uid, group=gid,
                          extra_groups=[], cwd="/", capture_output=True, text=True,
                          timeout=30, check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_only_root_and_the_review_user_are_answered(
        helper: Helper, mta: PostfixInstance) -> None:
    held = hold(mta)
    before = len(helper.log())
    allowed = json.loads(_as_user(NOBODY, NOBODY, helper.socket_path).stdout)
    assert [item["queue_id"] for item in allowed["held"]] == [held]

    # In the socket's group but not the review user: the kernel lets it
    # connect, the helper's peer check refuses it and says so in its log.
    refused = _as_user(STRANGER, NOBODY, helper.socket_path)
    assert json.loads(refused.stdout) == {
        "ok": False, "kind": REFUSED, "error": f"uid {STRANGER} may not use the helper"}
    line = helper.wait_for_log(f"peer uid={STRANGER} ", after=before)
    assert re.fullmatch(rf"trustmilter review helper: peer uid={STRANGER} pid=\d+: -: "
                        r"refused: not an allowed user", line), line
    # Neither user nor group: the socket's mode keeps it out.
    assert _as_user(STRANGER, STRANGER, helper.socket_path).stdout.strip() == "PermissionError"
    assert [str(e["queue_id"]) for e in mta.hold_queue()] == [held]


def test_a_helper_that_is_not_running_is_one_clear_line(tmp_path: Path) -> None:
    """open_queue: the helper on the policy's review.helper_socket."""
    path = str(tmp_path / "helper.sock")
    settings = dataclasses.replace(Settings(), review=ReviewConfig(helper_socket=path))
    with pytest.raises(PostfixCommandError) as caught:
        open_queue(settings).held()
    assert str(caught.value) == (
        f"the privileged helper is not running (nothing answers on {path});"
        " start it: systemctl start trustmilter-review-helper")


def test_open_queue_reaches_the_helper_on_the_policys_socket(
        helper: Helper, mta: PostfixInstance) -> None:
    held = hold(mta)
    settings = dataclasses.replace(Settings(),
                                   review=ReviewConfig(helper_socket=helper.socket_path))
    assert [entry.queue_id for entry in open_queue(settings).held()] == [held]


def test_a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced(
        helper: Helper, holding_postfix: PostfixInstance, socket_base: Path,
        tmp_path: Path) -> None:
    log_path = tmp_path / "second.log"
    second = start_helper(helper.socket_path, holding_postfix.config_dir, log_path)
    assert second.wait(timeout=30) == 1
    assert log_path.read_text().splitlines() == [
        f"trustmilter review helper: review.helper_socket unix:{helper.socket_path}: another "
        "process serves this socket (is trustmilter already running?); not taking it over"]
    assert HelperQueue(helper.socket_path).held() is not None  # the first still answers

    # A socket nobody listens on (a helper killed without its clean stop).
    stale_dir = socket_base / "stale"
    stale_dir.mkdir(mode=0o750)
    stale_path = str(stale_dir / "helper.sock")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(stale_path)
    third = start_helper(stale_path, holding_postfix.config_dir, log_path)
    try:
        wait_listening(stale_path, third)
        assert HelperQueue(stale_path).held() is not None
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=30) == 0  # SIGTERM: a clean stop
    assert not os.path.exists(stale_path)  # its own socket removed at the stop
    lines = log_path.read_text().splitlines()[1:]
    assert lines[0] == (f"trustmilter review helper: removed a stale socket at {stale_path}"
                        " (nothing answered on it)")
    assert lines[-1] == "trustmilter review helper: stopped"


def test_start_up_errors_are_one_line_with_the_exit_status_of_run(
        holding_postfix: PostfixInstance, tmp_path: Path) -> None:
    cases = [
        (["--socket", "/tmp/trustmilter-helper-test.sock"], 2,
         "review.helper_socket /tmp/trustmilter-helper-test.sock: the directory /tmp is "
         "writable by others than root (the socket could be swapped there); choose one only "
         "root can write"),
        (["--socket", str(tmp_path / "h.sock"), "--user", "no-such-user-here"], 2,
         "user 'no-such-user-here': no such user (review.user, or --user)"),
        (["--socket", "helper.sock"], 2,
         "socket helper.sock: an absolute path of at most 107 bytes"),
        (["--socket", str(tmp_path / "missing" / "deeper" / "h.sock")], 2,
         f"review.helper_socket {tmp_path}/missing/deeper/h.sock: cannot make the directory "
         f"{tmp_path}/missing/deeper: No such file or directory"),
    ]
    not_a_socket = tmp_path / "file.sock"
    not_a_socket.write_text("")
    cases.append((["--socket", str(not_a_socket)], 2,
                  f"review.helper_socket unix:{not_a_socket}: exists and is not a socket;"
                  " not removing it"))
    for arguments, status, error in cases:
        argv = [TRUSTMILTER, "review", "helper", "--postfix-config",
                str(holding_postfix.config_dir), *arguments]
        if "--user" not in arguments:
            argv += ["--user", "nobody"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert (done.returncode, done.stdout, done.stderr) == (
            status, "", f"trustmilter review helper: {error}\n"), arguments
    policy = tmp_path / "policy.yaml"
    policy.write_text("review:\n  helper_socket: relative.sock\n")
    done = subprocess.run([TRUSTMILTER, "review", "helper", "--policy", str(policy)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "helper_socket" in done.stderr and "Traceback" not in done.stderr


# ---- the systemd unit -------------------------------------------------------------

UNIT = Path(__file__).resolve().parent.parent / "packaging" / "trustmilter-review-helper.service"


def unit_settings() -> dict[str, list[str]]:
    """The unit's keys; a repeated key keeps every value."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_runs_the_helper_as_root_with_the_installed_policy() -> None:
    settings = unit_settings()
    (exec_start,) = settings["ExecStart"]
    assert exec_start.split() == ["/opt/trustmilter/.venv/bin/trustmilter", "review", "helper",
                                  "--policy", "/etc/trustmilter/policy.yaml"]
    assert "User" not in settings and settings["RestartPreventExitStatus"] == ["2"]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert settings["PrivateNetwork"] == ["yes"] and settings["NoNewPrivileges"] == ["yes"]
    # The default socket's directory must be writable under ProtectSystem=strict.
    (writable,) = settings["ReadWritePaths"]
    assert any(ReviewConfig().helper_socket.startswith(path + "/") for path in writable.split())


@pytest.mark.skipif(subprocess.run(["which", "systemd-analyze"], capture_output=True,
                                   check=False).returncode != 0, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd's own parser and its exposure score (0 best, 10 worst)."""
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text())
    done = subprocess.run(["systemd-analyze", "verify", str(copy)],
                          capture_output=True, text=True, timeout=60, check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if line.strip() and "/opt/trustmilter/.venv/bin/trustmilter is not executable"
                  not in line]
    assert complaints == []
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(copy)],
        capture_output=True, text=True, timeout=60, check=False)
    assert security.returncode == 0, security.stdout[-600:]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root")
def test_the_capabilities_the_unit_keeps_are_enough(
        mta: PostfixInstance, socket_base: Path, tmp_path: Path) -> None:
    """The helper under setpriv with the unit's CapabilityBoundingSet and
    NoNewPrivileges does all four commands on the real Postfix."""
    (bounding,) = unit_settings()["CapabilityBoundingSet"]
    caps = ",".join("+" + cap.removeprefix("CAP_").lower() for cap in bounding.split())
    shown, released, deleted = hold(mta), hold(mta), hold(mta)
    path = str(socket_base / "capped" / "helper.sock")
    log_path = tmp_path / "capped.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["setpriv", f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--no-new-privs", "--",
             TRUSTMILTER, "review", "helper", "--socket", path, "--user", "nobody",
             "--postfix-config", str(mta.config_dir)], stdout=log, stderr=log)
    try:
        wait_listening(path, process)
        queue = HelperQueue(path, timeout=60)
        assert [entry.queue_id for entry in queue.held()] == [shown, released, deleted]
        assert queue.read(shown).sender == "noreply@example.com"
        assert queue.read_message(shown, 10)[1] is True
        queue.release(released)
        queue.delete(deleted)
        mta.wait_delivered(1)
        assert [str(e["queue_id"]) for e in mta.queue()] == [shown]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Operation not permitted" not in log_path.read_text()
