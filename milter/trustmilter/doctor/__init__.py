"""`trustmilter doctor` (issue 5 item 3): what a sender must fix so its mail is trusted.

`rules` holds one function per docs/rules.md §1-3 rule group, each built on the
milter's own checks; `run` runs them concurrently and prints the report.
"""

from __future__ import annotations

from trustmilter.doctor.rules import Diagnosis
from trustmilter.doctor.run import add_parser, diagnose, run_command

__all__ = ["Diagnosis", "add_parser", "diagnose", "run_command"]
