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

from trustmilter.daemon.config import LoggingConfig


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
        handler.setFormatter(logging.Formatter("trustmilter[%(process)d]: %(message)s"))
        where = f"syslog ({config.facility}, {config.syslog_socket})"
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("trustmilter: %(message)s"))
        where = "stderr"
    root.addHandler(handler)
    return where
