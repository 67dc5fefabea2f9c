"""systemd readiness (Type=notify): what `trustmilter run` tells $NOTIFY_SOCKET, and when.

systemd is played by a datagram socket this test binds, as systemd binds
its own and passes its path in $NOTIFY_SOCKET; the daemon is real.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmilter.daemon.notify import notify
from trustmilter.testing.daemon import DaemonProcess, write_policy

WAIT = 30.0


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify.sock"))
        listener.settimeout(WAIT)
        yield listener


def received(listener: socket.socket) -> list[str]:
    """The next datagram's assignments."""
    return listener.recv(4096).decode().split("\n")


def test_notify_sends_one_datagram_to_a_path_or_an_abstract_socket(systemd, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.getsockname())
    assert notify("READY=1", "STATUS=ok")
    assert received(systemd) == ["READY=1", "STATUS=ok"]

    name = f"trustmilter-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(WAIT)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1")
        assert received(abstract) == ["STOPPING=1"]


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")


def test_ready_once_listening_reloading_around_a_reload_stopping_at_the_end(
    tmp_path: Path, dns_server, systemd
):
    policy = write_policy(tmp_path / "policy.yaml", "mx.example.org", dns_server.nameserver)
    running = DaemonProcess.start(policy, tmp_path / "run.log",
                                  env={"NOTIFY_SOCKET": systemd.getsockname()})
    try:
        assert received(systemd) == ["READY=1"]
        # Ready means the MTA can connect now.
        socket.create_connection(("127.0.0.1", running.port), timeout=5).close()

        running.reload()
        reloading = received(systemd)
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert received(systemd) == ["READY=1"]
        assert "policy reloaded from" in running.log_text()
    finally:
        assert running.stop() == 0
    assert received(systemd) == ["STOPPING=1"]
