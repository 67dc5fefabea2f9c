"""The review page end to end, in Debian's Chromium, on real everything.

One rig for the module (`rig`): the private Postfix (conftest `postfix`)
with ``trustmilter run`` as its milter and the policy's state store in an
SQLite file, the test DNS server, the privileged helper as root
(helper_rig.py), and ``trustmilter review serve`` as uid 65534 (conftest
`unprivileged_runtime`) on a free loopback port, with an admin account made
by ``trustmilter review adduser --password-stdin``. Three messages come from
example.com's own server (192.0.2.10, by XCLIENT) with SPF, DKIM and DMARC
in order, so only what they carry holds them, as the shipped policy says:
two newsletters (List-Id: rule auto-bulk) and a machine-generated alert
(Auto-Submitted: rule auto-machine-generated).

In the browser (trustmilter.testing.browser): log in, see what the daemon
held with its reasons in words, filter by reason and by sender, open a
message, release it (Postfix delivers it; the sender's reputation rises,
as ``trustmilter reputation list --json`` reports), delete another as spam
(its sender gets a spam mark), and find both in the audit log; then the
page in German and in Japanese. Screenshots of the list and of a message
are saved in the harness's artefacts directory. Chromium missing: skipped
on a developer's machine, a failure under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helper_rig import Helper, running_helper
from keys import key_zone, message, rsa_key, sign
from smtp_helpers import send_one
from trustmilter.config.load import load_settings
from trustmilter.i18n import translator
from trustmilter.signals import FINDINGS
from trustmilter.state.open import open_store
from trustmilter.testing.browser import Browser, BrowserOptions
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance, free_port, wait_for_port
from trustmilter.testing.unprivileged import Runtime
from zones import GOOD_SENDER

AUTHSERV_ID = "mx.example.org"
KEY = rsa_key(1024)
ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
""" + key_zone(KEY, "sel", "example.com")
CLIENT = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
ADMIN, PASSWORD = "alice", "correct horse battery staple"
NEWS, PROMO, ALERTS = "news@example.com", "promo@example.com", "alerts@example.com"
BULK, MACHINE = "auto.bulk", "auto.machine_generated"
PAGE_WAIT = 30.0
COMMAND_TIMEOUT = 60


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess
    helper: Helper
    page: subprocess.Popen[bytes]
    policy: Path
    url: str
    held: dict[str, str]  # sender -> queue ID

    def reputation_of(self, identity: str) -> dict[str, Any] | None:
        listed = json.loads(trustmilter(self.policy, "reputation", "list", "--json"))[
            "reputations"]
        found = [r for r in listed if r["sender"] == identity]
        return found[0] if found else None

    def held_ids(self) -> set[str]:
        return {str(entry["queue_id"]) for entry in self.postfix.hold_queue()}

    def newest_first(self, *senders: str) -> list[str]:
        """The queue IDs of `senders`' held messages as the list orders them: by
        arrival, newest first (Postfix counts whole seconds), then by queue ID."""
        arrived = {str(e["queue_id"]): float(str(e["arrival_time"]))
                   for e in self.postfix.hold_queue()}
        return sorted((self.held[s] for s in senders),
                      key=lambda queue_id: (-arrived[queue_id], queue_id))


def trustmilter(policy: Path, *argv: str, stdin: str = "") -> str:
    """The real command line, as root (the operator); its standard output."""
    done = subprocess.run([sys.executable, "-m", "trustmilter", *argv, "--policy", str(policy)],
                          input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _hold(rig_postfix: PostfixInstance, daemon: DaemonProcess, sender: str, subject: str,
          *headers: str) -> str:
    """A signed message from `sender` that the daemon holds; its queue ID."""
    raw = sign(message(from_=f"Sender <{sender}>", subject=subject, extra_headers=headers,
                       message_id=f"<{subject.replace(' ', '.')}@example.com>",
                       body=b"Hello,\r\nthis week's <b>news</b>.\r\n"), KEY, "example.com")
    out = send_one(rig_postfix.smtp_port, raw, mail_from=sender, **CLIENT)
    assert out.data is not None and out.data.code == 250, out
    match = re.search(r"queued as (\S+)", out.data.text)
    assert match, out.data
    queue_id = match.group(1)
    verdict = daemon.wait_verdict(queue_id)
    assert verdict.fields["action"] == "quarantine", verdict.fields
    return queue_id


def _owned_by(runtime: Runtime, *paths: Path) -> None:
    for path in paths:
        os.chown(path, runtime.uid, runtime.gid)


@pytest.fixture(scope="module")
def rig(browser_installed: None, postfix: PostfixInstance, _dns_test_server: DnsTestServer,
        unprivileged_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Rig]:
    # Not pytest's tmp dirs (root's alone): the page's user reads the policy here.
    work = Path(tempfile.mkdtemp(prefix="trustmilter-review-e2e-"))
    work.chmod(0o755)
    logs = tmp_path_factory.mktemp("review-e2e")
    state, data = work / "state", work / "review"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    policy = write_policy(
        work / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver, dns={"cache_size": 0},
        state={"backend": "sqlite", "sqlite_path": str(state / "state.sqlite3")},
        review={"listen": f"127.0.0.1:{port}", "user": "nobody",
                "helper_socket": str(work / "run" / "helper.sock"),
                "postfix_config": str(postfix.config_dir), "data_dir": str(data),
                "default_language": "en", "page_size": 10})
    policy.chmod(0o644)
    # The store, made now and given to the page's user: the daemon (root)
    # writes it too, and SQLite gives the files root makes beside it (-wal,
    # -shm) the database's owner.
    open_store(load_settings(policy).state).close()
    _owned_by(unprivileged_runtime, state, *state.iterdir())
    _dns_test_server.load(ZONE)
    daemon = DaemonProcess.start(policy, logs / "trustmilter.log")
    page: subprocess.Popen[bytes] | None = None
    try:
        postfix.set_milters(daemon.postfix_spec, default_action="tempfail")
        held = {NEWS: _hold(postfix, daemon, NEWS, "Weekly news", "List-Id: News <news.example.com>"),
                ALERTS: _hold(postfix, daemon, ALERTS, "Disk almost full",
                              "Auto-Submitted: auto-generated"),
                PROMO: _hold(postfix, daemon, PROMO, "Spring offers",
                             "List-Id: Offers <promo.example.com>")}
        with running_helper(postfix.config_dir, work, logs / "helper.log") as helper:
            trustmilter(policy, "review", "adduser", ADMIN, "--role", "admin",
                        "--password-stdin", stdin=PASSWORD + "\n")
            with (logs / "page.log").open("wb") as page_log:
                page = subprocess.Popen(
                    unprivileged_runtime.argv("review", "serve", "--policy", str(policy)),
                    stdin=subprocess.DEVNULL, stdout=page_log, stderr=page_log,
                    **unprivileged_runtime.process_options())  # type: ignore[call-overload]
            assert wait_for_port("127.0.0.1", port, PAGE_WAIT), (
                (logs / "page.log").read_text(errors="replace"))
            yield Rig(postfix, daemon, helper, page, policy, url, held)
    finally:
        if page is not None:
            page.terminate()
            page.wait(timeout=30)
        assert daemon.stop() == 0, "SIGTERM: clean exit\n" + daemon.log_tail()
        shutil.rmtree(work, ignore_errors=True)


# ---- the browser ---------------------------------------------------------------------


class Page:
    """A browser on the review page, with the few steps the tests repeat."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser, self.url = browser, url
        self.driver = browser.driver

    def open(self, path: str) -> None:
        self.browser.open(self.url + path)

    def submit(self, css: str) -> None:
        """Click the button `css` and wait for the page it loads."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.CSS_SELECTOR, css).click()
        WebDriverWait(self.driver, PAGE_WAIT).until(expected_conditions.staleness_of(old))
        # The old page is gone; wait until the new one is whole, so that no
        # element is read from a document still being replaced.
        WebDriverWait(self.driver, PAGE_WAIT).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete")

    def login(self) -> None:
        from selenium.webdriver.common.by import By

        self.open("/login")
        self.driver.find_element(By.ID, "name").send_keys(ADMIN)
        self.driver.find_element(By.ID, "password").send_keys(PASSWORD)
        self.submit("form.login button[type=submit]")

    def text(self, css: str = "body") -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def listed(self) -> list[str]:
        """The queue IDs of the list's rows, top first."""
        from selenium.webdriver.common.by import By

        rows = self.driver.find_elements(By.CSS_SELECTOR, "table.held tbody tr")
        return [str(row.get_dom_attribute("id")).removeprefix("m-") for row in rows]

    def flash(self) -> str:
        from selenium.webdriver.common.by import By

        return " ".join(str(e.text) for e in self.driver.find_elements(By.CSS_SELECTOR, "p.flash"))


@pytest.fixture(scope="module")
def page(rig: Rig) -> Iterator[Page]:
    """An English browser, logged in as the admin."""
    with Browser(BrowserOptions(language="en")) as browser:
        logged_in = Page(browser, rig.url)
        logged_in.login()
        yield logged_in


# ---- the tests -------------------------------------------------------------------------


def test_log_in_and_see_what_the_daemon_held(rig: Rig, page: Page) -> None:
    assert page.driver.current_url == rig.url + "/"
    assert page.text("h1") == "Held messages"
    assert page.text("header .who") == f"{ADMIN} (admin)"
    assert page.listed() == rig.newest_first(NEWS, ALERTS, PROMO)
    assert rig.held_ids() == set(rig.held.values())
    news = page.text(f"#m-{rig.held[NEWS]}")
    assert NEWS in news and "support@example.org" in news and "Weekly news" in news
    assert f"{BULK}: {FINDINGS[BULK]}" in news  # the reason in words, as `check` says it
    assert "held by trustmilter" in news and "rules: auto-bulk" in news
    assert f"Authentication-Results: {AUTHSERV_ID}" in news
    alerts = page.text(f"#m-{rig.held[ALERTS]}")
    assert f"{MACHINE}: {FINDINGS[MACHINE]}" in alerts
    shot = page.browser.screenshot("review-list")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # Nothing serving HTTP runs as root: the page is uid 65534, and the
    # helper answered it (not root) for the list.
    assert _uid_of(rig.page.pid) == 65534
    rig.helper.wait_for_log(rf"peer uid=65534 pid={rig.page.pid}: list: ok, 3 held")


def test_filter_by_reason_and_by_sender(rig: Rig, page: Page) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page.open("/")
    reasons = Select(page.driver.find_element(By.NAME, "reason"))
    assert {BULK, MACHINE} <= {str(o.get_attribute("value")) for o in reasons.options}
    reasons.select_by_value(MACHINE)
    page.submit("form.filters button[type=submit]")
    assert page.listed() == [rig.held[ALERTS]]
    assert page.text("p.count") == "Held messages: 1"

    page.open("/")
    page.driver.find_element(By.NAME, "sender").send_keys("news@")
    page.submit("form.filters button[type=submit]")
    assert page.listed() == [rig.held[NEWS]]
    assert "sender=news%40" in page.driver.current_url  # a filter is a link to keep

    Select(page.driver.find_element(By.NAME, "reason")).select_by_value(BULK)
    page.driver.find_element(By.NAME, "sender").clear()
    page.submit("form.filters button[type=submit]")
    assert page.listed() == rig.newest_first(NEWS, PROMO)


def test_release_one_delete_another_as_spam_and_the_audit_log(rig: Rig, page: Page) -> None:
    from selenium.webdriver.common.by import By

    news, alerts = rig.held[NEWS], rig.held[ALERTS]
    assert rig.reputation_of(NEWS) is None and rig.reputation_of(ALERTS) is None

    # Open the newsletter from the list, and release it from its page.
    page.open("/")
    page.driver.find_element(By.CSS_SELECTOR, f"#m-{news} a").click()
    assert page.driver.current_url == f"{rig.url}/message/{news}"
    assert page.text("dl.summary code") == news
    assert "this week's <b>news</b>." in page.text("pre.body")  # text, never markup
    headers = page.text("table.headers")
    assert "List-Id" in headers and "X-Trustmilter-Trust" in headers
    page.browser.screenshot("review-message")
    page.submit("form.actions button[value=release]")
    assert page.flash() == f"Released: 1. Learned about: {NEWS} (1)"

    # Postfix delivered it, and the store learned about its sender.
    (delivered,) = rig.postfix.wait_delivered(1)
    assert delivered.header("Subject") == ["Weekly news"]
    assert delivered.header("Delivered-To") == ["support@example.org"]
    learned = rig.reputation_of(NEWS)
    assert learned is not None and (learned["releases"], learned["spam_marks"]) == (1, 0)
    rig.helper.wait_for_log(rf"peer uid=65534 pid={rig.page.pid}: release {news}: ok, released")

    # The alert, chosen in the list, deleted as spam: gone, and its sender marked.
    assert news not in page.listed()
    page.driver.find_element(By.CSS_SELECTOR, f"#m-{alerts} input[type=checkbox]").click()
    page.submit("button[value=delete-as-spam]")
    assert page.flash() == f"Deleted as spam: 1. Marked as spam: {ALERTS} (1)"
    assert page.listed() == [rig.held[PROMO]]
    assert rig.held_ids() == {rig.held[PROMO]}
    marked = rig.reputation_of(ALERTS)
    assert marked is not None and (marked["releases"], marked["spam_marks"]) == (0, 1)
    assert MACHINE in marked["spam_reasons"]
    assert len(rig.postfix.delivered()) == 1  # the spam went nowhere

    # The audit log: both, newest first, by whom, on which queue IDs.
    page.driver.find_element(By.LINK_TEXT, "Audit log").click()
    rows = [[str(cell.text) for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in page.driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")]
    assert [row[1:5] for row in rows[:2]] == [
        [ADMIN, "deleted as spam", alerts, "done"],
        [ADMIN, "released", news, "done"]]
    assert rows[0][5] == f"{ALERTS} (1)" and rows[1][5] == f"{NEWS} (1)"
    assert rows[2][1:3] == ["root (command line)", "account added"]  # the adduser


@pytest.mark.parametrize(("language", "words"), [
    ("de", {"title": "Zurückgehaltene Nachrichten", "log in": "Anmelden",
            "password": "Passwort", "why": "Warum zurückgehalten", "release": "Freigeben",
            "spam": "Als Spam löschen", "count": "Zurückgehaltene Nachrichten: 1"}),
    ("ja", {"title": "保留中のメッセージ", "log in": "ログイン", "password": "パスワード",
            "why": "保留の理由", "release": "配信する", "spam": "スパムとして削除する",
            "count": "保留中のメッセージ: 1 件"}),
])
def test_the_page_in_german_and_japanese(rig: Rig, language: str, words: dict[str, str]
                                         ) -> None:
    """What Chromium's Accept-Language asks for; the reasons in the catalog's words too."""
    from selenium.webdriver.common.by import By

    with Browser(BrowserOptions(language=language)) as browser:
        page = Page(browser, rig.url)
        page.open("/login")
        assert page.driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == language
        assert page.text("form.login button") == words["log in"]
        assert page.text("label[for=password]") == words["password"]
        page.login()
        assert page.text("h1") == words["title"]
        assert page.text("p.count") == words["count"]
        assert page.listed() == [rig.held[PROMO]]
        table = page.text("table.held")
        assert words["why"] in table
        in_words = translator(language)(FINDINGS[BULK])
        assert in_words != FINDINGS[BULK] and f"{BULK}: {in_words}" in table
        buttons = page.text("div.actions")
        assert words["release"] in buttons and words["spam"] in buttons
        page.browser.screenshot(f"review-list-{language}")


def _uid_of(pid: int) -> int:
    """The real uid of process `pid` (/proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")
