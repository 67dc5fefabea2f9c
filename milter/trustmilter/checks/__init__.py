"""The checks: one module each, one interface (see base.py).

registry.py lists them (`SECTIONS`) and derives what follows from their
specs; `build_checks`, `all_check_names` and `StartupError` are re-exported
here for the application and its tests.
"""

from __future__ import annotations

from trustmilter.checks.registry import all_check_names, build_checks
from trustmilter.startup import StartupError

__all__ = ["StartupError", "all_check_names", "build_checks"]
