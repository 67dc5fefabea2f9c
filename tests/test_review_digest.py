"""`trustmilter review digest` against a real Postfix: held mail in, one digest out.

The module's private Postfix (conftest `postfix`, with the null milter of
smtp_helpers.py: a Subject saying "hold" goes to the hold queue) holds the
messages, exactly as trustmilter's quarantine does, and a test writes the
verdict header trustmilter would have added into the message itself. The
digest reads that hold queue as it does in production, through the
privileged helper (helper_rig.py: `trustmilter review helper` as root on
review.helper_socket), and hands its mail to the same Postfix's own
sendmail(1) (``-C`` review.postfix_config): Postfix delivers
it into the rig's Maildir, where the tests read what the help desk gets.
The last-digest time lives in a review.data_dir under tmp_path.

Arrival times are whole seconds (postqueue -j), so a digest leaves what
arrived in its own second to the next one; `after_arrivals` waits for the
second to turn (at most one) instead of faking the clock.
"""

from __future__ import annotations

import argparse
import email
import os
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from helper_rig import Helper, running_helper, socket_base
from test_quarantine_cli import TRUST, hold, holding_postfix  # noqa: F401 (a fixture)
from trustmilter.config.review import DigestConfig, ReviewConfig
from trustmilter.i18n import translator
from trustmilter.quarantine.postfix import QueueEntry
from trustmilter.quarantine.review import HeldMessage, parse_trust_header
from trustmilter.review.digest import MAX_LISTED, Window, compose_digest, page_links, reason_words
from trustmilter.review.digest_command import add_digest_parser, run_digest
from trustmilter.review.digest_state import LAST_FILE, data_directory, read_last, write_last
from trustmilter.signals import FINDINGS
from trustmilter.testing.postfix import PostfixInstance

HELPDESK = ("helpdesk@example.org", "team@example.org")
URL = "https://review.example.org/helpdesk"
# The header fields a digest has, all ours; nothing a held message wrote.
DIGEST_FIELDS = {"Return-Path", "Delivered-To", "X-Original-To", "Received", "From", "To", "Subject", "Date",
                 "Message-ID", "Auto-Submitted", "X-Auto-Response-Suppress", "Content-Type",
                 "Content-Transfer-Encoding", "MIME-Version", "Content-Language"}


# ---- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def helper(holding_postfix: PostfixInstance,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helper]:
    """The privileged helper on the module's Postfix: the digest's only way to the queue."""
    log_path = tmp_path_factory.mktemp("helper") / "helper.log"
    with socket_base() as base, running_helper(holding_postfix.config_dir, base,
                                               log_path) as running:
        yield running


@pytest.fixture
def mta(holding_postfix: PostfixInstance, helper: Helper) -> PostfixInstance:  # noqa: F811
    holding_postfix.reset()
    return holding_postfix


def write_policy(path: Path, mta: PostfixInstance, data_dir: Path, helper_socket: str, *,
                 language: str = "en", enabled: bool = True) -> Path:
    path.write_text(f"""\
review:
  url: {URL}
  postfix_config: {mta.config_dir}
  helper_socket: {helper_socket}
  data_dir: {data_dir}
  default_language: {language}
  digest:
    enabled: {'true' if enabled else 'false'}
    recipients: [{', '.join(HELPDESK)}]
    sender: digest@example.org
""")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "review"


@pytest.fixture
def policy(tmp_path: Path, mta: PostfixInstance, data_dir: Path, helper: Helper) -> Path:
    return write_policy(tmp_path / "policy.yaml", mta, data_dir, helper.socket_path)


def digest(policy: Path, capsys: pytest.CaptureFixture[str], *options: str
           ) -> tuple[int, str, str]:
    """`review digest --policy POLICY OPTIONS` in-process: status, stdout, stderr."""
    parser = argparse.ArgumentParser(prog="trustmilter review")
    add_digest_parser(parser.add_subparsers(dest="review_command", required=True))
    args = parser.parse_args(["digest", "--policy", str(policy), *options])
    capsys.readouterr()
    status = run_digest(args)
    out, err = capsys.readouterr()
    return status, out, err


def after_arrivals(mta: PostfixInstance) -> None:
    """Wait until the second every held message arrived in has passed."""
    latest = max(float(str(e["arrival_time"])) for e in mta.hold_queue())
    while time.time() < int(latest) + 1:
        time.sleep(0.05)


def digests(mta: PostfixInstance, count: int) -> list[EmailMessage]:
    """The digests delivered (one per help-desk address), parsed."""
    delivered = mta.wait_delivered(count)
    time.sleep(0.3)  # nothing more may come: every copy was counted
    assert len(mta.delivered()) == count, [m.header("Subject") for m in mta.delivered()]
    return [email.message_from_bytes(m.raw, policy=default) for m in delivered]  # type: ignore[misc]


def text_of(mail: EmailMessage) -> str:
    return str(mail.get_content())


# ---- through Postfix -------------------------------------------------------------


def test_one_digest_lists_every_held_message_with_links(
    mta: PostfixInstance, policy: Path, data_dir: Path, helper: Helper,
    capsys: pytest.CaptureFixture[str]
) -> None:
    noreply = hold(mta, subject="hold =?utf-8?q?gr=C3=BC=C3=9Fe?=",
                   rcpts=("support@example.org", "sales@example.org"))
    other = hold(mta, sender="alice@example.com", subject="hold plain", trust=None)
    after_arrivals(mta)

    before = len(helper.log())
    status, out, err = digest(policy, capsys)
    assert (status, err) == (0, "")
    helper.wait_for_log(rf"uid=0 pid={os.getpid()}: list: ok", after=before)  # read through it
    assert out == f"digest sent to {', '.join(HELPDESK)}: 2 held since the start\n"
    copies = digests(mta, 2)
    assert sorted(str(m["Delivered-To"]) for m in copies) == sorted(HELPDESK)
    mail = copies[0]
    assert set(mail.keys()) <= DIGEST_FIELDS
    assert str(mail["Return-Path"]) == "<digest@example.org>"
    assert str(mail["From"]) == "digest@example.org"
    assert str(mail["To"]) == ", ".join(HELPDESK)
    assert str(mail["Subject"]) == "Held mail (first digest): 2"
    assert str(mail["Auto-Submitted"]) == "auto-generated"  # RFC 3834: no auto-answer
    assert str(mail["Content-Language"]) == "en"
    text = text_of(mail)
    first, second = text.index(f"1. {noreply} "), text.index(f"2. {other} ")
    assert first < second  # oldest first
    one, two = text[first:second], text[second:]
    assert "Sender: <noreply@example.com>" in one
    assert "Recipients: <support@example.org>, <sales@example.org>" in one
    assert "Subject: hold grüße" in one  # RFC 2047 decoded
    assert f"auto.noreply_sender: {FINDINGS['auto.noreply_sender']}" in one
    assert f"iprev.ptr_missing: {FINDINGS['iprev.ptr_missing']}" in one
    assert "Held by trustmilter, score 8, because:" in one
    assert f"Open: {URL}/message/{noreply}\n" in one
    assert "Sender: <alice@example.com>" in two and "Not held by trustmilter" in two
    assert f"Open: {URL}/message/{other}\n" in two
    assert f"Review them on the page: {URL}/\n" in text
    # Never a word to the senders: every copy went to the help desk.
    assert not [line for line in mta.log_lines()
                if "to=<noreply@example.com>" in line or "to=<alice@example.com>" in line]
    # Both are still held: the digest only reads the queue.
    assert {noreply, other} <= {str(e["queue_id"]) for e in mta.hold_queue()}
    last = read_last(data_dir).end
    arrived = [float(str(e["arrival_time"])) for e in mta.hold_queue()]
    assert last is not None and max(arrived) < last <= time.time()


def test_nothing_new_sends_nothing_then_only_the_new_are_listed(
    mta: PostfixInstance, policy: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = hold(mta, subject="hold first")
    after_arrivals(mta)
    assert digest(policy, capsys)[0] == 0
    digests(mta, 2)
    mta.clear_delivered()
    last = read_last(data_dir).end
    assert last is not None

    status, out, err = digest(policy, capsys)
    assert (status, err) == (0, "")
    assert out.startswith("nothing held since ") and out.endswith(": no digest sent\n")
    time.sleep(0.5)
    assert mta.delivered() == []
    assert read_last(data_dir).end == last  # nothing sent: the window stays open

    new = hold(mta, subject="hold second")
    after_arrivals(mta)
    assert digest(policy, capsys)[0] == 0
    mail = digests(mta, 2)[0]
    assert str(mail["Subject"]).startswith("Held mail: 1 new since ")
    text = text_of(mail)
    assert f"1. {new} " in text and old not in text  # still held, but told already


def test_a_hostile_subject_stays_in_the_body_as_text(
    mta: PostfixInstance, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CR LF, a header line, ESC and markup in a held subject (RFC 2047 lets
    a sender encode any of them) cannot add a field to the digest."""
    hostile = ("hold =?utf-8?q?x=0D=0ABcc=3A_victim=40example=2Enet=0D=0A=0D=0A"
               "=1B=5B31m=3Cscript=3Ealert(1)=3C/script=3E?=")
    queue_id = hold(mta, subject=hostile, sender="mallory@example.net")
    after_arrivals(mta)
    assert digest(policy, capsys)[0] == 0
    copies = digests(mta, 2)
    assert sorted(str(m["Delivered-To"]) for m in copies) == sorted(HELPDESK)
    for mail in copies:
        assert set(mail.keys()) <= DIGEST_FIELDS and "Bcc" not in mail
        text = text_of(mail)
        (line,) = [line for line in text.splitlines() if line.startswith("   Subject: ")]
        assert line == (r"   Subject: hold x\r\nBcc: victim@example.net\r\n\r\n"
                        r"\x1b[31m<script>alert(1)</script>")
        assert "\x1b" not in text and "\r" not in text and f"1. {queue_id} " in text
    assert "victim@example.net" not in "".join(mta.log_lines())  # nothing went there


def test_a_failed_handover_keeps_the_last_digest_time(
    mta: PostfixInstance, policy: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = hold(mta, subject="hold me")
    after_arrivals(mta)
    write_last(data_directory(data_dir), 1_000_000)  # a digest long ago
    missing = data_dir / "no-such-sendmail"
    status, out, err = digest(policy, capsys, "--sendmail", str(missing))
    assert (status, out) == (1, "")
    assert err == f"trustmilter: {missing}: not found (is an MTA installed?)\n"
    assert read_last(data_dir).end == 1_000_000

    # Postfix's own sendmail refusing the mail: bigger than message_size_limit.
    mta.reload_with(message_size_limit="600")
    try:
        status, out, err = digest(policy, capsys)
    finally:
        mta.reload_with(message_size_limit="20000000")
    assert (status, out) == (1, "")
    assert err.startswith("trustmilter: /usr/sbin/sendmail exited 75: ") and err.count("\n") == 1
    assert "message file too big" in err  # Postfix's own words, one line
    print(err)
    assert read_last(data_dir).end == 1_000_000
    assert mta.delivered() == []

    status, out, _ = digest(policy, capsys)  # the same messages, now sent
    assert status == 0 and out.endswith(": 1 held since 1970-01-12 13:46:40Z\n")
    assert f"1. {queue_id} " in text_of(digests(mta, 2)[0])
    assert (read_last(data_dir).end or 0) > 1_000_000


def test_without_the_helper_the_digest_fails_in_one_line(
    mta: PostfixInstance, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The digest never falls back to Postfix's own tools: no helper, no digest."""
    hold(mta, subject="hold me")
    missing = str(tmp_path / "no-helper.sock")
    policy = write_policy(tmp_path / "policy.yaml", mta, data_dir, missing)
    status, out, err = digest(policy, capsys)
    assert (status, out) == (1, "")
    assert err == (f"trustmilter: the privileged helper is not running (nothing answers on "
                   f"{missing}); start it: systemctl start trustmilter-review-helper\n")
    time.sleep(0.3)
    assert mta.delivered() == [] and read_last(data_dir).end is None


def test_the_digest_in_german_and_japanese(
    mta: PostfixInstance, tmp_path: Path, data_dir: Path, helper: Helper,
    capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = hold(mta, subject="hold me")
    after_arrivals(mta)
    for language, subject, words in (
        ("de", "Zurückgehaltene Mail (erste Übersicht): 1",
         ("Absender: <noreply@example.com>", "Von trustmilter zurückgehalten", "Öffnen: ")),
        ("ja", "保留中のメール (初回のまとめ): 1 件",
         ("送信者: <noreply@example.com>", "trustmilter が保留", "開く: ")),
    ):
        policy = write_policy(tmp_path / f"{language}.yaml", mta, data_dir / language,
                              helper.socket_path,                              language=language)
        assert digest(policy, capsys)[0] == 0
        mail = digests(mta, 2)[0]
        mta.clear_delivered()
        assert str(mail["Subject"]) == subject and str(mail["Content-Language"]) == language
        text = text_of(mail)
        for word in words:
            assert word in text
        assert f"{URL}/message/{queue_id}" in text


def test_dry_run_prints_the_mail_and_changes_nothing(
    mta: PostfixInstance, policy: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = hold(mta, subject="hold me")
    after_arrivals(mta)
    status, out, err = digest(policy, capsys, "--dry-run")
    assert status == 0
    assert err == (f"dry run: would run /usr/sbin/sendmail -C {mta.config_dir} -i -f "
                   f"digest@example.org -- {' '.join(HELPDESK)} with:\n")
    printed = email.message_from_string(out, policy=default)
    assert str(printed["To"]) == ", ".join(HELPDESK)
    assert f"1. {queue_id} " in text_of(printed)  # type: ignore[arg-type]
    time.sleep(0.5)
    assert mta.delivered() == [] and not (data_dir / LAST_FILE).exists()


def test_a_digest_that_is_off_sends_nothing_and_says_so(
    mta: PostfixInstance, tmp_path: Path, data_dir: Path, helper: Helper,
    capsys: pytest.CaptureFixture[str]
) -> None:
    hold(mta, subject="hold me")
    policy = write_policy(tmp_path / "off.yaml", mta, data_dir, helper.socket_path,
                          enabled=False)
    status, out, err = digest(policy, capsys)
    assert (status, err) == (0, "")
    assert out == f"the digest is off (review.digest.enabled in {policy}): no mail sent\n"
    time.sleep(0.5)
    assert mta.delivered() == [] and not data_dir.exists()


# ---- without Postfix -----------------------------------------------------------------


def held(queue_id: str, arrival: float, subject: str = "hello",
         trust: str | None = TRUST.partition(": ")[2]) -> HeldMessage:
    entry = QueueEntry(queue_id, "hold", arrival, 100, "noreply@example.com",
                       ("support@example.org",))
    mark = parse_trust_header(trust) if trust else None
    return HeldMessage(entry, "noreply@example.com", 60.0, subject, (), mark)


def review_config(**fields: object) -> ReviewConfig:
    digest = DigestConfig(enabled=True, recipients=HELPDESK, sender="digest@example.org")
    return ReviewConfig(digest=digest, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("url, listen, base", [
    ("", "127.0.0.1:9426", "http://127.0.0.1:9426/"),
    ("", "[::1]:9426", "http://[::1]:9426/"),
    ("https://mail.example.com/review", "127.0.0.1:9426", "https://mail.example.com/review/"),
    ("https://mail.example.com/review/", "127.0.0.1:9426", "https://mail.example.com/review/"),
])
def test_links_go_to_the_proxys_address_else_the_listen_address(
        url: str, listen: str, base: str) -> None:
    links = page_links(review_config(url=url, listen=listen))
    assert links.base == base
    assert links.message("4F2A1B") == base + "message/4F2A1B"


def test_the_window_is_half_open_in_whole_seconds() -> None:
    window = Window(start=1000, end=2000)
    assert [window.holds(held("4F2A1B", t)) for t in (999, 1000, 1999, 2000)] == [
        False, True, True, False]
    assert Window(None, 2000).holds(held("4F2A1B", 0))


def test_reasons_in_words_translated() -> None:
    english = reason_words("iprev.ptr_missing", translator("en"))
    assert english == f"iprev.ptr_missing: {FINDINGS['iprev.ptr_missing']}"
    assert reason_words("spf.mailfrom.fail", translator("de")) == "spf.mailfrom.fail"
    assert reason_words("made.up", translator("ja")) == "made.up"


def test_a_spam_wave_is_counted_not_listed() -> None:
    messages = [held(f"{index:06X}", 1000 + index) for index in range(MAX_LISTED + 5)]
    mail = compose_digest(messages, Window(None, 99999), review_config(), translator("en"), 9e4)
    text = text_of(mail)
    assert f"{MAX_LISTED}. " in text and f"{MAX_LISTED + 1}. " not in text
    assert "... and 5 more: see the page." in text
    assert str(mail["Subject"]) == f"Held mail (first digest): {MAX_LISTED + 5}"


def test_an_overlong_subject_is_cut_and_the_header_section_is_ours() -> None:
    mail = compose_digest([held("4F2A1B", 1000, subject="hold " + "x" * 5000 + "\n")],
                          Window(1000, 2000), review_config(), translator("fr"), 2000.0)
    assert str(mail["Subject"]) == "Courrier retenu depuis 1970-01-01 00:16:40Z : 1"
    (line,) = [line for line in text_of(mail).splitlines() if line.startswith("   Objet : ")]
    assert len(line) < 220 and line.endswith("…")
    assert all(len(line) <= 998 for line in mail.as_string().splitlines())  # RFC 5322 §2.1.1


def test_the_last_digest_file(data_dir: Path) -> None:
    data_dir.mkdir()
    assert read_last(data_dir).end is None
    write_last(data_dir, 1234567890)
    assert read_last(data_dir).end == 1234567890
    assert (data_dir / LAST_FILE).stat().st_mode & 0o777 == 0o600
    (data_dir / LAST_FILE).write_text("yesterday\n")
    unreadable = read_last(data_dir)
    assert unreadable.end is None and unreadable.problem is not None
    assert "not a time: 'yesterday'" in unreadable.problem


def test_a_digest_not_set_up_yet_previews_without_a_to_field() -> None:
    """--dry-run works before recipients are set; no empty To: is written."""
    mail = compose_digest([held("4F2A1B", 1000)], Window(None, 2000), ReviewConfig(),
                          translator("en"), 2000.0)
    assert "To" not in mail and str(mail["From"]) == "postmaster"
