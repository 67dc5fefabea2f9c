"""A real browser for the test suite: Debian's Chromium, headless, driven by Selenium.

`Browser` starts ``/usr/bin/chromium`` through ``/usr/bin/chromedriver``
(Debian's chromium and chromium-driver packages, installed by
packaging/install.sh --test) with a fresh profile in a temporary
directory, the language the page should see in Accept-Language, and a
fixed window size, so screenshots are comparable between runs.
`Browser.screenshot(name)` saves a PNG into the artefacts directory
(`artifacts_directory`: ``TRUSTMILTER_TEST_ARTIFACTS``, else
``test-artifacts/`` at the top of the source tree), which CI keeps.

Nothing is downloaded, ever: the driver's path is given to Selenium's
`Service`, which makes Selenium skip Selenium Manager (the tool that would
fetch a browser and driver from the network), and ``SE_OFFLINE`` is set for
the driver's process as well. Chromium's own background traffic (updates,
sync, field trials, QUIC) is switched off by its flags; the pages it is
pointed at are on 127.0.0.1.

`browser_unavailable()` says why this machine cannot run it (None: it
can); the tests skip on that outside CI and fail under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # selenium is a test dependency: imported when a browser starts
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS_VARIABLE = "TRUSTMILTER_TEST_ARTIFACTS"
# The source tree's top (milter/trustmilter/testing/browser.py -> ../../..).
SOURCE_TREE = Path(__file__).resolve().parents[3]

# Flags this machine needs, and why:
FLAGS = (
    "--headless=new",  # Chromium's real renderer, without a display
    "--no-sandbox",  # the tests run as root, where the sandbox refuses to start
    "--disable-gpu",  # no GPU in CI or containers
    "--disable-dev-shm-usage",  # a container's /dev/shm is tiny; use /tmp
    "--disable-quic",  # no QUIC probing of anything
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",  # no update checks, no field-trial fetches
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--password-store=basic",  # no desktop keyring to ask
    "--hide-scrollbars",  # screenshots without scrollbars of varying width
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


def browser_unavailable() -> str | None:
    """Why Chromium cannot be driven here (None: it can)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return (f"{path} is missing (apt-get install {package}; "
                    "packaging/install.sh --test installs it)")
    try:
        import selenium  # noqa: F401  (the test extra of setup.cfg)
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def artifacts_directory(environ: dict[str, str] | None = None) -> Path:
    """Where screenshots go: $TRUSTMILTER_TEST_ARTIFACTS, else test-artifacts/ in the tree."""
    env = os.environ if environ is None else environ
    configured = env.get(ARTIFACTS_VARIABLE, "")
    return Path(configured) if configured else SOURCE_TREE / "test-artifacts"


@dataclass(frozen=True, slots=True)
class BrowserOptions:
    """How the browser presents itself to the page."""

    # What Accept-Language says: "de" sends "de", "ja,en" sends "ja,en;q=0.9".
    language: str = "en"
    # The viewport: what the page lays out in and what a screenshot shows.
    width: int = 1280
    height: int = 900
    artifacts: Path = field(default_factory=artifacts_directory)


class Browser:
    """One headless Chromium, its chromedriver and a throw-away profile.

    Use as a context manager; `driver` is Selenium's WebDriver for
    everything else (find_element, click, page_source).
    """

    def __init__(self, options: BrowserOptions | None = None) -> None:
        self.options = options or BrowserOptions()
        self._profile = tempfile.mkdtemp(prefix="trustmilter-chromium-")
        try:
            self.driver = _start(self.options, self._profile)
        except BaseException:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise

    def open(self, url: str) -> None:
        """Load `url` and wait until the document is loaded (Selenium's own wait)."""
        self.driver.get(url)

    def screenshot(self, name: str) -> Path:
        """Save the visible page as ARTIFACTS/NAME.png; its path."""
        if not _NAME.match(name):
            raise ValueError(f"not a file name for a screenshot: {name!r}")
        self.options.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.options.artifacts / f"{name}.png"
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError(f"Chromium saved no screenshot to {path}")
        return path

    def close(self) -> None:
        """Stop Chromium and its driver; remove the profile. Safe to call twice."""
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _start(options: BrowserOptions, profile: str) -> WebDriver:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome = webdriver.ChromeOptions()
    chrome.binary_location = CHROMIUM
    for flag in FLAGS:
        chrome.add_argument(flag)
    chrome.add_argument(f"--user-data-dir={profile}")
    chrome.add_argument(f"--window-size={options.width},{options.height}")
    chrome.add_argument(f"--lang={options.language.split(',')[0]}")
    # The header itself comes from this preference (--lang alone does not
    # reach Accept-Language in headless mode).
    chrome.add_experimental_option("prefs", {"intl.accept_languages": options.language})
    env = {**os.environ, "SE_OFFLINE": "true"}
    service = Service(executable_path=CHROMEDRIVER, env=env)
    driver = webdriver.Chrome(service=service, options=chrome)
    try:
        driver.set_page_load_timeout(30)
        # The page's viewport, and so every screenshot, exactly width x height
        # (--window-size counts the window, of which headless keeps some).
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": options.width, "height": options.height,
            "deviceScaleFactor": 1, "mobile": False})
    except BaseException:
        driver.quit()
        raise
    return driver
