"""Logging for the daemon: syslog's mail facility by default, or stderr.

The verdict lines go where Postfix's own lines go, so one grep by queue
ID finds both. Under `--foreground-log`, or when there is no syslog
socket, everything goes to stderr instead.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from trustmilter.config.daemon import LoggingConfig
from trustmilter.surrogates import escape_surrogates


class _EncodableFormatter(logging.Formatter):
    """Writes bytes a sender sent that were not UTF-8 as \\xNN.

    Such bytes reach us as lone surrogates; SysLogHandler (and a UTF-8
    stderr) cannot encode them, and logging then drops the whole line with
    "--- Logging error ---" on stderr.
    """

    def format(self, record: logging.LogRecord) -> str:
        return escape_surrogates(super().format(record))


def setup_logging(config: LoggingConfig, force_stderr: bool = False) -> str:
    """Configure the `trustmilter` loggers; returns where they write."""
    root = logging.getLogger("trustmilter")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.setLevel(config.level.upper())
    root.propagate = False
    destination = config.destination
    if force_stderr:
        destination = "stderr"
    elif destination == "auto":
        usable = os.path.exists(config.syslog_socket) and not sys.stderr.isatty()
        destination = "syslog" if usable else "stderr"
    handler: logging.Handler
    if destination == "syslog":
        facility = logging.handlers.SysLogHandler.facility_names[config.facility]
        handler = logging.handlers.SysLogHandler(address=config.syslog_socket, facility=facility)
        # %(process)d, not the pid now: worker processes fork after this.
        handler.setFormatter(_EncodableFormatter("trustmilter[%(process)d]: %(message)s"))
        where = f"syslog ({config.facility}, {config.syslog_socket})"
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_EncodableFormatter("trustmilter: %(message)s"))
        where = "stderr"
    root.addHandler(handler)
    return where
