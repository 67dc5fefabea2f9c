"""Every reference in the repository resolves inside it.

The sender-trust and loop rules are cited as sections of docs/rules.md; a
citation of the project's former digest or of a path beside the checkout
(a shared folder next to it) points an operator at a file they do not have.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Split so that this file does not match itself.
FORBIDDEN = ("SEED" + "-RULES", "../" + "shared/")
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files; a plain walk without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
            files.extend(Path(folder) / name for name in names)
        return files


def test_the_file_list_covers_the_repository():
    names = {path.relative_to(ROOT).as_posix() for path in repository_files()}
    assert {"README.md", "policy.yaml", "docs/rules.md",
            "milter/trustmilter/policy/defaults.py"} <= names


def test_no_file_cites_what_lies_outside_the_repository():
    offenders = []
    for path in repository_files():
        if not path.is_file() or set(path.relative_to(ROOT).parts) & SKIPPED_DIRS:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            if any(word in line for word in FORBIDDEN):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)
