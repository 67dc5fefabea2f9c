"""The error that stops the milter before it accepts a connection.

Its own module so that every layer that can refuse start-up (the checks,
the library patches in compat/) raises the same type without importing
each other.
"""

from __future__ import annotations


class StartupError(Exception):
    """An enabled check cannot run (a missing dependency, an unusable setting),
    or a library the milter patches is not the version it was written for."""
