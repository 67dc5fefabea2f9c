"""The daemon's policy reader: never blocks on a FIFO, bounds size and time, one line per refusal.

Real files, a real FIFO, the real child process of `load_policy_off_path`.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from trustmilter.config.load import load_settings
from trustmilter.daemon.policyfile import (
    MAX_POLICY_BYTES,
    PolicyUnusable,
    load_policy,
    load_policy_off_path,
    read_policy_bytes,
)

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"


def refusal(call, *args) -> str:
    """The one-line refusal of `call(*args)`, which must come within seconds."""
    outcome: list[BaseException | object] = []

    def attempt() -> None:
        try:
            outcome.append(call(*args))
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert outcome, f"{call.__name__} blocked"
    [error] = outcome
    assert isinstance(error, PolicyUnusable), error
    assert "\n" not in str(error)
    return str(error)


def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path):
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    assert refusal(read_policy_bytes, fifo) == f"{fifo}: is a FIFO, not a regular file"
    assert refusal(load_policy_off_path, fifo) == f"{fifo}: is a FIFO, not a regular file"


def test_a_symlink_to_a_fifo_is_refused_too(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "policy.yaml"
    link.symlink_to(fifo)
    assert refusal(load_policy, link) == f"{link}: is a FIFO, not a regular file"


def test_directories_and_sockets_are_refused(tmp_path: Path):
    assert refusal(load_policy, tmp_path) == f"{tmp_path}: is a directory, not a regular file"
    path = tmp_path / "policy.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert refusal(load_policy, path) == f"{path}: is a socket, not a regular file"


def test_a_file_over_the_limit_is_refused_unread(tmp_path: Path):
    big = tmp_path / "policy.yaml"
    with big.open("wb") as stream:
        stream.truncate(MAX_POLICY_BYTES + 1)  # sparse: the size alone must refuse it
    assert refusal(load_policy_off_path, big) == (
        f"{big}: {MAX_POLICY_BYTES + 1} bytes, more than a policy may have"
        f" ({MAX_POLICY_BYTES} bytes)")


def test_a_missing_file_is_one_line(tmp_path: Path):
    missing = tmp_path / "policy.yaml"
    assert refusal(load_policy, missing) == (
        f"{missing}: cannot read policy: No such file or directory")


def test_off_path_parsing_gives_the_same_settings_as_in_process():
    assert load_policy_off_path(SHIPPED) == load_settings(SHIPPED) == load_policy(SHIPPED)


def test_off_path_errors_read_as_in_process_ones(tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("authserv_id: mx.example.org\ndns:\n  timeout: soon\n")
    assert refusal(load_policy_off_path, policy) == refusal(load_policy, policy)
    assert refusal(load_policy, policy).startswith(f"{policy}:3: dns.timeout: expected")
    policy.write_bytes(b"authserv_id: mx.example.org\n# \xff\n")
    assert refusal(load_policy_off_path, policy) == (
        f"{policy}:2: expected UTF-8 text, got invalid bytes")


def test_a_parse_that_takes_too_long_is_refused(tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("authserv_id: mx.example.org\n")
    with pytest.raises(PolicyUnusable) as caught:
        load_policy_off_path(policy, timeout=0.01)  # starting Python alone takes longer
    assert str(caught.value) == f"{policy}: parsing took longer than 0.01 s"
