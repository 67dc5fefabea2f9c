"""The errors that stop the milter before it accepts a connection, and its exit statuses.

Its own module so that every layer that can refuse start-up (the checks,
the library patches in compat/, the daemon) raises the same types without
importing each other.

`trustmilter run` exits with `EXIT_CONFIG` when the configuration cannot
work as written (fix the policy or the command line; the unit file tells
systemd not to restart for it) and with `EXIT_RUNTIME` when it could work
but not now (a port or the socket in use by another process, the state
store unreachable, a crash): trying again later may succeed.
"""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


class StartupError(Exception):
    """An enabled check cannot run (a missing dependency, an unusable setting),
    or a library the milter patches is not the version it was written for."""


class ServeError(Exception):
    """Start-up of the milter process failed; the message says why in one line.

    `exit_status` says which kind of failure it is: `EXIT_CONFIG` or
    `EXIT_RUNTIME`.
    """

    def __init__(self, message: str, exit_status: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.exit_status = exit_status
