"""``trustmilter review serve``: the page under waitress, never as root.

waitress is a production WSGI server in pure Python (no C extension to
build, maintained by the Pylons project): several threads, request size
limits, and nothing to configure but the address. It listens on
review.listen (loopback by default; the operator's TLS reverse proxy
publishes it). The page refuses to start as root: whatever serves HTTP
runs as review.user, and Postfix's queue commands are the privileged
helper's job. A failure to start is one line on standard error.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import waitress
from flask import Flask

from trustmilter.config.settings import Settings
from trustmilter.review.database import ReviewDataError

log = logging.getLogger("trustmilter.review")
THREADS = 4  # requests served at once; a held message's page takes one postcat


class ServeFailure(Exception):
    """The page cannot be served; one line, and the exit status."""

    def __init__(self, line: str, exit_status: int) -> None:
        super().__init__(line)
        self.exit_status = exit_status


EXIT_RUNTIME, EXIT_CONFIG = 1, 2


def refuse_root(settings: Settings, euid: int | None = None) -> None:
    if (os.geteuid() if euid is None else euid) == 0:
        raise ServeFailure(
            f"review serve: refusing to run as root; run it as {settings.review.user} "
            "(review.user), e.g. through the systemd unit trustmilter-review.service",
            EXIT_CONFIG)


def serve(settings: Settings, listen: str | None, make_app: Callable[[], Flask]) -> int:
    """Serve until stopped (SIGTERM, SIGINT); the exit status."""
    refuse_root(settings)
    address = listen or settings.review.listen
    try:
        app = make_app()
    except ReviewDataError as error:
        raise ServeFailure(f"review serve: {error}", EXIT_CONFIG) from error
    with _listening(address, app) as server:
        log.info("review: serving on http://%s/ as %s", address, _user())
        with suppress(KeyboardInterrupt):
            server.run()
    return 0


@contextmanager
def _listening(address: str, app: Flask) -> Iterator[Any]:
    """A waitress server (untyped) bound to `address`, closed afterwards."""
    try:
        server = waitress.create_server(app, listen=address, threads=THREADS,
                                        ident="trustmilter")
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ServeFailure(f"review serve: {address} is in use by another process",
                               EXIT_RUNTIME) from error
        if error.errno == errno.EACCES:
            raise ServeFailure(f"review serve: {address}: not allowed to listen there "
                               "(a port below 1024 needs privileges the page does not have)",
                               EXIT_CONFIG) from error
        raise ServeFailure(f"review serve: cannot listen on {address}: "
                           f"{error.strerror or error}", EXIT_CONFIG) from error
    try:
        yield server
    finally:
        server.close()


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
