"""Who is asking: local logins, a trusted proxy's user, roles, limited attempts.

A person logs in with a local account (`trustmilter review adduser`);
Flask-Login keeps them in the signed session cookie, bound to the
browser ("strong" protection: another address or user agent ends it) and
to the account's password generation (a new password ends old sessions).
Behind a reverse proxy that authenticates people itself, the request
header review.proxy_user_header names the user — believed only from an
address in review.trusted_proxies, and only for a name that is a local
account (whose role counts); from anywhere else the header is ignored.
Logout is a POST (a link or an image elsewhere cannot log anyone out).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

import flask_login
from flask import Blueprint, Flask, abort, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, current_user, login_user, logout_user

from trustmilter.review.accounts import Account
from trustmilter.review.attempts import account_key, address_key
from trustmilter.review.context import Network, context
from trustmilter.review.language import tr
from trustmilter.review.presenting import printable

log = logging.getLogger("trustmilter.review")
blueprint = Blueprint("people", __name__)
F = TypeVar("F", bound=Callable[..., ResponseReturnValue])
LOGIN_AT = "login_at"  # the session's key for when it began (clock seconds)


class User:
    """An account as Flask-Login wants it."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, account: Account) -> None:
        self.account = account

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def is_admin(self) -> bool:
        return self.account.is_admin

    def get_id(self) -> str:
        # The generation: a session made before a password change names an old one.
        return f"{self.account.name}:{self.account.generation}"


def init_login(app: Flask) -> None:
    manager = LoginManager()
    manager.session_protection = "strong"
    manager.login_view = "people.login"
    manager.login_message = ""  # the login page says enough
    manager.user_loader(_load_user)
    manager.init_app(app)
    app.before_request(_session_lifetime)
    app.before_request(_proxy_user)
    app.register_blueprint(blueprint)


def _load_user(user_id: str) -> User | None:
    name, _, generation = user_id.partition(":")
    account = context().accounts.get(name)
    if account is None or account.generation != generation:
        return None
    return User(account)


def client_address(remote: str | None, forwarded: str | None,
                   trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, or — when the peer is a trusted proxy — the
    last address the proxy appended to X-Forwarded-For (the earlier ones are the
    client's own claims)."""
    peer = remote or ""
    if forwarded and _within(peer, trusted):
        last = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return peer
    return peer


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _session_lifetime() -> None:
    """End a session review.session_lifetime seconds after its login, however busy
    (the signed cookie's own age restarts whenever the session changes)."""
    ctx = context()
    since = session.get(LOGIN_AT)
    if since is None:
        return
    if not isinstance(since, (int, float)) or not (
            0 <= ctx.clock() - since < ctx.settings.review.session_lifetime):
        logout_user()
        session.clear()


def _proxy_user() -> ResponseReturnValue | None:
    """Log in the user a trusted proxy names (a before_request hook)."""
    ctx = context()
    header = ctx.settings.review.proxy_user_header
    if not header or not _within(request.remote_addr or "", ctx.trusted_proxies):
        return None
    name = request.headers.get(header, "").strip()
    if not name:
        return None
    account = ctx.accounts.get(name)
    if account is None:
        log.warning("%s", printable(f"review: the proxy named {name!r}, not an account here"))
        return render_template("refused.html", title=tr("Not an account here")), 403
    user = User(account)
    if not current_user.is_authenticated or current_user.get_id() != user.get_id():
        _start_session(user)
    return None


def _start_session(user: User) -> None:
    session.clear()  # nothing of an earlier session carries over
    login_user(user)
    session[LOGIN_AT] = context().clock()
    session.permanent = True  # the cookie, too, ends after review.session_lifetime


def login_required(view: F) -> F:
    """Flask-Login's login_required, typed (the library ships no annotations)."""
    return cast(F, flask_login.login_required(view))


def admin_only(view: F) -> F:
    """The view for admins; 403 for a reviewer."""
    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if not getattr(current_user, "is_admin", False):
            abort(403)
        return view(*args, **kwargs)
    return cast(F, checked)


def current_name() -> str:
    return str(current_user.name)


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this page only (never //host or a scheme)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.held")


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("pages.held"))
    if request.method == "GET":
        return render_template("login.html", title=tr("Log in"))
    ctx = context()
    name = request.form.get("name", "")
    password = request.form.get("password", "")
    address = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                             ctx.trusted_proxies)
    keys = (account_key(name), address_key(address))
    now = ctx.clock()
    if ctx.attempts.limited(keys, now):
        # Refused before the password is looked at: guessing on gains nothing.
        log.warning("%s", printable(f"review: login of {name!r} from {address} refused: "
                                    "too many failed attempts"))
        minutes = max(1, ctx.settings.review.login_window // 60)
        return render_template("login.html", title=tr("Log in"), name=name,
                               error=tr("Too many failed logins. Try again in %(minutes)s "
                                        "minutes.") % {"minutes": minutes}), 429
    account = ctx.accounts.verify(name, password)
    if account is None:
        ctx.attempts.failed(keys, now)
        log.warning("%s", printable(f"review: failed login of {name!r} from {address}"))
        return render_template("login.html", title=tr("Log in"), name=name,
                               error=tr("Wrong name or password.")), 403
    ctx.attempts.succeeded(account_key(name))
    _start_session(User(account))
    log.info("%s", printable(f"review: {account.name} logged in from {address}"))
    return redirect(_safe_next(request.args.get("next")))


@blueprint.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    logout_user()
    session.clear()
    return redirect(url_for("people.login"))
