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
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

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
from test_doctor import bad_zone, good_zone
from test_i18n import po_entries
from trustmilter.cli import main
from trustmilter.i18n import command_translator

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
           "no status part": NO_STATUS_PART}


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
