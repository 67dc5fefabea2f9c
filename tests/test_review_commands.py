"""``trustmilter review``: the account commands, and ``serve`` as a real process.

The account commands run in-process on a policy whose review.data_dir is
in the test's tmp dir. ``serve`` runs as a subprocess: as root it refuses
in one line; as an unprivileged user (uid 65534, when the tests run as
root; conftest's `unprivileged_runtime` gives it an interpreter and a
copy of trustmilter it can read, wherever the checkout is) it serves the
login page over HTTP; a port in use is one line.
Also here: every word the page's templates and code show is in the
German, French and Japanese catalogs.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from jinja2.ext import babel_extract

from helper_rig import socket_base
from test_i18n import po_entries
from trustmilter.cli import main
from trustmilter.review.database import DATABASE_NAME
from trustmilter.signals import FINDINGS
from trustmilter.testing.postfix import free_port, wait_for_port
from trustmilter.testing.unprivileged import Runtime

REVIEW = Path(__file__).resolve().parent.parent / "milter" / "trustmilter" / "review"
NOBODY = 65534


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"review:\n  data_dir: {tmp_path / 'review'}\n")
    return path


def review(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, policy: Path,
           *argv: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    status = main(["review", *argv, "--policy", str(policy)])
    out, err = capsys.readouterr()
    return status, out, err


def test_account_commands(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                          policy: Path) -> None:
    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        return review(capsys, monkeypatch, policy, *argv, stdin=stdin)

    assert run("users") == (0, "no accounts yet: trustmilter review adduser NAME --role admin\n",
                            "")
    assert run("adduser", "Alice", "--role", "admin", "--password-stdin",
               stdin="correct horse battery\n") == (0, "alice: added (admin)\n", "")
    assert run("adduser", "bob", "--password-stdin", stdin="another good one\n")[0] == 0
    status, out, _ = run("users", "--json")
    listed = json.loads(out)["accounts"]
    assert [(a["name"], a["role"]) for a in listed] == [("alice", "admin"), ("bob", "reviewer")]
    for argv, stdin, why in (
            (("adduser", "alice", "--password-stdin"), "correct horse battery\n", "exists"),
            (("adduser", "carol", "--password-stdin"), "short\n", "too short"),
            (("adduser", "bad name", "--password-stdin"), "correct horse battery\n",
             "not an account name"),
            (("adduser", "carol"), "", "--password-stdin"),  # no terminal to ask on
            (("passwd", "nobody-here", "--password-stdin"), "correct horse battery\n",
             "no such account"),
            (("deluser", "nobody-here"), "", "no such account")):
        status, out, err = run(*argv, stdin=stdin)
        assert (status, out) == (1, ""), argv
        assert err.count("\n") == 1 and why in err, err
    assert run("passwd", "bob", "--password-stdin", stdin="a brand new password\n") == (
        0, "bob: password set; its sessions have ended\n", "")
    assert run("deluser", "BOB") == (0, "bob: removed\n", "")
    status, out, _ = run("users")
    assert status == 0 and re.fullmatch(r"alice  admin  created \S+ \S+Z\n", out)
    data = policy.parent / "review"
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / DATABASE_NAME).stat().st_mode & 0o777 == 0o600
    import sqlite3

    with sqlite3.connect(data / DATABASE_NAME) as db:
        rows = db.execute("SELECT who, action, detail FROM audit ORDER BY id").fetchall()
    assert [(action, detail) for _, action, detail in rows] == [
        ("account-added", "alice (admin)"), ("account-added", "bob (reviewer)"),
        ("password-set", "bob"), ("account-removed", "bob")]
    assert all(who.endswith("(command line)") for who, _, _ in rows)


# ---- serve, as a process -------------------------------------------------------


def _serve(policy: Path, *more: str, runtime: Runtime | None = None) -> subprocess.Popen[str]:
    """``review serve`` as this process's user, or as `runtime`'s (uid 65534)."""
    argv = ["review", "serve", "--policy", str(policy), *more]
    if runtime is None:
        return subprocess.Popen([sys.executable, "-m", "trustmilter.cli", *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.Popen(runtime.argv(*argv), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **runtime.process_options())  # type: ignore[call-overload]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory uid 65534 can read (pytest's tmp dirs are 0700 root)."""
    with socket_base() as path:
        yield path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as CI runs the tests")
def test_serve_refuses_root(open_dir: Path) -> None:
    policy = open_dir / "policy.yaml"
    policy.write_text(f"review:\n  data_dir: {open_dir / 'data'}\n  user: helpdesk\n")
    done = _serve(policy)
    out, err = done.communicate(timeout=60)
    assert done.returncode == 2 and out == ""
    assert err == ("trustmilter: review serve: refusing to run as root; run it as helpdesk "
                   "(review.user), e.g. through the systemd unit trustmilter-review.service\n")
    assert not (open_dir / "data").exists()  # nothing made


def test_serve_as_an_unprivileged_user(open_dir: Path, unprivileged_runtime: Runtime) -> None:
    data = open_dir / "data"
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY, NOBODY)  # as systemd's StateDirectory= makes it
    port = free_port()
    policy = open_dir / "policy.yaml"
    policy.write_text(f"review:\n  data_dir: {data}\n  listen: 127.0.0.1:{free_port()}\n")
    process = _serve(policy, "--listen", f"127.0.0.1:{port}", runtime=unprivileged_runtime)
    try:
        assert wait_for_port("127.0.0.1", port, 30), process.stderr and process.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as answer:
            page = answer.read().decode()
            headers = answer.headers
        assert answer.status == 200 and '<input id="password"' in page
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert headers["Server"] == "trustmilter"
        key = data / "session.key"
        assert key.stat().st_uid == NOBODY and key.stat().st_mode & 0o777 == 0o600
        # A second page on the same port: one line naming it.
        second = _serve(policy, "--listen", f"127.0.0.1:{port}", runtime=unprivileged_runtime)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1 and out == ""
        assert err == (f"trustmilter: review serve: 127.0.0.1:{port} is in use by another "
                       "process\n")
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_serve_with_a_data_dir_it_cannot_make(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """As the page's user, an unusable data directory is one line (exit status 2)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"review:\n  data_dir: {blocker / 'data'}\n  listen: 127.0.0.1:{free_port()}\n")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as the page's user would be
    capsys.readouterr()
    assert main(["review", "serve", "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trustmilter: review serve: {blocker / 'data'}: cannot create")
    assert err.count("\n") == 1


# ---- the page's words, translated ----------------------------------------------


def page_msgids() -> set[str]:
    """Every msgid of the page: the templates' _() and the code's tr()/N_() literals."""
    found: set[str] = set()
    for template in (REVIEW / "templates").glob("*.html"):
        for _, _, message, _ in babel_extract(io.BytesIO(template.read_bytes()),
                                              ("_", "gettext"), [], {}):
            # With named arguments (_("%(n)s", n=x)) the message comes as a tuple.
            found.update(m for m in (message if isinstance(message, tuple) else (message,))
                         if isinstance(m, str))
    for module in REVIEW.glob("*.py"):
        code = module.read_text()
        found.update(re.findall(r'\b(?:N_|tr)\(\s*"((?:[^"\\]|\\.)*)"\s*\)', code))
        found.update(a + b for a, b in re.findall(
            r'\btr\(\s*"((?:[^"\\]|\\.)*)"\s*\n\s*"((?:[^"\\]|\\.)*)"\s*\)', code))
    return found


def test_every_word_of_the_page_and_every_finding_is_translated() -> None:
    wanted = page_msgids() | set(FINDINGS.values())
    assert len(wanted) > 200 and "Release without teaching" in wanted
    for lang in ("de", "fr", "ja"):
        entries = po_entries(lang)
        missing = sorted(msgid for msgid in wanted if not entries.get(msgid))
        assert not missing, (lang, missing)
