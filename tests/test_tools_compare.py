"""tools/compare_commits.py, end to end on two source trees (no git needed).

The tool is the acceptance check for refactors that must not change
behaviour, so it must say "identical" for the same code twice and catch a
change that only alters a reply text. The trees are copies of this
checkout's package; one has the nonexistent-sender reply reworded. A small
corpus (the first 12 messages of seed 1: signed, unsigned, forged and two
nonexistent senders) keeps it to seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "compare_commits.py"
OLD_TEXT = "Sender address rejected: domain does not exist"
NEW_TEXT = "Sender address rejected: no such domain"


def copy_tree(destination: Path) -> Path:
    shutil.copytree(REPO / "milter" / "trustmilter", destination / "milter" / "trustmilter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def compare(old: Path, new: Path, corpus: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), str(old), str(new), "--messages", "12",
         "--corpus-file", str(corpus), "--show", "1"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_same_code_is_identical_and_a_changed_reply_text_is_caught(tmp_path):
    old = copy_tree(tmp_path / "old")
    new = copy_tree(tmp_path / "new")
    corpus = tmp_path / "corpus.pickle"

    same = compare(old, new, corpus)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "messages differing: 0 of 12" in same.stdout and "IDENTICAL" in same.stdout
    assert f"trustmilter from {old}" in same.stdout  # each tree's own package ran

    defaults = new / "milter" / "trustmilter" / "policy" / "defaults.py"
    assert OLD_TEXT in defaults.read_text()
    defaults.write_text(defaults.read_text().replace(OLD_TEXT, NEW_TEXT))
    changed = compare(old, new, corpus)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "DIFFERENT" in changed.stdout
    # The refused recipient's reply and the verdict line both show the change.
    assert f"-reply rcpt: replycode smtpcode='550' space=' ' text='5.1.8 {OLD_TEXT}'" in changed.stdout
    assert f"+reply rcpt: replycode smtpcode='550' space=' ' text='5.1.8 {NEW_TEXT}'" in changed.stdout
    assert f'+log: trustmilter: NOQUEUE: action=reject reply="550 5.1.8 {NEW_TEXT}"' in changed.stdout
    differing = int(changed.stdout.split("messages differing: ")[1].split(" ")[0])
    # Only the nonexistent-sender messages (refused at RCPT) differ.
    assert 1 <= differing < 12
