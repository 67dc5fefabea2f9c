"""What every response and every session of the page carries for safety.

- The session key: 32 random bytes in review.data_dir/session.key, made
  0600 on the first start and kept (sessions survive a restart; deleting
  the file ends them all).
- Cookies: HttpOnly (no script reads them), SameSite=Strict (no other site
  sends them along: a second line behind the CSRF tokens), Secure when
  review.url is https:// (the page is behind a TLS proxy), and a session
  that ends after review.session_lifetime seconds (checked by the server
  on the signed cookie, whatever the browser keeps).
- Response headers: a Content-Security-Policy that allows nothing but the
  page's own stylesheet and images and its own forms (no script at all,
  no frames around it, no <base>), nosniff, no Referer sent anywhere (a
  held message's link must not learn the page's address), and no caching
  of pages that show mail.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response

from trustmilter.config.review import ReviewConfig
from trustmilter.review.database import ReviewDataError

SESSION_KEY_NAME = "session.key"
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",  # for browsers older than frame-ancestors
}


def session_key(data_dir: Path) -> bytes:
    """The key in `data_dir`, made (0600, never overwritten) if it is not there yet."""
    path = data_dir / SESSION_KEY_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    except OSError as error:
        raise ReviewDataError(f"{path}: cannot create the session key: "
                              f"{error.strerror}") from error
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    try:
        key = path.read_bytes()
    except OSError as error:
        raise ReviewDataError(f"{path}: cannot read the session key: {error.strerror}") from error
    if len(key) < 32:
        raise ReviewDataError(f"{path}: the session key is shorter than 32 bytes; "
                              "delete the file to make a new one")
    return key


def configure(app: Flask, config: ReviewConfig, key: bytes) -> None:
    """The session and cookie settings of `config`."""
    app.config.update(
        SECRET_KEY=key,
        SESSION_COOKIE_NAME="trustmilter_review",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=config.session_lifetime),
        # A form's token lives as long as the session it belongs to.
        WTF_CSRF_TIME_LIMIT=config.session_lifetime,
        # The page never uses Flask-Login's "remember me" cookie; if it did, the same flags.
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Strict",
        REMEMBER_COOKIE_SECURE=config.url.startswith("https://"),
        MAX_CONTENT_LENGTH=1024 * 1024,  # a form of queue IDs is far smaller
    )


def add_headers(response: Response) -> Response:
    """Every response's safety headers (an after_request hook)."""
    for name, value in HEADERS.items():
        response.headers[name] = value
    return response
