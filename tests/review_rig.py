"""What the review page's tests share: a Postfix that holds mail, the app on it, a browser.

The module's private Postfix (conftest `postfix`) runs the null milter of
smtp_helpers.py, which holds every message whose Subject says "hold", so
the hold queue fills as trustmilter's quarantine fills it; `hold` writes
the verdict header trustmilter would have added on top. The app is built
in-process on that Postfix's queue (PostfixQueue: these tests are about
the page's logic; the tests run as root, as the privileged helper does;
the page and the digest as they run in production, through the helper,
are tested with helper_rig.py), with the policy's SQLite state store and the
page's own data directory in the test's tmp dir. `Browser` is Flask's
test client with the page's CSRF token and login steps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from keys import message
from smtp_helpers import send_one
from trustmilter.command_support import state_store
from trustmilter.config.load import load_settings
from trustmilter.config.settings import Settings
from trustmilter.quarantine.postfix import PostfixQueue
from trustmilter.review.app import create_app
from trustmilter.testing.postfix import PostfixInstance, free_port, wait_for_port

HELPERS = Path(__file__).with_name("smtp_helpers.py")
TRUST = ("X-Trustmilter-Trust: low; score=8.0; reasons=auto.noreply_sender,iprev.ptr_missing; "
         "action=quarantine; rules=noreply-quarantine")
PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def null_milter_on(postfix: PostfixInstance, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[PostfixInstance]:
    """The module's Postfix with the null milter (Subject "hold" -> hold queue); the
    test modules' `holding_postfix` fixture."""
    events = tmp_path_factory.mktemp("null-milter") / "events.jsonl"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HELPERS), "null-milter", f"inet:{port}@127.0.0.1", str(events)],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 15), "null milter did not listen"
        postfix.set_milters(f"inet:127.0.0.1:{port}")
        yield postfix
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # it keeps no state worth a clean stop
        process.wait(timeout=10)


def hold(mta: PostfixInstance, sender: str = "noreply@example.com", subject: str = "hold me",
         trust: str | None = TRUST, rcpts: tuple[str, ...] = ("support@example.org",),
         body: bytes = b"Hello,\r\nplease look at this.\r\n",
         extra: tuple[str, ...] = ()) -> str:
    """Send a message the null milter holds; its queue ID."""
    raw = message(from_=sender or "MAILER-DAEMON@example.com", subject=subject, body=body,
                  extra_headers=extra)
    return hold_raw(mta, raw, sender, trust, rcpts)


def hold_raw(mta: PostfixInstance, raw: bytes, sender: str, trust: str | None = TRUST,
             rcpts: tuple[str, ...] = ("support@example.org",)) -> str:
    if trust:  # trustmilter inserts its header at the very top
        raw = trust.encode() + b"\r\n" + raw
    out = send_one(mta.smtp_port, raw, mail_from=sender, rcpts=rcpts)
    assert out.data is not None and out.data.code == 250, out
    match = re.search(r"queued as (\S+)", out.data.text)
    assert match, out.data
    queue_id = match.group(1)
    assert queue_id in held_ids(mta)
    return queue_id


def held_ids(mta: PostfixInstance) -> set[str]:
    return {str(e["queue_id"]) for e in mta.hold_queue()}


def policy_settings(tmp_path: Path, extra: str = "") -> Settings:
    """A policy file as an operator writes it: SQLite state and the page's data in tmp."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "policy.yaml"
    path.write_text(f"state:\n  backend: sqlite\n  sqlite_path: {tmp_path / 'state.sqlite3'}\n"
                    f"review:\n  data_dir: {tmp_path / 'review'}\n  page_size: 5\n"
                    "  login_attempts: 3\n" + extra)
    return load_settings(path)


def make_app(settings: Settings, mta: PostfixInstance,
             clock: Callable[[], float] = time.time) -> Flask:
    app = create_app(settings, PostfixQueue(mta.config_dir), lambda: state_store(settings),
                     clock)
    app.config["TESTING"] = True
    return app


class Browser:
    """A client of the page that keeps its cookies and finds each form's CSRF token."""

    def __init__(self, app: Flask, language: str = "en", address: str = "127.0.0.1") -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = {"Accept-Language": language}
        self.address = address

    def get(self, path: str, **headers: str) -> TestResponse:
        return self.client.get(path, headers={**self.headers, **headers},
                               environ_base={"REMOTE_ADDR": self.address})

    def post(self, path: str, data: dict[str, object], token: bool = True,
             **headers: str) -> TestResponse:
        """POST `data` with the session's CSRF token (from a page of this session)."""
        if token:
            data = {"csrf_token": self.token(), **data}
        return self.client.post(path, data=data, headers={**self.headers, **headers},
                                environ_base={"REMOTE_ADDR": self.address})

    def token(self) -> str:
        page = self.get("/login")  # logged in: redirected; any other page has the logout form
        if page.status_code != 200:
            page = self.get("/no-such-page")
        found = _CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def login(self, name: str, password: str = PASSWORD) -> TestResponse:
        return self.post("/login", {"name": name, "password": password})
