"""Which policy file a command reads when it is given none.

An installation keeps its policy in /etc/trustmilter/policy.yaml (the
Debian package's conffile and the README's production path), and the
administrator's commands must read that one: a command that fell back to
the built-in defaults would open another state store than the daemon's
and report "nothing learned yet" about a store it never looked at. A
trial in a source tree keeps its policy in ./policy.yaml. ``--policy
FILE`` always wins; when neither file exists the built-in defaults apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SYSTEM_POLICY = Path("/etc/trustmilter/policy.yaml")

# For the --policy help of every command that reads a policy.
DEFAULT_HELP = "default: /etc/trustmilter/policy.yaml, else ./policy.yaml, else built-in defaults"


def search_path(cwd: Path) -> tuple[Path, ...]:
    """The files tried in order when no ``--policy`` is given."""
    return (SYSTEM_POLICY, cwd / "policy.yaml")


def find_policy(explicit: Path | None, candidates: Iterable[Path]) -> Path | None:
    """`explicit` if given, else the first candidate that exists, else None (built-in).

    "Exists", not "is a readable regular file": a policy path that cannot
    be read must fail with its reason, never be skipped for the next file.
    """
    if explicit is not None:
        return explicit
    for candidate in candidates:
        try:
            candidate.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            pass  # there, but not ours to look at (a 0750 directory): the loader says so
        return candidate
    return None
