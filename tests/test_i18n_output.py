"""Every word `explain-bounce` and `doctor` print in German, French and Japanese is translated.

The commands run on bounces of every MTA format read and on sending setups
that make every doctor rule pass, fail, warn or go undecided. A word of the
output is accepted when it is in the language's catalog (a msgstr), or is
data: what the bounce itself says (its --json fields that copy the input),
a name, address, record or tag (a token with a dot, @, =, / or digit), an
upper-case acronym (PTR, SERVFAIL), a header field name, or the words a
library said about a sender's record (`LIBRARY_WORDS`). Anything else is
English our code let through.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from keys import key_zone, sign
from test_bounce_cli import OUR_DKIM_KEY, TOKEN_KEY, ours_policy, report, returned
from test_bounce_explain import (
    EXCHANGE,
    EXIM,
    GMAIL,
    NOT_A_BOUNCE,
    POSTFIX_DSN,
    QMAIL,
    SENDMAIL,
    YAHOO,
)
from test_bounce_notices import CHALLENGE, GROUPWISE, SUCCESS_NOTICE
from test_doctor import bad_zone, good_zone
from test_i18n import po_entries
from trustmilter.bounce import batv
from trustmilter.cli import main
from trustmilter.i18n import command_translator
from trustmilter.mail.token import make_token

TRANSLATED = ("de", "fr", "ja")
# Header field names, shown as written: they are what the reader searches for.
FIELD_NAMES = frozenset({"Message-ID", "Subject", "From", "To", "Date", "Reporting-MTA",
                         "Received"})
# What pyspf and dkimpy say about a broken record of these setups, quoted.
LIBRARY_WORDS = ("Invalid IP4 address", "could not parse RSA public key")
# Data tokens: names, addresses, IPs, records, tags, rule ids, status codes;
# an SPF record's terms (mx, -all) are its syntax, not words.
_SPF_RECORD = re.compile(r"v=spf1(?: [-+~?]?[A-Za-z0-9.:/_-]+)*")
# (a dot or colon must be inside the token: "said:" ending a phrase is a word).
_DATA_TOKEN = re.compile(r"\S*\w[.@=/:]\w\S*|\S*\d\S*|<[^>]*>|\b\w+=")
_FIELD_NAMES = "|".join(re.escape(name) for name in sorted(FIELD_NAMES, key=len, reverse=True))
_FIELD_NAME = re.compile(rf"(?<![\w-])(?:{_FIELD_NAMES})(?![\w-])")
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9]+\b")
_WORD = re.compile(r"[^\W\d_]+")
_PLACEHOLDER = re.compile(r"%\(\w+\)s")

TEMP_ZONE = """
$SERVFAIL temp.example.org.
$SERVFAIL 9.100.51.198.in-addr.arpa.
$SERVFAIL x._domainkey.temp.example.org.
$SERVFAIL helo.example.net.
$TIMEOUT _dmarc.temp.example.org.
"""
TWO_SPF = """
two.example.org. 300 IN TXT "v=spf1 -all"
two.example.org. 300 IN TXT "v=spf1 mx -all"
two.example.org. 300 IN MX 10 mail.two.example.org.
"""
DOCTOR_RUNS = [
    ["--domain", "example.com", "--ip", "192.0.2.4", "--helo", "mail.example.com",
     "--dkim-selector", "rsa", "--dkim-selector", "ed"],
    ["--domain", "example.org", "--ip", "198.51.100.7", "--ip", "198.51.100.8",
     "--helo", "nothing.example.net", "--dkim-selector", "missing", "--dkim-selector", "revoked",
     "--dkim-selector", "dsa", "--dkim-selector", "junk", "--dkim-selector", "small"],
    ["--domain", "broken.example.org"],
    ["--domain", "limit.example.org"],
    ["--domain", "auth.example.org", "--ip", "198.51.100.8"],
    ["--domain", "temp.example.org", "--ip", "198.51.100.9", "--helo", "helo.example.net",
     "--dkim-selector", "x"],
    ["--domain", "nowhere.example.net", "--helo", "mail.example.com"],
    ["--domain", "two.example.org"],
]
NO_STATUS_PART = b"""\
From: MAILER-DAEMON@mail.example.com
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary=X

--X
Content-Type: text/plain

Something went wrong.
--X--
"""
BOUNCES = {"postfix": POSTFIX_DSN, "exim": EXIM, "qmail": QMAIL, "exchange": EXCHANGE,
           "gmail": GMAIL, "yahoo": YAHOO, "sendmail": SENDMAIL, "not a bounce": NOT_A_BOUNCE,
           "no status part": NO_STATUS_PART, "success notice": SUCCESS_NOTICE,
           "challenge": CHALLENGE, "groupwise": GROUPWISE}


@cache
def catalog_words(lang: str) -> frozenset[str]:
    """Every word of the language's translations, lower-cased."""
    words: set[str] = set()
    for msgstr in po_entries(lang).values():
        words.update(w.lower() for w in _WORD.findall(_PLACEHOLDER.sub(" ", msgstr)))
    return frozenset(words)


def untranslated(output: str, lang: str, data: tuple[str, ...] = ()) -> set[str]:
    """The words of `output` that are neither in `lang`'s catalog nor data."""
    for quoted in sorted({*data, *LIBRARY_WORDS}, key=len, reverse=True):
        if quoted:  # whole words only: the selector "rsa" is not in "Versand"
            output = re.sub(rf"(?<!\w){re.escape(quoted)}(?!\w)", " ", output)
    output = _FIELD_NAME.sub(" ", output)
    output = _DATA_TOKEN.sub(" ", _SPF_RECORD.sub(" ", output))
    output = _ACRONYM.sub(" ", output)
    known = catalog_words(lang)
    return {word for word in _WORD.findall(output) if word.lower() not in known}


def _strings(document: object) -> Iterator[str]:
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for value in document.values():
            yield from _strings(value)
    elif isinstance(document, list):
        for value in document:
            yield from _strings(value)


def bounce_data(report: dict[str, object]) -> tuple[str, ...]:
    """What a bounce says of itself: the --json fields copied from its text."""
    copied = [report.get("reporting_mta"), report.get("format"),
              *_strings(report.get("returned_message"))]
    for recipient in report.get("recipients", []):  # type: ignore[attr-defined]
        copied += [recipient["address"], recipient["diagnostic"], recipient["remote_mta"],
                   recipient["original_recipient"]]
        if recipient["action"] not in ("failed", "delayed", "delivered", "relayed", "expanded"):
            copied.append(recipient["action"])  # a value RFC 3464 does not define: data
    return tuple(str(value) for value in copied if value)


def test_the_check_finds_english_it_is_shown() -> None:
    """The check itself: English words are found, names and acronyms are not."""
    assert untranslated("Recipient bob@example.net: failed, SERVFAIL", "ja") == {
        "Recipient", "failed"}
    assert untranslated("宛先 bob@example.net: v=spf1 -all (spf=pass) [Subject]", "ja") == set()
    assert untranslated("Empfänger: failed, said: User unknown", "de", ("User unknown",)) == {
        "failed", "said"}


@pytest.fixture
def bounce_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name, raw in BOUNCES.items():
        files[name] = tmp_path / f"{name.replace(' ', '-')}.eml"
        files[name].write_bytes(raw)
    return files


@pytest.mark.parametrize("lang", TRANSLATED)
def test_explain_bounce_prints_only_catalog_words_and_data(
        lang: str, bounce_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for name, path in bounce_files.items():
        assert main(["explain-bounce", str(path), "--json"]) == 0
        data = bounce_data(json.loads(capsys.readouterr().out))
        assert main(["explain-bounce", str(path), "--lang", lang]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        assert untranslated(captured.out, lang, data) == set(), (name, captured.out)


BATV_SECRET = b"s3cret-for-our-return-paths-0123456789"


def ours_cases(tmp_path: Path, nameserver: str) -> list[tuple[Path, list[str]]]:
    """Bounces and command lines that make every mark of ours show each of its
    answers: proved, claimed, contradicted, not checked."""
    key = tmp_path / "batv.key"
    key.write_bytes(BATV_SECRET)
    key.chmod(0o600)
    policy = ours_policy(tmp_path, nameserver, batv_key_file=str(key))
    token = make_token(TOKEN_KEY, "t4711@example.org", "Mon, 01 Jan 2024 10:00:00 +0000")
    copy = returned(f"X-Trustmilter-Token: {token}".encode())
    now = time.time()
    tagged = batv.tagged(BATV_SECRET, "support@example.org", now)
    forged_tag = batv.tagged(b"not-our-secret-0123456789abcdefghij", "support@example.org", now)
    expired = batv.tagged(BATV_SECRET, "support@example.org", now - 30 * 86400)
    bounces = {
        # Everything proves it: our MTA, our token, our signature, our return path.
        "proved": report(sign(copy, OUR_DKIM_KEY, "example.org"), to=tagged),
        # A forged token, a header changed after signing, a tag not ours.
        "contradicted": report(sign(returned(), OUR_DKIM_KEY, "example.org").replace(
            b"Subject: [#4711]", b"Subject: [#4712]"), to=forged_tag).replace(
            b"To: bob@example.net", b"To: bob@example.net\r\nX-Trustmilter-Token: "
            b"1.AAAAAAAAAAAAAAAAAAAAAA", 1),
        "expired": report(returned(), to=expired),
    }
    cases: list[tuple[Path, list[str]]] = []
    for name, raw in bounces.items():
        path = tmp_path / f"{name}.eml"
        path.write_bytes(raw)
        cases.append((path, ["--policy", str(policy), "--client-name", "relay.example.org"]))
        cases.append((path, ["--policy", str(policy)]))
        cases.append((path, ["--policy", str(policy), "--client-name", "mx.example.net"]))
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    bad_key = unreadable / "batv.key"
    bad_key.write_bytes(BATV_SECRET)
    bad_key.chmod(0o644)  # readable by others: refused, and said so
    cases.append((tmp_path / "proved.eml",
                  ["--policy", str(ours_policy(unreadable, nameserver,
                                               batv_key_file=str(bad_key)))]))
    return cases


@pytest.mark.parametrize("lang", TRANSLATED)
def test_what_each_mark_of_ours_showed_is_translated(
        lang: str, tmp_path: Path, dns_server, capsys: pytest.CaptureFixture[str]) -> None:
    dns_server.load(key_zone(OUR_DKIM_KEY, "sel", "example.org"))
    seen: set[str] = set()
    for path, options in ours_cases(tmp_path, dns_server.nameserver):
        assert main(["explain-bounce", str(path), "--json", *options]) == 0
        document = json.loads(capsys.readouterr().out)
        details = document["ours_details"]
        seen.update(detail.split(": ", 1)[0] + (": not checked" if "not checked" in detail
                                                 else "") for detail in details)
        # The key file's problem is the error's own words, as the log has them.
        errors = tuple(d.split("not checked: ", 1)[1] for d in details if "not checked" in d)
        assert main(["explain-bounce", str(path), "--lang", lang, *options]) == 0
        output = capsys.readouterr().out
        shown = [line for line in output.splitlines() if line.startswith("  - ")]
        assert len(shown) == len(details), (details, output)
        assert untranslated(output, lang, bounce_data(document) + errors) == set(), output
    assert seen == {"reporting-mta", "token", "dkim", "return-path", "from",
                    "return-path: not checked"}


@pytest.fixture
def doctor_policy(tmp_path: Path, dns_server) -> Path:
    dns_server.load(good_zone() + bad_zone() + TEMP_ZONE + TWO_SPF)
    path = tmp_path / "policy.yaml"
    path.write_text(f"dns:\n  nameservers: ['{dns_server.nameserver}']\n"
                    "  timeout: 0.3\n  lifetime: 0.6\n")
    return path


def test_doctor_prints_only_catalog_words_and_data(
        doctor_policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    statuses: set[str] = set()
    for run in DOCTOR_RUNS:
        main(["doctor", *run, "--policy", str(doctor_policy), "--json"])
        statuses.update(rule["status"] for rule in json.loads(capsys.readouterr().out)["rules"])
        outputs = {}
        for lang in TRANSLATED:
            main(["doctor", *run, "--policy", str(doctor_policy), "--lang", lang])
            outputs[lang] = capsys.readouterr().out
        for lang, output in outputs.items():
            # The selectors named on the command line ("revoked") are data too.
            selectors = tuple(run[at + 1] for at, arg in enumerate(run)
                              if arg == "--dkim-selector")
            assert untranslated(output, lang, selectors) == set(), (lang, output)
    assert statuses == {"pass", "warn", "fail"}


def test_unknown_language_is_said_once_and_the_locale_is_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(POSTFIX_DSN)
    monkeypatch.setenv("LANGUAGE", "")
    monkeypatch.setenv("LC_ALL", "")
    monkeypatch.setenv("LC_MESSAGES", "")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    assert main(["explain-bounce", str(path), "--lang", "es"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "'es'" in captured.err
    # The address as the sender wrote it (the report's Original-Recipient).
    assert "Empfänger Bob@example.net" in captured.out  # the locale's German
    assert captured.err.startswith("trustmilter: ") and "de" in captured.err
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert main(["explain-bounce", str(path), "--lang", "es"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ("trustmilter: unknown language 'es' (known: en, de, fr, ja); "
                            "using en\n")
    assert "Recipient Bob@example.net" in captured.out
    assert main(["explain-bounce", str(path), "--lang", "fr_FR.UTF-8"]) == 0
    assert capsys.readouterr().err == ""  # a locale name of a shipped language is known


def test_a_known_language_says_nothing_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    for lang in (None, "", "de", "ja_JP.UTF-8"):
        command_translator(lang, environ={})
    assert capsys.readouterr().err == ""
