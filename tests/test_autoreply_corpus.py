"""Real automatic replies and help-desk mail (tests/corpus/autoreply) through the
automation check, and real people's mail that must stay clean.

The corpus is header excerpts of real messages from public test suites and
archives (README.md beside it names each one's origin). Its held-out part
was chosen by name before any sample was read and was first read after the
patterns were committed (SELECTION.md); the figures in README.md come from
`recognition`, which this test prints. A directory says what a sample is:
autoreply/ (an automatic reply), helpdesk/ (another help desk's own
output), automated/ (automated, of any kind), notification/ (automated but
no reply: must not be taken for one), human/ (written by a person: nothing
automated may be found).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_ctx
from trustmilter.bench.corpus import make_corpus
from trustmilter.checks import automation
from trustmilter.checks.automation import AutomationMessageCheck

CORPUS = Path(__file__).resolve().parent / "corpus" / "autoreply"
PARTS = ("dev", "heldout")
# The finding each kind of sample must carry.
WANTED = {"autoreply": "auto.autoreply", "helpdesk": "auto.helpdesk"}
# Samples the check does not recognise as what their origin calls them, and
# why; README.md gives the same list. Each is still asserted as it is.
KNOWN_MISSES = {
    # Their only sign is "Auto-Submitted: auto-generated": RFC 3834 §5 calls
    # that no reply, so machine-generated (held all the same).
    "dev/autoreply/chatwoot-auto_reply_with_auto_submitted.eml": {"auto.machine_generated"},
    "dev/autoreply/discourse-auto_reply.eml": {"auto.machine_generated"},
    # "[AUTO GENERATED]" is no convention any mailer uses.
    "dev/automated/discourse-auto_generated_subject.eml": set(),
    # Intercom marks nothing but "X-Auto-Response-Suppress: OOF, AutoReply",
    # which Outlook puts on mail people write too.
    "dev/helpdesk/intercom-support-bot.eml": set(),
}


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"automation asked DNS for {name} {rdtype}")


def samples(part: str, kind: str) -> list[Path]:
    return sorted((CORPUS / part / kind).glob("*.eml"))


def findings(path: Path) -> set[str]:
    """The automation findings for one sample (its line ends made CRLF)."""
    return findings_of(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def findings_of(raw: bytes) -> set[str]:
    [result] = AutomationMessageCheck(automation.Config()).run(
        make_ctx(NoDns(), mail_from="sender@example.com", message=raw))
    return {f.name for f in result.findings}


def name(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def recognition(part: str, kind: str) -> tuple[int, int]:
    """(recognised, all) samples of `kind` in `part`."""
    found = [path for path in samples(part, kind) if WANTED[kind] in findings(path)]
    return len(found), len(samples(part, kind))


def test_the_corpus_is_there():
    for part in PARTS:
        assert samples(part, "autoreply"), part
    assert samples("dev", "helpdesk") and samples("dev", "human")


@pytest.mark.parametrize("path", [p for part in PARTS for kind in WANTED
                                  for p in samples(part, kind)], ids=name)
def test_each_automatic_reply_and_help_desk_mail_is_recognised(path):
    kind = path.parent.name
    got = findings(path)
    if name(path) in KNOWN_MISSES:
        assert got == KNOWN_MISSES[name(path)], got
    else:
        assert WANTED[kind] in got, got


@pytest.mark.parametrize("path", [p for part in PARTS for p in samples(part, "automated")],
                         ids=name)
def test_automated_mail_is_recognised_as_automated(path):
    got = findings(path)
    if name(path) in KNOWN_MISSES:
        assert got == KNOWN_MISSES[name(path)], got
    else:
        assert any(f.startswith("auto.") for f in got), got


@pytest.mark.parametrize("path", [p for part in PARTS for p in samples(part, "notification")],
                         ids=name)
def test_notifications_are_automated_but_no_replies(path):
    got = findings(path)
    assert got and not got & {"auto.autoreply", "auto.helpdesk"}, got


@pytest.mark.parametrize("path", [p for part in PARTS for p in samples(part, "human")], ids=name)
def test_mail_people_write_stays_clean(path):
    assert findings(path) == set()


def test_the_benchmark_corpus_has_no_automatic_replies():
    """500 ordinary messages of the benchmark (people's and bulk senders' mail
    whose Subjects are words like "support ticket request update notice")."""
    corpus = make_corpus(seed=12, messages=500, domains=20, keys=1, key_bits=1024)
    marked = [m.raw[:200] for m in corpus.messages
              if findings_of(m.raw) & {"auto.autoreply", "auto.helpdesk"}]
    assert marked == []


def test_the_figures(capsys):
    """The figures README.md reports (run with -s to see them)."""
    with capsys.disabled():
        for part in PARTS:
            for kind in WANTED:
                got, of = recognition(part, kind)
                print(f"\n{part} {kind}: {got} of {of}", end="")
            clean = sum(1 for path in samples(part, "human") if not findings(path))
            print(f"\n{part} human: {clean} of {len(samples(part, 'human'))} clean", end="")
        print()
