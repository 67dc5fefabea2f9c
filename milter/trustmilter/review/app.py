"""The review page as a Flask application, made from what it is given (no globals).

`create_app(settings, queue, open_state, clock)`: the policy (its review:
section above all), the hold queue to read and change, a function that
opens the state store releases teach, and the clock. The page's own data
(accounts, audit log, failed logins, the session key) is in
review.data_dir. Templates are Jinja2 with autoescaping on for every
template; the one stylesheet is static/review.css; there is no script,
inline or not (the Content-Security-Policy forbids it), so every page
works as plain HTML forms.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from argon2 import PasswordHasher
from flask import Flask, g, render_template
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from trustmilter.config.settings import Settings
from trustmilter.mail.identity import Identities
from trustmilter.quarantine.queue import HoldQueue
from trustmilter.quarantine.review import QuarantineReview
from trustmilter.review import actions, admin, pages, people, security
from trustmilter.review.accounts import Accounts
from trustmilter.review.attempts import LoginAttempts
from trustmilter.review.audit import AuditLog
from trustmilter.review.context import CONTEXT_KEY, ReviewContext, context
from trustmilter.review.database import Database
from trustmilter.review.language import catalogs, ntr, requested_language, tr
from trustmilter.state.base import StateStore


def create_app(
    settings: Settings,
    queue: HoldQueue,
    open_state: Callable[[], AbstractContextManager[StateStore]],
    clock: Callable[[], float],
    hasher: PasswordHasher | None = None,
) -> Flask:
    """The page for `settings`; ReviewDataError when review.data_dir cannot be used."""
    config = settings.review
    database = Database(Path(config.data_dir))
    app = Flask(__name__)
    security.configure(app, config, security.session_key(Path(config.data_dir)))
    app.extensions[CONTEXT_KEY] = ReviewContext(
        settings=settings,
        queue=queue,
        review=QuarantineReview(queue, settings.policy.headers.trust_header, clock,
                                lapse=settings.checks.reputation.lapse,
                                identities=Identities(settings.address_separators),
                                remember=True),
        open_state=open_state,
        clock=clock,
        accounts=Accounts(database, hasher),
        audit=AuditLog(database),
        attempts=LoginAttempts(database, config.login_attempts, config.login_window),
        catalogs=catalogs(),
        trusted_proxies=tuple(ipaddress.ip_network(n, strict=False)
                              for n in config.trusted_proxies),
    )
    _templates(app)
    # The language first: a refused CSRF token or the proxy login may already render a page.
    app.before_request(_language)
    CSRFProtect(app)
    people.init_login(app)
    for module in (pages, actions, admin):
        app.register_blueprint(module.blueprint)
    app.after_request(security.add_headers)
    app.register_error_handler(CSRFError, _csrf_refused)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _templates(app: Flask) -> None:
    env = app.jinja_env
    env.autoescape = True  # every template, whatever its name ends in
    env.add_extension("jinja2.ext.i18n")
    # newstyle: %(name)s placeholders filled and escaped by Jinja2 itself.
    env.install_gettext_callables(tr, ntr, newstyle=True)  # type: ignore[attr-defined]


def _language() -> None:
    ctx = context()
    g.lang = requested_language(ctx.settings.review.default_language)
    g.translations = ctx.catalogs[g.lang]


def _csrf_refused(error: CSRFError) -> ResponseReturnValue:
    return render_template("refused.html", title=tr("The form has expired"),
                           reason=tr("The form has expired or did not come from this page. "
                                     "Go back, reload the page and try again.")), 400


def _http_error(error: HTTPException) -> ResponseReturnValue:
    code = error.code or 500
    titles = {403: tr("Not for your role"), 404: tr("Not found")}
    return render_template("refused.html", title=titles.get(code, tr("Refused")),
                           reason=""), code
