"""`trustmilter quarantine` and `trustmilter reputation` against a real Postfix.

The module's private Postfix (conftest `postfix`) runs the null milter from
smtp_helpers.py, which holds every message whose Subject says "hold": the
hold queue fills exactly as trustmilter's quarantine fills it, and a test
writes the verdict header trustmilter would have added (the first one in
the header section) into the message itself. The CLI runs in-process
(`trustmilter.cli.main`) with ``--postfix-config`` pointing at the rig and
a policy whose state store is an SQLite file in the test's tmp dir, so
every assertion is about what Postfix's queue and the store really hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keys import message
from review_rig import TRUST, held_ids, hold, null_milter_on
from review_rig import hold_raw as hold_whole
from smtp_helpers import send_one
from trustmilter.cli import main
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.policy.rules import Rule
from trustmilter.quarantine.postfix import valid_queue_id
from trustmilter.quarantine.review import parse_trust_header
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.state.sqlite import SqliteStore
from trustmilter.testing.postfix import PostfixInstance, free_port
from trustmilter.verdict import Action

HELPERS = Path(__file__).with_name("smtp_helpers.py")


# ---- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def holding_postfix(postfix: PostfixInstance, tmp_path_factory) -> Iterator[PostfixInstance]:
    """The module's Postfix with the null milter (Subject "hold" -> hold queue)."""
    with null_milter_on(postfix, tmp_path_factory) as mta:
        yield mta


@pytest.fixture
def mta(holding_postfix: PostfixInstance) -> PostfixInstance:
    holding_postfix.reset()
    return holding_postfix


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"state:\n  backend: sqlite\n  sqlite_path: {tmp_path / 'state.sqlite3'}\n")
    return path


class Cli:
    """`trustmilter ...` in-process: exit status, stdout, stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str], mta: PostfixInstance, policy: Path):
        self.capsys, self.mta, self.policy = capsys, mta, policy

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main(list(argv))
        out, err = self.capsys.readouterr()
        return status, out, err

    def quarantine(self, action: str, *args: str) -> tuple[int, str, str]:
        return self("quarantine", action, "--postfix-config", str(self.mta.config_dir),
                    "--policy", str(self.policy), *args)

    def json(self, *argv: str) -> Any:
        status, out, err = (self.quarantine(*argv) if argv[0] != "reputation"
                            else self(*argv, "--policy", str(self.policy)))
        assert status == 0, err
        return json.loads(out)  # exactly one JSON document

    def reputations(self) -> list[dict[str, Any]]:
        return self.json("reputation", "list", "--json")["reputations"]  # type: ignore[no-any-return]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], mta: PostfixInstance, policy: Path) -> Cli:
    return Cli(capsys, mta, policy)


# ---- the verdict header and queue-ID syntax (no Postfix) ----------------------


def test_the_header_evaluate_writes_parses_back() -> None:
    """Reads exactly the format policy/evaluate.py writes on quarantine."""
    rule = Rule(name="hold-noptr", when=("iprev.ptr_missing",), action=Action.QUARANTINE)
    verdict = evaluate(Policy(rules=(rule,)), Results([
        CheckResult("iprev", Outcome.FAIL, findings=(Finding("iprev.ptr_missing"),))]))
    ((name, value),) = verdict.headers
    assert name == Policy().headers.trust_header
    mark = parse_trust_header(value)
    assert mark is not None
    assert mark.action == "quarantine" and mark.level == "low"
    assert mark.reasons == ("iprev.ptr_missing",) and mark.rules == ("hold-noptr",)
    assert mark.score == verdict.score
    assert parse_trust_header("garbage=1") is None


@pytest.mark.parametrize("text", ["EB9D420C462", "4F2A1B", "4dYk0X6y7Nz2Fq", "3Pb5qL9xGJzK1"])
def test_postfix_queue_ids_are_accepted(text: str) -> None:
    assert valid_queue_id(text)


@pytest.mark.parametrize(
    "text", ["ALL", "-", "-d", "deferred", "../EB9D420C462", "EB9D4 20C462", "eb9d420c462x",
             "ABC", "EB9D420C462\n", "4dYk0X6y7N", ""])
def test_anything_else_is_refused(text: str) -> None:
    """postsuper reads ALL and '-' as every message and stdin: never pass them on."""
    assert not valid_queue_id(text)


# ---- list and show -------------------------------------------------------------


def test_list_shows_each_held_message_with_its_reasons(cli: Cli, mta: PostfixInstance) -> None:
    first = hold(mta, subject="hold =?utf-8?q?gr=C3=BC=C3=9Fe?=",
                 rcpts=("support@example.org", "help@example.org"))
    second = hold(mta, sender="alice@example.com", subject="hold plain", trust=None)
    out = send_one(mta.smtp_port, message(subject="delivered"))  # not held: not listed
    assert out.final.code == 250
    mta.wait_delivered(1)

    listed = cli.json("list", "--json")["messages"]
    assert [m["queue_id"] for m in listed] == [first, second]  # oldest first
    one, two = listed
    assert one["sender"] == "noreply@example.com"
    assert one["recipients"] == ["support@example.org", "help@example.org"]
    assert one["subject"] == "hold grüße"  # RFC 2047 decoded
    assert one["reasons"] == ["auto.noreply_sender", "iprev.ptr_missing"]
    assert one["rules"] == ["noreply-quarantine"] and one["score"] == 8.0
    assert one["held_by_trustmilter"] is True
    assert 0 <= one["age_seconds"] < 60 and one["size"] > 0
    assert abs(one["arrival_time"] - time.time()) < 60
    assert "headers" not in one
    assert (two["reasons"], two["held_by_trustmilter"], two["score"]) == ([], False, None)

    status, text, err = cli.quarantine("list")
    assert status == 0 and err == f"policy: {cli.policy}, state: sqlite {cli.policy.parent}/state.sqlite3\n"
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(first) and "<noreply@example.com>" in lines[0]
    assert "reasons=auto.noreply_sender,iprev.ptr_missing" in lines[0]
    assert lines[1].startswith(second) and "reasons=-" in lines[1]


def test_an_empty_hold_queue(cli: Cli) -> None:
    assert cli.json("list", "--json") == {"messages": []}
    status, out, err = cli.quarantine("list")
    assert (status, out) == (0, "the hold queue is empty\n")
    assert err.startswith(f"policy: {cli.policy}, state: ") and err.count("\n") == 1


def test_the_trust_header_name_comes_from_the_policy(
    cli: Cli, mta: PostfixInstance, policy: Path
) -> None:
    hold(mta, trust="X-Our-Verdict: low; score=9.0; reasons=auto.bulk; action=quarantine")
    assert cli.json("list", "--json")["messages"][0]["reasons"] == []
    policy.write_text(policy.read_text() + "headers:\n  trust_header: X-Our-Verdict\n")
    assert cli.json("list", "--json")["messages"][0]["reasons"] == ["auto.bulk"]


def test_show_prints_headers_and_reasons(cli: Cli, mta: PostfixInstance) -> None:
    # A copy the sender wrote sits below ours: only the top one counts.
    forged = "X-Trustmilter-Trust: low; score=0.0; reasons=forged.by.sender; action=quarantine"
    queue_id = hold(mta, subject="hold \x1b[31mred", trust=TRUST)
    shown = cli.json("show", queue_id, "--json")
    assert shown["queue_id"] == queue_id
    assert shown["reasons"] == ["auto.noreply_sender", "iprev.ptr_missing"]
    names = [name for name, _ in shown["headers"]]
    assert names[0] == "Received"  # Postfix's own, then the message as it came
    assert "X-Trustmilter-Trust" in names and "Subject" in names and "X-Null-Milter" in names
    assert ["Subject", "hold \x1b[31mred"] in shown["headers"]

    status, text, _ = cli.quarantine("show", queue_id)
    assert status == 0
    assert f"queue id:    {queue_id}" in text
    assert "reasons:     auto.noreply_sender, iprev.ptr_missing" in text
    assert "held by trustmilter: yes, score 8" in text
    assert "\x1b" not in text and "hold \\x1b[31mred" in text  # no terminal escapes

    other = hold(mta, trust=TRUST + "\r\n" + forged)
    assert cli.json("show", other, "--json")["reasons"] == [
        "auto.noreply_sender", "iprev.ptr_missing"]


@pytest.mark.parametrize("command", ["show", "release", "delete"])
def test_unknown_and_invalid_ids_fail_in_one_line(
    cli: Cli, mta: PostfixInstance, command: str
) -> None:
    queue_id = hold(mta)
    for bad, why in (("ABCDEF12345", "not in the hold queue"), ("ALL", "not a Postfix queue ID"),
                     ("-d", "not a Postfix queue ID")):
        args = ["--", bad] if bad.startswith("-") else [bad]
        status, out, err = cli.quarantine(command, *args)
        assert (status, out) == (1, ""), err
        assert err.count("\n") == 1 and why in err, err
    assert held_ids(mta) == {queue_id}, "nothing was touched, ALL least of all"


def test_postfix_failure_is_one_line(cli: Cli, tmp_path: Path) -> None:
    status, out, err = cli("quarantine", "list", "--postfix-config", str(tmp_path / "nowhere"))
    assert (status, out) == (1, "")
    assert err.startswith("trustmilter: postqueue -j: ") and err.count("\n") == 1


# ---- release, delete, and what a release teaches ------------------------------------


def test_release_delivers_and_teaches_the_sender(cli: Cli, mta: PostfixInstance) -> None:
    """docs/rules.md §7: a release tells the filter the mail was legitimate."""
    assert cli.reputations() == []
    first = hold(mta, sender="NoReply@Example.com")
    released = cli.json("release", first, "--json")["released"]
    assert cli.reputations()[0]["trusted"] is False  # one of two releases
    assert released == [{
        "queue_id": first, "sender": "NoReply@Example.com",
        "reasons": ["auto.noreply_sender", "iprev.ptr_missing"],
        "learned": {"sender": "noreply@example.com", "releases": 1,
                    "last_release": released[0]["learned"]["last_release"],
                    "reasons": ["auto.noreply_sender", "iprev.ptr_missing"],
                    "spam_marks": 0, "last_spam_mark": 0.0, "spam_reasons": []},
    }]
    assert abs(released[0]["learned"]["last_release"] - time.time()) < 60
    # Delivered now (postqueue -i), not at the rig's next queue run in 10 s.
    (delivered,) = mta.wait_delivered(1, timeout=5)
    assert delivered.header("X-Trustmilter-Trust")[0].endswith("rules=noreply-quarantine")
    assert held_ids(mta) == set()

    second = hold(mta, sender="noreply@example.com")
    status, text, err = cli.quarantine("release", second)
    assert status == 0, err
    assert text == f"{second}: released; <noreply@example.com> has 2 release(s)\n"
    mta.wait_delivered(2)

    listing = cli.json("reputation", "list", "--json")
    assert listing["releases_to_trust"] == 2  # issue 4's default
    (known,) = listing["reputations"]
    assert (known["sender"], known["releases"], known["trusted"]) == (
        "noreply@example.com", 2, True)


def test_release_of_several_and_delete(cli: Cli, mta: PostfixInstance) -> None:
    ids = [hold(mta, sender=f"bulk{n}@example.com") for n in range(3)]
    assert cli.quarantine("release", ids[0], ids[1])[0] == 0
    mta.wait_delivered(2)
    status, text, _ = cli.quarantine("delete", ids[2])
    assert (status, text) == (0, f"{ids[2]}: deleted\n")
    assert mta.queue() == []
    assert len(mta.delivered()) == 2
    assert {r["sender"] for r in cli.reputations()} == {"bulk0@example.com", "bulk1@example.com"}


def test_one_unknown_id_stops_the_whole_batch(cli: Cli, mta: PostfixInstance) -> None:
    queue_id = hold(mta)
    status, _, err = cli.quarantine("release", queue_id, "ABCDEF12345")
    assert status == 1 and "ABCDEF12345: not in the hold queue" in err
    assert held_ids(mta) == {queue_id}
    assert cli.reputations() == []


def test_what_a_release_does_not_teach(cli: Cli, mta: PostfixInstance) -> None:
    """Held by something else, a bounce (no sender), --no-learn, a deletion: nothing learned."""
    foreign = hold(mta, sender="alice@example.com", trust=None)
    bounce = hold(mta, sender="")
    quiet = hold(mta, sender="quiet@example.com")
    deleted = hold(mta, sender="gone@example.com")
    released = cli.json("release", foreign, bounce, "--json")["released"]
    assert [r["learned"] for r in released] == [None, None]
    assert cli.json("release", quiet, "--no-learn", "--json")["released"][0]["learned"] is None
    assert cli.json("delete", deleted, "--json") == {"deleted": [deleted]}
    assert cli.reputations() == []


def test_reputation_forget(cli: Cli, mta: PostfixInstance) -> None:
    cli.quarantine("release", hold(mta, sender="noreply@example.com"))
    status, text, _ = cli("reputation", "list", "--policy", str(cli.policy))
    assert status == 0 and text.startswith("<noreply@example.com>  releases=1  last=")
    status, text, _ = cli("reputation", "forget", "NoReply@example.com",
                          "--policy", str(cli.policy))
    assert (status, text) == (0, "noreply@example.com: forgotten\n")
    assert cli.reputations() == []
    status, out, err = cli("reputation", "forget", "noreply@example.com",
                           "--policy", str(cli.policy))
    assert (status, out) == (1, "") and "nothing learned" in err


def test_long_queue_ids(cli: Cli, mta: PostfixInstance) -> None:
    """enable_long_queue_ids: the other queue-ID syntax, end to end."""
    mta.reload_with(enable_long_queue_ids="yes")
    try:
        queue_id = hold(mta)
        assert "z" in queue_id and valid_queue_id(queue_id)
        assert [m["queue_id"] for m in cli.json("list", "--json")["messages"]] == [queue_id]
        assert cli.quarantine("release", queue_id)[0] == 0
        mta.wait_delivered(1)
    finally:
        mta.reload_with(enable_long_queue_ids="no")


def test_a_store_that_fails_after_the_release_says_so(
    cli: Cli, mta: PostfixInstance, policy: Path
) -> None:
    """Redis nobody listens on: the message is out (Postfix did it), the line says nothing was learned."""
    policy.write_text("state:\n  backend: redis\n"
                      f"  redis_url: redis://127.0.0.1:{free_port()}/0\n  timeout: 0.2\n")
    queue_id = hold(mta)
    status, out, err = cli.quarantine("release", queue_id)
    assert (status, out) == (1, "")
    assert err.startswith(f"trustmilter: {queue_id}: released, but nothing learned: ")
    assert err.count("\n") == 1
    mta.wait_delivered(1, timeout=5)


def test_reputation_list_leaves_out_what_lapsed(cli: Cli, mta: PostfixInstance) -> None:
    """checks.reputation.forget_after_days: a reputation nobody renewed is not listed."""
    cli.policy.write_text(cli.policy.read_text()
                          + "checks:\n  reputation:\n    forget_after_days: 1\n")
    store = SqliteStore(Path(str(cli.policy).replace("policy.yaml", "state.sqlite3")), 1.0)
    try:
        store.add_release("old@example.com", ("auto.bulk",), time.time() - 2 * 86400)
        store.add_release("new@example.com", ("auto.bulk",), time.time())
    finally:
        store.close()
    assert [r["sender"] for r in cli.reputations()] == ["new@example.com"]


# ---- the body, safely (quarantine show --body) ----------------------------------


def hold_raw(mta: PostfixInstance, head: bytes, body: bytes) -> str:
    """Hold a message with header fields `head` (CRLF lines, no Subject) and `body`."""
    raw = (b"From: noreply@example.com\r\nTo: support@example.org\r\n"
           b"Subject: hold for review\r\nMessage-ID: <body@example.com>\r\n" + head
           + b"\r\n" + body)
    return hold_whole(mta, raw, "noreply@example.com")


MIXED = b"""\
--outer\r
Content-Type: multipart/alternative; boundary="alt"\r
\r
--alt\r
Content-Type: text/plain; charset=iso-8859-1\r
Content-Transfer-Encoding: quoted-printable\r
\r
Gr=FC=DFe aus K=F6ln,\r
\x1b[2J\x1b[31mthe invoice\x1b[0m\tis attached.\r
--alt\r
Content-Type: text/html; charset=utf-8\r
\r
<p>Gr\xc3\xbc\xc3\x9fe <img src="https://tracker.example/pixel.png"></p>\r
--alt--\r
--outer\r
Content-Type: application/pdf; name="old-name.pdf"\r
Content-Disposition: attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz%1B.pdf\r
Content-Transfer-Encoding: base64\r
\r
JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK\r
--outer\r
Content-Type: image/png\r
Content-Transfer-Encoding: base64\r
\r
iVBORw0KGgo=\r
--outer--\r
"""


def test_show_body_decodes_the_text_and_lists_the_parts_unopened(
        cli: Cli, mta: PostfixInstance) -> None:
    queue_id = hold_raw(mta, b"MIME-Version: 1.0\r\n"
                        b'Content-Type: multipart/mixed; boundary="outer"\r\n', MIXED)
    status, text, err = cli.quarantine("show", queue_id, "--body")
    assert status == 0, err
    lines = text.splitlines()
    body = lines[lines.index("--- body (as text; HTML without its markup; nothing opened) ---"):]
    assert body[1] == "Grüße aus Köln,"  # quoted-printable and ISO-8859-1 undone
    # Terminal escapes are shown, never sent to the terminal; a tab is spaces.
    assert body[2] == "\\x1b[2J\\x1b[31mthe invoice\\x1b[0m       is attached."
    assert "\x1b" not in text
    listed = body[body.index("--- parts not shown ---") + 1:]
    # The HTML alternative (its plain twin is shown), the attachment and the image:
    # named, typed and sized, none decoded or rendered.
    assert listed == ["(no name)  text/html  60 bytes",
                      "Rechnung März\\x1b.pdf  application/pdf  48 bytes",
                      "(no name)  image/png  8 bytes"]
    assert "tracker.example" not in text and "JVBERi" not in text

    document = cli.json("show", queue_id, "--json", "--body")
    assert document["body"]["parts"][1] == {
        "name": "Rechnung März\\x1b.pdf", "content_type": "application/pdf", "size": 48}
    assert document["body"]["text"].startswith("Grüße aus Köln,\n")
    assert document["body"]["truncated"] is False
    assert "body" not in cli.json("show", queue_id, "--json")  # only when asked


def test_show_body_of_html_mail_is_its_text_without_markup(
        cli: Cli, mta: PostfixInstance) -> None:
    html = (b"<html><head><title>x</title><style>p {display:none}</style>"
            b"<script>document.location='https://evil.example/'</script></head>"
            b"<body><p>Your account is <b>locked</b>&nbsp;&amp; must be verified.</p>"
            b"<img src=\"https://tracker.example/p.png\">"
            b"<a href=\"https://phish.example/login\">Verify now</a><br>Bank&#x2028;Team"
            b"<!-- hidden --></body></html>\r\n")
    queue_id = hold_raw(mta, b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n",
                        html)
    status, text, err = cli.quarantine("show", queue_id, "--body")
    assert status == 0, err
    body = text.split("nothing opened) ---\n", 1)[1].splitlines()
    assert body == ["Your account is locked & must be verified.",
                    "Verify now <https://phish.example/login>",
                    "Bank\\u2028Team"]
    for hidden in ("display:none", "evil.example", "tracker.example", "hidden", "<b>"):
        assert hidden not in text


def test_show_body_of_a_huge_message_is_bounded(cli: Cli, mta: PostfixInstance) -> None:
    line = b"All work and no play makes Jack a dull boy. " * 2 + b"\r\n"
    huge = line * (6 * 1024 * 1024 // len(line))  # 6 MiB of text
    queue_id = hold_raw(mta, b"", huge)
    started = time.monotonic()
    status, text, err = cli.quarantine("show", queue_id, "--body")
    assert status == 0, err
    assert time.monotonic() - started < 20
    body = text.split("nothing opened) ---\n", 1)[1]
    assert body.endswith("[... more not shown]\n")
    assert 15_000 < len(body) < 25_000  # MAX_TEXT characters of text, not 6 MiB
    document = cli.json("show", queue_id, "--json", "--body")
    assert document["body"]["truncated"] is True


# ---- deleting as spam: the other direction ------------------------------------------

BULK_TRUST = ("X-Trustmilter-Trust: low; score=8.0; reasons=auto.bulk,dnsbl.listed; "
              "action=quarantine; rules=auto-bulk")


def test_delete_as_spam_marks_the_sender_identity(cli: Cli, mta: PostfixInstance) -> None:
    """A VERP return path and a BATV-signed one are one sender: news@example.com."""
    verp = hold(mta, sender="news+4711-bob=example.org@example.com", trust=BULK_TRUST)
    batv = hold(mta, sender="prvs=1234abcdef=News@Example.com")
    marked = cli.json("delete", "--spam", verp, "--json")
    assert marked["deleted"] == [verp]
    ((item,),) = (marked["marked"],)
    assert (item["queue_id"], item["sender"], item["reasons"]) == (
        verp, "news+4711-bob=example.org@example.com", ["auto.bulk", "dnsbl.listed"])
    learned = item["marked"]
    assert (learned["sender"], learned["spam_marks"], learned["spam_reasons"],
            learned["releases"]) == ("news@example.com", 1, ["auto.bulk", "dnsbl.listed"], 0)
    assert abs(learned["last_spam_mark"] - time.time()) < 60

    status, text, err = cli.quarantine("delete", "--spam", batv)
    assert status == 0 and err.startswith("policy: ") and err.count("\n") == 1
    assert text == f"{batv}: deleted as spam; <news@example.com> has 2 spam mark(s)\n"
    assert mta.queue() == [] and mta.delivered() == []  # deleted, never delivered

    listing = cli.json("reputation", "list", "--json")
    assert (listing["releases_to_trust"], listing["spam_to_distrust"]) == (2, 2)
    (known,) = listing["reputations"]
    assert (known["sender"], known["releases"], known["spam_marks"], known["trusted"],
            known["rejected"]) == ("news@example.com", 0, 2, False, True)
    # Deduplicated, in the order first seen.
    assert known["spam_reasons"] == ["auto.bulk", "dnsbl.listed", "auto.noreply_sender",
                                     "iprev.ptr_missing"]
    status, text, _ = cli("reputation", "list", "--policy", str(cli.policy))
    assert status == 0
    assert text.startswith("<news@example.com>  releases=0  last=-  reasons=-  spam=2  last_spam=")
    assert text.rstrip().endswith(
        "spam_reasons=auto.bulk,dnsbl.listed,auto.noreply_sender,iprev.ptr_missing  rejected")


def test_a_spam_mark_cancels_learned_trust(cli: Cli, mta: PostfixInstance) -> None:
    """Two releases teach; one deletion as spam takes it back at once, and trust
    returns only when releases since the mark reach two and outnumber the marks."""
    for _ in range(2):
        assert cli.quarantine("release", hold(mta, sender="alerts@example.com"))[0] == 0
    assert cli.reputations()[0]["trusted"] is True
    cli.quarantine("delete", "--spam", hold(mta, sender="alerts+x@example.com"))
    (known,) = cli.reputations()
    assert (known["releases"], known["spam_marks"], known["trusted"], known["rejected"]) == (
        0, 1, False, False)
    status, text, _ = cli("reputation", "list", "--policy", str(cli.policy))
    assert status == 0 and text.rstrip().endswith("(2 to trust)"), text

    released = cli.json("release", hold(mta, sender="alerts@example.com"), "--json")
    learned = released["released"][0]["learned"]
    assert (learned["releases"], learned["spam_marks"]) == (1, 1)  # both directions shown
    cli.quarantine("release", hold(mta, sender="alerts@example.com"))
    (known,) = cli.reputations()
    assert (known["releases"], known["spam_marks"], known["trusted"]) == (2, 1, True)
    mta.wait_delivered(4)


def test_a_release_teaches_the_identity(cli: Cli, mta: PostfixInstance) -> None:
    released = cli.json("release", hold(mta, sender="Bounce+123@example.com"), "--json")
    assert released["released"][0]["learned"]["sender"] == "bounce@example.com"
    assert [r["sender"] for r in cli.reputations()] == ["bounce@example.com"]
    # The policy's separators decide what a sub-address is.
    cli.policy.write_text(cli.policy.read_text() + 'address_separators: ""\n')
    released = cli.json("release", hold(mta, sender="bounce+456@example.com"), "--json")
    assert released["released"][0]["learned"]["sender"] == "bounce+456@example.com"
    mta.wait_delivered(2)


def test_what_delete_as_spam_does_not_teach(cli: Cli, mta: PostfixInstance) -> None:
    """Held by something else, or a bounce: deleted, nobody marked."""
    foreign = hold(mta, sender="alice@example.com", trust=None)
    bounce = hold(mta, sender="")
    marked = cli.json("delete", "--spam", foreign, bounce, "--json")
    assert marked["deleted"] == [foreign, bounce]
    assert [item["marked"] for item in marked["marked"]] == [None, None]
    assert mta.queue() == []
    assert cli.reputations() == []
    other = hold(mta, sender="bob@example.com", trust=None)
    status, out, err = cli.quarantine("delete", "--spam", other)
    assert (status, out) == (0, f"{other}: deleted (nothing learned)\n")
    assert err.startswith("policy: ") and err.count("\n") == 1


def test_delete_as_spam_checks_every_id_first(cli: Cli, mta: PostfixInstance) -> None:
    queue_id = hold(mta)
    status, out, err = cli.quarantine("delete", "--spam", queue_id, "ABCDEF12345")
    assert (status, out) == (1, "") and "ABCDEF12345: not in the hold queue" in err
    assert held_ids(mta) == {queue_id}
    assert cli.reputations() == []


def test_a_store_that_fails_after_the_deletion_says_so(
    cli: Cli, mta: PostfixInstance, policy: Path
) -> None:
    policy.write_text("state:\n  backend: redis\n"
                      f"  redis_url: redis://127.0.0.1:{free_port()}/0\n  timeout: 0.2\n")
    queue_id = hold(mta)
    status, out, err = cli.quarantine("delete", "--spam", queue_id)
    assert (status, out) == (1, "")
    assert err.startswith(f"trustmilter: {queue_id}: deleted, but not marked as spam: ")
    assert err.count("\n") == 1
    assert mta.queue() == []


def test_forget_takes_any_dressed_form_and_undoes_both_directions(
    cli: Cli, mta: PostfixInstance
) -> None:
    cli.quarantine("release", hold(mta, sender="robot@example.com"))
    cli.quarantine("delete", "--spam", hold(mta, sender="robot-7@example.com"))
    cli.quarantine("release", hold(mta, sender="robot@example.com"))
    (known,) = cli.reputations()
    assert (known["releases"], known["spam_marks"]) == (1, 1)
    status, text, _ = cli("reputation", "forget", "SRS0=HHH=TT=example.com=robot+x@fwd.example.net",
                          "--policy", str(cli.policy))
    assert (status, text) == (0, "robot@example.com: forgotten\n")
    assert cli.reputations() == []
    status, _, err = cli("reputation", "forget", "robot@example.com", "--policy", str(cli.policy))
    assert status == 1 and err == "trustmilter: robot@example.com: nothing learned about this sender\n"
    mta.wait_delivered(2)


def test_forget_also_drops_what_was_learned_under_a_dressed_address(
    cli: Cli, mta: PostfixInstance
) -> None:
    """Before identities, a release of alice+news@ was kept under that address."""
    store = SqliteStore(Path(str(cli.policy).replace("policy.yaml", "state.sqlite3")), 1.0)
    try:
        store.add_release("alice+news@example.com", ("auto.bulk",), time.time())
    finally:
        store.close()
    status, text, _ = cli("reputation", "forget", "alice+news@example.com",
                          "--policy", str(cli.policy))
    assert (status, text) == (0, "alice@example.com: forgotten\n")
    assert cli.reputations() == []


def test_reputation_list_leaves_out_lapsed_spam_marks(cli: Cli) -> None:
    cli.policy.write_text(cli.policy.read_text()
                          + "checks:\n  reputation:\n    forget_after_days: 1\n")
    store = SqliteStore(Path(str(cli.policy).replace("policy.yaml", "state.sqlite3")), 1.0)
    try:
        store.add_spam_mark("old@example.com", ("auto.bulk",), time.time() - 2 * 86400)
        store.add_spam_mark("mixed@example.com", ("auto.bulk",), time.time() - 2 * 86400)
        store.add_release("mixed@example.com", ("auto.bulk",), time.time())
    finally:
        store.close()
    # mixed@: its mark lapsed, its release after it counts.
    (listed,) = cli.reputations()
    assert (listed["sender"], listed["releases"], listed["spam_marks"]) == (
        "mixed@example.com", 1, 0)
