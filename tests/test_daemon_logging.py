"""The daemon's log lines reach syslog even when they carry a sender's 8-bit bytes."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmilter.config.daemon import LoggingConfig
from trustmilter.daemon.logsetup import setup_logging


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for /dev/log."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "log"))
        sock.settimeout(5)
        yield sock
    root = logging.getLogger("trustmilter")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def test_a_line_with_surrogate_escapes_reaches_syslog(syslog_socket: socket.socket) -> None:
    """An 8-bit MAIL FROM arrives with surrogate escapes; SysLogHandler cannot
    encode those, and logging dropped the whole line ("--- Logging error ---")."""
    path = syslog_socket.getsockname()
    setup_logging(LoggingConfig(destination="syslog", syslog_socket=path))
    sender = b"<\xff\xfe@example.net>".decode("utf-8", "surrogateescape")
    logging.getLogger("trustmilter.verdict").info("NOQUEUE: action=accept from=%s", sender)
    datagram = syslog_socket.recv(65536).decode("utf-8")
    assert datagram.endswith("NOQUEUE: action=accept from=<\\xff\\xfe@example.net>\x00")
    assert "trustmilter[" in datagram
