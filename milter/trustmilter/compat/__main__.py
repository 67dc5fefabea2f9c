"""``python -m trustmilter.compat``: what start-up would do with each patch, and
the fingerprints of the installed originals.

After bumping a pinned library (packaging/constraints.txt): run this, read
the upstream diff of every function whose fingerprint changed, re-run the
equivalence tests (tests/test_compat_*.py), then put the new version and
fingerprint into the registry entry. Exit status 1 when any patch does not
fit the installed libraries.
"""

from __future__ import annotations

import sys

from trustmilter.compat import REGISTRY, status, verify
from trustmilter.compat.patches import installed_version


def main() -> int:
    """Print one status line per patch, then each installed original's fingerprint."""
    for line in status():
        print(line)
    print()
    for patch in REGISTRY:
        print(f"{patch.name}  {patch.dist} {installed_version(patch.dist)}  "
              f"sha256 {patch.actual_fingerprint or '(unreadable)'}")
    return 1 if verify() else 0


if __name__ == "__main__":
    sys.exit(main())
