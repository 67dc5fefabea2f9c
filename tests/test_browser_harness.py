"""The browser harness (trustmilter.testing.browser): Debian's Chromium, headless.

A small page served by http.server on 127.0.0.1 records every request's
Accept-Language and answers a plain HTML form (no JavaScript: the review
page works without it, under a CSP that forbids inline script). The tests
click the form's button and read the answer page, check the language the
server was told, and find the screenshot saved as a PNG of the window's
size. Chromium or chromedriver missing: skipped on a developer's machine,
a failure under CI=true (packaging/install.sh --test installs both).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trustmilter.testing.browser import (
    FLAGS,
    Browser,
    BrowserOptions,
    artifacts_directory,
)

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title></head>
<body><h1 id="title">Held mail</h1>
<form method="post" action="/clicked"><input type="hidden" name="queue_id" value="4F2A1B">
<button id="release" type="submit">Release</button></form></body></html>
"""


@dataclass
class Seen:
    """What the page's server was sent (the handler threads append)."""

    languages: list[str] = field(default_factory=list)
    posts: list[bytes] = field(default_factory=list)


def serve(seen: Seen) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.languages.append(self.headers.get("Accept-Language", ""))
            self._answer(PAGE)

        def do_POST(self) -> None:
            seen.languages.append(self.headers.get("Accept-Language", ""))
            length = int(self.headers.get("Content-Length", "0"))
            seen.posts.append(self.rfile.read(length))
            self._answer(b'<!doctype html><title>done</title><p id="done">released</p>')

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the assertions say what matters

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def page() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = serve(seen)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (RFC 2083 §4.1.1)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
    return struct.unpack(">II", head[16:24])


def test_a_click_the_language_and_a_screenshot(
    browser_installed: None, page: tuple[str, Seen], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    url, seen = page
    options = BrowserOptions(language="de", width=1024, height=768, artifacts=tmp_path / "shots")
    with Browser(options) as browser:
        browser.open(url)
        assert browser.driver.find_element(By.ID, "title").text == "Held mail"
        shot = browser.screenshot("harness-list")
        browser.driver.find_element(By.ID, "release").click()
        assert browser.driver.find_element(By.ID, "done").text == "released"
    assert seen.posts == [b"queue_id=4F2A1B"]
    assert seen.languages and all(lang == "de" for lang in seen.languages), seen.languages
    assert shot == tmp_path / "shots" / "harness-list.png"
    assert png_size(shot) == (1024, 768)
    assert shot.stat().st_size > 2000  # a rendered page, not an empty image


def test_a_language_list_is_sent_with_weights(
    browser_installed: None, page: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = page
    with Browser(BrowserOptions(language="ja,en", artifacts=tmp_path)) as browser:
        browser.open(url)
    assert seen.languages[0].startswith("ja,en;q=0.")


def test_screenshot_names_cannot_leave_the_artefacts_directory(
    browser_installed: None, tmp_path: Path
) -> None:
    with Browser(BrowserOptions(artifacts=tmp_path)) as browser:
        for name in ("../escape", "/etc/x", "", ".hidden", "a/b"):
            with pytest.raises(ValueError):
                browser.screenshot(name)
    assert list(tmp_path.iterdir()) == []


def test_the_artefacts_directory_and_the_flags() -> None:
    assert artifacts_directory({"TRUSTMILTER_TEST_ARTIFACTS": "/tmp/shots"}) == Path("/tmp/shots")
    default = artifacts_directory({})
    assert default.name == "test-artifacts" and (default.parent / "setup.cfg").exists()
    ignored = (default.parent / ".gitignore").read_text().split()
    assert "test-artifacts/" in ignored
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"):
        assert flag in FLAGS
