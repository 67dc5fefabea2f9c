"""Translations of `explain-bounce` and `doctor` (issue 5): catalogs complete, CLI translated.

The catalogs are read as gettext reads them (the compiled .mo) and as
translators edit them (the .po, with a small regex): every msgid must be
translated in de, fr and ja, keep the same named placeholders, and the
committed .mo must match its .po.
"""

from __future__ import annotations

import gettext
import re
from collections import defaultdict
from pathlib import Path

import pytest

from test_bounce_explain import NOT_A_BOUNCE, POSTFIX_DSN
from trustmilter.cli import main
from trustmilter.i18n import LOCALE_DIR, choose, translator

TRANSLATED = ("de", "fr", "ja")
_ENTRY = re.compile(r'^msgid ((?:"[^\n]*"\n)+)msgstr ((?:"[^\n]*"\n)+)', re.M)
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _unquote(block: str) -> str:
    return "".join(re.findall(r'"(.*)"', block)).replace('\\"', '"').replace("\\\\", "\\")


def po_entries(lang: str) -> dict[str, str]:
    """msgid -> msgstr of a .po file, the header left out."""
    text = (LOCALE_DIR / lang / "LC_MESSAGES" / "trustmilter.po").read_text(encoding="utf-8")
    entries = {_unquote(m[1]): _unquote(m[2]) for m in _ENTRY.finditer(text + "\n")}
    entries.pop("", None)
    return entries


def mo_catalog(lang: str) -> dict[str, str]:
    path = LOCALE_DIR / lang / "LC_MESSAGES" / "trustmilter.mo"
    with path.open("rb") as handle:
        catalog: dict[str, str] = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
    return {k: v for k, v in catalog.items() if k}


def test_every_catalog_has_the_same_msgids_all_translated() -> None:
    english = set(po_entries("en"))
    assert len(english) > 50  # the catalogs were really read
    for lang in TRANSLATED:
        entries = po_entries(lang)
        assert set(entries) == english, lang
        empty = [msgid for msgid, msgstr in entries.items() if not msgstr.strip()]
        assert not empty, (lang, empty)


def test_translations_keep_the_placeholders_and_format() -> None:
    for lang in TRANSLATED:
        for msgid, msgstr in po_entries(lang).items():
            assert set(_PLACEHOLDER.findall(msgstr)) == set(_PLACEHOLDER.findall(msgid)), msgstr
            msgstr % defaultdict(lambda: "x")  # raises for a broken % sequence


def test_mo_files_are_up_to_date_with_po() -> None:
    for lang in TRANSLATED:
        assert mo_catalog(lang) == po_entries(lang), f"recompile {lang}: pybabel compile"


def test_language_choice() -> None:
    assert choose("de") == "de" and choose("ja_JP.UTF-8") == "ja"
    assert choose("xx") == "en" and choose("C") == "en"
    assert choose(None, {"LANG": "fr_FR.UTF-8"}) == "fr"
    assert choose(None, {"LANGUAGE": "xx:ja", "LANG": "de_DE.UTF-8"}) == "ja"
    assert choose(None, {"LC_ALL": "C.UTF-8", "LANG": "de_DE.UTF-8"}) == "en"
    assert choose(None, {}) == "en"
    assert translator("de")("mailbox full") == "Postfach voll"
    assert translator("klingon")("mailbox full") == "mailbox full"
    assert translator(None, {"LANG": "ja_JP.UTF-8"})("user unknown").startswith("ユーザー不明")


def _bounce(tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "bounce.eml"
    path.write_bytes(raw)
    return str(path)


def test_explain_bounce_in_german(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bounce(tmp_path, POSTFIX_DSN)
    assert main(["explain-bounce", path, "--lang", "de"]) == 0
    out = capsys.readouterr().out
    assert "Empfänger Bob@example.net" in out
    assert "Ursache: Benutzer unbekannt" in out
    assert "dauerhafter Fehler, wird nicht erneut versucht" in out
    assert "Cause:" not in out and "server said:" not in out
    # --json stays English whatever the language.
    assert main(["explain-bounce", path, "--json", "--lang", "de"]) == 0
    assert '"cause": "user unknown"' in capsys.readouterr().out


def test_explain_bounce_french_and_unknown_language(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain-bounce", _bounce(tmp_path, NOT_A_BOUNCE), "--lang", "fr"]) == 0
    assert "Ce message n'est pas un message de non-remise." in capsys.readouterr().out
    assert main(["explain-bounce", _bounce(tmp_path, POSTFIX_DSN), "--lang", "xx"]) == 0
    assert "Cause: user unknown." in capsys.readouterr().out


@pytest.mark.parametrize(("lang", "meaning"), [
    ("de", "Status 5.1.1 (im Bericht angegeben): Adressierungsstatus / Ungültige Ziel-Postfachadresse"),
    ("fr", "statut 5.1.1 (indiqué dans le rapport): État de l'adressage / "
           "Adresse de boîte aux lettres de destination non valide"),
    ("ja", "ステータス 5.1.1 (レポートに記載): アドレス関連のステータス / 宛先メールボックスのアドレスが不正"),
])
def test_explain_bounce_translates_the_status_meaning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], lang: str, meaning: str) -> None:
    """The RFC 3463 subject and detail of 5.1.1 are shown in the report's language."""
    path = _bounce(tmp_path, POSTFIX_DSN)
    assert main(["explain-bounce", path, "--lang", lang]) == 0
    out = capsys.readouterr().out
    assert meaning in out
    assert "Addressing Status" not in out and "Bad destination mailbox address" not in out
    # --json keeps the English meanings.
    assert main(["explain-bounce", path, "--json", "--lang", lang]) == 0
    assert '"detail": "Bad destination mailbox address"' in capsys.readouterr().out


def test_explain_bounce_follows_the_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    assert main(["explain-bounce", _bounce(tmp_path, POSTFIX_DSN)]) == 0
    assert "原因: ユーザー不明" in capsys.readouterr().out


@pytest.fixture
def policy_file(tmp_path: Path, dns_server) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(f"dns:\n  nameservers: ['{dns_server.nameserver}']\n"
                    "  timeout: 0.5\n  lifetime: 1.0\n")
    return path


def test_doctor_in_japanese(dns_server, policy_file: Path,  # type: ignore[no-untyped-def]
                            capsys: pytest.CaptureFixture[str]) -> None:
    dns_server.load('example.org. 300 IN TXT "site-verification=abc"\n')
    args = ["doctor", "--domain", "example.org", "--ip", "198.51.100.7",
            "--policy", str(policy_file)]
    assert main([*args, "--lang", "ja"]) == 1
    out = capsys.readouterr().out
    assert "example.org の送信設定:" in out
    assert "失敗 ptr.exists [198.51.100.7]: PTR レコードがありません" in out
    assert "対処: example.org に次の TXT レコードを公開してください: v=spf1 ip4:198.51.100.7 -all" in out
    assert "MX レコードを公開してください: example.org. IN MX 10 mail.example.org." in out
    assert "Publish" not in out
    assert main([*args, "--lang", "ja", "--json"]) == 1
    assert '"fix": "Publish this TXT record at example.org: v=spf1 ip4:198.51.100.7 -all"' in (
        capsys.readouterr().out)
    assert main([*args, "--lang", "en"]) == 1
    assert "FAIL ptr.exists [198.51.100.7]: no PTR record" in capsys.readouterr().out


def test_code_msgids_are_in_the_catalog() -> None:
    """Each N_("...") literal of the translated modules has an entry (no msgid forgotten)."""
    package = LOCALE_DIR.parent
    sources = [package / "bounce" / "commands.py", package / "bounce" / "explain.py",
               package / "bounce" / "status.py",
               package / "doctor" / "rules.py", package / "doctor" / "run.py"]
    marked = set()
    for source in sources:
        code = source.read_text(encoding="utf-8")
        for call in re.finditer(r'N_\(((?:\s*"(?:[^"\\]|\\.)*")+)\s*\)', code):
            marked.add("".join(re.findall(r'"((?:[^"\\]|\\.)*)"', call[1])).replace('\\"', '"'))
    assert len(marked) > 50
    assert marked <= set(po_entries("de")), marked - set(po_entries("de"))


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_cause_is_named_and_explained_in_each_language(lang: str) -> None:
    """The fixed set of bounce causes: a name and an explanation each, in English
    (the msgids) and translated into German, French and Japanese."""
    from trustmilter.bounce.causes import CAUSE_MSGIDS, EXPLANATIONS, Cause

    assert set(CAUSE_MSGIDS) == {cause.value for cause in Cause}
    assert set(EXPLANATIONS) == set(Cause)
    tr = translator(lang)
    entries = po_entries(lang)
    for cause in Cause:
        for msgid in (cause.value, EXPLANATIONS[cause]):
            assert msgid in entries, msgid
            assert tr(msgid) != msgid, (lang, msgid)


def test_explain_bounce_explains_the_cause_in_japanese(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain-bounce", str(_bounce(tmp_path, POSTFIX_DSN)), "--lang", "ja"]) == 0
    out = capsys.readouterr().out
    assert translator("ja")("user unknown") in out
    assert "受信側ドメインにそのアドレスは存在しません" in out
    assert "(レポートに記載)" in out  # where the code came from
