"""The SQLite state directory removed under a running milter: noticed, one line, on_error followed.

Open connections keep working on an unlinked file, so without a check the
counts went on into a file nobody would see again and vanished at the next
start. A real SQLite file, a real `rm -rf`, and a real `trustmilter run`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from keys import message
from trustmilter.bench.client import MilterClient
from trustmilter.bench.corpus import BenchMessage
from trustmilter.config.socket import parse_socket
from trustmilter.state.base import StateError
from trustmilter.state.open import ResilientStore
from trustmilter.state.sqlite import SqliteStore
from trustmilter.testing.daemon import DaemonProcess, write_policy

T0 = 1_700_000_000.0
HOUR = 3600.0
ZONE = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
example.org.               300 IN MX  10 mx.example.org.
"""


def test_a_removed_directory_fails_every_operation_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.sqlite3"
    store = SqliteStore(path, timeout=0.5)
    try:
        assert store.hit("k", T0, HOUR) == 1
        shutil.rmtree(path.parent)
        with pytest.raises(StateError) as caught:
            store.hit("k", T0 + 1, HOUR)
        assert str(caught.value) == (f"sqlite {path}: the database file was removed or replaced"
                                     " while in use; restart trustmilter to open it again")
        with pytest.raises(StateError):
            store.reputation("alice@example.com")
    finally:
        store.close()


def test_a_replaced_file_is_noticed_too(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path, timeout=0.5)
    try:
        store.hit("k", T0, HOUR)
        path.rename(tmp_path / "moved.sqlite3")
        SqliteStore(path, timeout=0.5).close()  # a new, empty file at the path
        with pytest.raises(StateError, match="removed or replaced"):
            store.count("k", T0, HOUR)
    finally:
        store.close()


def test_on_error_memory_counts_on_in_memory_after_one_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "state" / "state.sqlite3"
    log = logging.getLogger("test.state.removed")
    store = ResilientStore(SqliteStore(path, timeout=0.5), "memory", log)
    try:
        assert store.hit("k", T0, HOUR) == 1
        shutil.rmtree(path.parent)
        with caplog.at_level(logging.INFO, logger=log.name):
            counts = [store.hit("k", T0 + n, HOUR) for n in range(1, 4)]
        assert counts == [1, 2, 3]  # in memory, from this process's first outage hit
        [warning] = caplog.records
        assert warning.levelno == logging.WARNING
        assert "removed or replaced while in use" in warning.getMessage()
        assert "counting in memory" in warning.getMessage()
    finally:
        store.close()


def test_the_running_milter_notices_and_tempfails(tmp_path: Path, dns_server) -> None:
    """on_error: tempfail (the shipped setting): 451 4.3.0, one log line, however many messages."""
    dns_server.load(ZONE)
    state = tmp_path / "state"
    policy = write_policy(
        tmp_path / "policy.yaml", "mx.example.org", dns_server.nameserver,
        state={"backend": "sqlite", "sqlite_path": str(state / "state.sqlite3"),
               "on_error": "tempfail"},
    )
    running = DaemonProcess.start(policy, tmp_path / "run.log")
    mail = BenchMessage(
        kind="unsigned", client_ip="192.0.2.10", client_name="mail.example.com",
        helo="mail.example.com", mail_from="alice@example.com",
        rcpts=("support@example.org",), raw=message(),
    )
    client = MilterClient(parse_socket(running.spec), timeout=20)
    try:
        assert client.converse(mail).action == "accept"
        shutil.rmtree(state)
        outcomes = [client.converse(mail) for _ in range(3)]
    finally:
        assert running.stop() == 0
    assert [(o.action, o.reply[:9]) for o in outcomes] == [("tempfail", "451 4.3.0")] * 3
    down = [line for line in running.log_text().splitlines() if "state backend down" in line]
    assert len(down) == 1, running.log_tail()
    assert "the database file was removed or replaced while in use" in down[0]
