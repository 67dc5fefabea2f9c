"""The review page's defences, on the real app over a real Postfix hold queue.

No page without a session, no action without its CSRF token, wrong
passwords limited per account and per client address (and then the right
password is refused too, unchecked), a stranger's HTML and script shown as
text, roles (a reviewer reaches no admin page and cannot ask for the
allow-list), a proxy's user header believed only from a trusted proxy,
the Content-Security-Policy and the cookie flags, the page in German and
Japanese, and sessions that end with a password change or logout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from flask import Flask
from markupsafe import escape

from review_rig import (
    PASSWORD,
    Browser,
    held_ids,
    hold,
    make_app,
    null_milter_on,
    policy_settings,
)
from trustmilter.review.context import CONTEXT_KEY, ReviewContext
from trustmilter.review.database import DATABASE_NAME
from trustmilter.review.security import CONTENT_SECURITY_POLICY
from trustmilter.signals import FINDINGS
from trustmilter.testing.postfix import PostfixInstance


@pytest.fixture(scope="module")
def holding_postfix(postfix: PostfixInstance, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[PostfixInstance]:
    with null_milter_on(postfix, tmp_path_factory) as holding:
        yield holding


@pytest.fixture
def mta(holding_postfix: PostfixInstance) -> PostfixInstance:
    holding_postfix.reset()
    return holding_postfix


def ctx(app: Flask) -> ReviewContext:
    found: ReviewContext = app.extensions[CONTEXT_KEY]
    return found


def with_accounts(app: Flask) -> Flask:
    ctx(app).accounts.add("alice", "reviewer", PASSWORD, time.time())
    ctx(app).accounts.add("boss", "admin", PASSWORD, time.time())
    return app


@pytest.fixture
def app(tmp_path: Path, mta: PostfixInstance) -> Flask:
    return with_accounts(make_app(policy_settings(tmp_path), mta))


def logged_in(app: Flask, name: str, language: str = "en") -> Browser:
    browser = Browser(app, language)
    assert browser.login(name).status_code == 302
    return browser


def test_no_page_without_a_session(app: Flask, mta: PostfixInstance) -> None:
    queue_id = hold(mta)
    anonymous = Browser(app)
    for path in ("/", f"/message/{queue_id}", "/audit", "/accounts"):
        answer = anonymous.get(path)
        assert answer.status_code == 302 and answer.location.startswith("/login"), path
    # With a token from the login page, an action still needs a login.
    answer = anonymous.post("/act", {"action": "delete", "id": queue_id})
    assert answer.status_code == 302 and answer.location.startswith("/login")
    assert held_ids(mta) == {queue_id}


def test_no_action_without_the_csrf_token(app: Flask, mta: PostfixInstance) -> None:
    queue_id = hold(mta)
    browser = logged_in(app, "boss")
    for data in ({"action": "delete", "id": queue_id},
                 {"action": "delete", "id": queue_id, "csrf_token": "forged"}):
        answer = browser.post("/act", data, token=False)
        assert answer.status_code == 400 and "The form has expired" in answer.text
    assert browser.post("/allowlist", {"id": queue_id}, token=False).status_code == 400
    assert browser.post("/logout", {}, token=False).status_code == 400
    assert browser.post("/accounts/remove", {"name": "alice"}, token=False).status_code == 400
    assert held_ids(mta) == {queue_id} and ctx(app).audit.count() == 0
    # A token of another session is no token for this one.
    other = logged_in(app, "alice")
    answer = browser.post("/act", {"action": "delete", "id": queue_id,
                                   "csrf_token": other.token()}, token=False)
    assert answer.status_code == 400 and held_ids(mta) == {queue_id}
    # A login form, too.
    assert Browser(app).post("/login", {"name": "alice", "password": PASSWORD},
                             token=False).status_code == 400


def test_wrong_passwords_are_limited_per_account(app: Flask) -> None:
    """review.login_attempts (3 here) failures of one account from anywhere: then even
    the right password is refused, without being checked."""
    for n in range(3):
        answer = Browser(app, address=f"192.0.2.{n + 1}").login("alice", "wrong password!")
        assert answer.status_code == 403 and "Wrong name or password." in answer.text
    refused = Browser(app, address="198.51.100.9").login("alice", PASSWORD)
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert "Try again in 15 minutes" in refused.text
    assert logged_in(app, "boss").get("/").status_code == 200  # others are not locked out


def test_wrong_passwords_are_limited_per_client_address(app: Flask) -> None:
    guesser = "203.0.113.66"
    for name in ("carol", "dave", "alice"):  # whether the account exists or not
        assert Browser(app, address=guesser).login(name, "wrong password!").status_code == 403
    assert Browser(app, address=guesser).login("boss", PASSWORD).status_code == 429
    assert Browser(app, address="203.0.113.7").login("boss", PASSWORD).status_code == 302


def test_the_limit_ends_with_the_window(tmp_path: Path, mta: PostfixInstance) -> None:
    now = [time.time()]
    app = with_accounts(make_app(policy_settings(tmp_path), mta, clock=lambda: now[0]))
    for _ in range(3):
        assert Browser(app).login("alice", "wrong password!").status_code == 403
    assert Browser(app).login("alice", PASSWORD).status_code == 429
    now[0] += 901  # review.login_window: 900 s
    assert Browser(app).login("alice", PASSWORD).status_code == 302


def test_the_forwarded_address_is_believed_from_a_trusted_proxy_only(app: Flask) -> None:
    """Behind the proxy every client has the proxy's address: the limit is per real client."""
    proxy = Browser(app, address="127.0.0.1")  # review.trusted_proxies: loopback
    for _ in range(3):
        assert proxy.post("/login", {"name": "x", "password": "wrong password!"},
                          **{"X-Forwarded-For": "192.0.2.200"}).status_code == 403
    assert proxy.post("/login", {"name": "boss", "password": PASSWORD},
                      **{"X-Forwarded-For": "192.0.2.200"}).status_code == 429
    assert proxy.post("/login", {"name": "boss", "password": PASSWORD},
                      **{"X-Forwarded-For": "192.0.2.201"}).status_code == 302
    # From an untrusted peer the header is the client's own claim: not believed.
    stranger = Browser(app, address="198.51.100.50")
    for n in range(3):
        assert stranger.post("/login", {"name": "y", "password": "wrong password!"},
                             **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code == 403
    assert stranger.login("alice").status_code == 429


def test_html_and_script_in_a_held_message_are_shown_as_text(
        app: Flask, mta: PostfixInstance) -> None:
    subject = 'hold <script>alert("x")</script><b onmouseover=alert(1)>bold</b>'
    body = (b"<html><body><script>alert('body')</script>"
            b"<img src=\"https://tracker.example/p.png\"><p>Invoice &amp; more</p></body></html>")
    queue_id = hold(mta, subject=subject, body=body, extra=(
        "MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8",
        "X-Evil: <iframe src=//example.net>"))
    browser = logged_in(app, "alice")
    for page in (browser.get("/").text, browser.get(f"/message/{queue_id}").text):
        assert "<script" not in page and "<b onmouseover" not in page and "<iframe" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    view = browser.get(f"/message/{queue_id}").text
    assert "tracker.example" not in view  # the HTML body as its text: no link, no image
    assert "Invoice &amp; more" in view
    assert "&lt;iframe src=//example.net&gt;" in view


def test_roles(app: Flask, mta: PostfixInstance) -> None:
    queue_id = hold(mta)
    reviewer, admin = logged_in(app, "alice"), logged_in(app, "boss")
    for path in ("/audit", "/accounts"):
        assert reviewer.get(path).status_code == 403
        assert admin.get(path).status_code == 200
    assert reviewer.post("/allowlist", {"id": queue_id}).status_code == 403
    assert reviewer.post("/accounts/remove", {"name": "boss"}).status_code == 403
    assert ctx(app).accounts.get("boss") is not None
    listing = reviewer.get("/").text
    assert 'href="/audit"' not in listing and 'href="/accounts"' not in listing
    assert "Allow-list" not in reviewer.get(f"/message/{queue_id}").text
    assert "Allow-list noreply@example.com" in admin.get(f"/message/{queue_id}").text
    # What a reviewer may do.
    assert reviewer.post("/act", {"action": "delete", "id": queue_id}).status_code == 302
    assert held_ids(mta) == set()
    # An admin removes accounts (not their own), audited.
    assert admin.post("/accounts/remove", {"name": "boss"}).status_code == 302
    assert "You cannot remove your own account." in admin.get("/accounts").text
    assert admin.post("/accounts/remove", {"name": "alice"}).status_code == 302
    assert ctx(app).accounts.get("alice") is None
    assert reviewer.get("/").status_code == 302  # the removed account's session ended
    assert [e.action for e in ctx(app).audit.newest(5)] == ["account-removed", "delete"]


def test_a_proxy_user_header_only_from_a_trusted_proxy(tmp_path: Path,
                                                       mta: PostfixInstance) -> None:
    settings = policy_settings(tmp_path, "  proxy_user_header: X-Remote-User\n"
                                         "  trusted_proxies: [127.0.0.1/32]\n")
    app = with_accounts(make_app(settings, mta))
    outside = Browser(app, address="192.0.2.99")
    answer = outside.get("/", **{"X-Remote-User": "boss"})
    assert answer.status_code == 302 and answer.location.startswith("/login")
    proxy = Browser(app, address="127.0.0.1")
    answer = proxy.get("/audit", **{"X-Remote-User": "Boss"})
    assert answer.status_code == 200 and "boss (admin)" in answer.text  # its role from here
    assert proxy.get("/audit", **{"X-Remote-User": "alice"}).status_code == 403
    unknown = Browser(app, address="127.0.0.1").get("/", **{"X-Remote-User": "mallory"})
    assert unknown.status_code == 403 and "Not an account here" in unknown.text


def test_security_headers_and_cookie_flags(tmp_path: Path, mta: PostfixInstance) -> None:
    app = with_accounts(make_app(policy_settings(tmp_path), mta))
    browser = Browser(app)
    page = browser.get("/login")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src" not in CONTENT_SECURITY_POLICY  # no script at all
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.text and "style=" not in page.text
    css = browser.get("/static/review.css")
    assert css.status_code == 200 and css.headers["Content-Security-Policy"]
    cookie = browser.login("alice").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    # Behind a TLS proxy (review.url https://) the cookie is Secure.
    secure = with_accounts(make_app(policy_settings(
        tmp_path / "tls", "  url: https://review.example.org/\n"), mta))
    cookie = Browser(secure).login("alice").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    data = tmp_path / "review"
    assert data.stat().st_mode & 0o777 == 0o700
    for name in ("session.key", DATABASE_NAME):
        assert (data / name).stat().st_mode & 0o777 == 0o600, name


def test_logout_is_a_post_and_a_new_password_ends_sessions(app: Flask) -> None:
    browser = logged_in(app, "alice")
    assert browser.get("/logout").status_code == 405
    assert browser.get("/").status_code == 200
    assert browser.post("/logout", {}).status_code == 302
    assert browser.get("/").status_code == 302
    again = logged_in(app, "alice")
    ctx(app).accounts.set_password("alice", "another good password")
    assert again.get("/").status_code == 302


def test_a_session_ends_after_its_lifetime(tmp_path: Path, mta: PostfixInstance) -> None:
    now = [time.time()]
    app = with_accounts(make_app(policy_settings(tmp_path, "  session_lifetime: 600\n"), mta,
                                 clock=lambda: now[0]))
    browser = logged_in(app, "alice")
    now[0] += 599
    assert browser.get("/").status_code == 200
    now[0] += 2
    assert browser.get("/").status_code == 302


def test_a_hash_with_old_parameters_is_renewed_at_login(tmp_path: Path,
                                                        mta: PostfixInstance) -> None:
    settings = policy_settings(tmp_path)
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    made = make_app(settings, mta)
    from trustmilter.review.accounts import Accounts

    Accounts(ctx(made).accounts._database, old).add(  # type: ignore[attr-defined]
        "olga", "reviewer", PASSWORD, time.time())
    database = tmp_path / "review" / DATABASE_NAME
    before = _hash_of(database, "olga")
    assert "m=8192,t=1,p=1" in before
    assert Browser(made).login("olga").status_code == 302
    after = _hash_of(database, "olga")
    assert after != before and "m=65536,t=3,p=4" in after
    assert Browser(made).login("olga").status_code == 302  # the new hash verifies


def _hash_of(database: Path, name: str) -> str:
    import sqlite3

    with sqlite3.connect(database) as db:
        return str(db.execute("SELECT hash FROM accounts WHERE name = ?", (name,)).fetchone()[0])


@pytest.mark.parametrize(("language", "words"), [
    ("de-DE,de;q=0.9,en;q=0.5", ["Zurückgehaltene Nachrichten", "Freigeben",
                                 "Als Spam löschen", "von trustmilter zurückgehalten"]),
    ("ja,en;q=0.1", ["保留中のメッセージ", "配信する", "スパムとして削除する",
                     "trustmilter が保留"]),
    ("fr-CA", ["Messages retenus", "Libérer", "Supprimer comme spam"]),
])
def test_the_page_in_the_browsers_language(app: Flask, mta: PostfixInstance, language: str,
                                           words: list[str]) -> None:
    hold(mta)
    page = logged_in(app, "alice", language).get("/").text
    lang = language[:2]
    assert f'<html lang="{lang}">' in page
    for word in words:
        assert word in page
    from trustmilter.review.language import catalogs

    reason = catalogs()[lang].gettext(FINDINGS["auto.noreply_sender"])
    assert reason != FINDINGS["auto.noreply_sender"] and str(escape(reason)) in page
    assert "Release without teaching" not in page and "Held messages" not in page


def test_the_policy_default_language_for_any_other(tmp_path: Path,
                                                   mta: PostfixInstance) -> None:
    app = with_accounts(make_app(policy_settings(tmp_path, "  default_language: de\n"), mta))
    page = Browser(app, "es, pt;q=0.5").get("/login").text
    assert '<html lang="de">' in page and "Anmelden" in page
    assert '<html lang="en">' in Browser(app, "en-GB").get("/login").text
