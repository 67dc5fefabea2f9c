"""Translations of the readable output of ``explain-bounce`` and ``doctor``.

The catalogs are standard gettext ``.mo`` files shipped in the package
(``locale/<lang>/LC_MESSAGES/trustmilter.mo``), compiled from the ``.po``
sources next to them (see the header of any ``.po`` file). The language is
``--lang``, else the user's locale (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
``LANG``, the order gettext itself uses), else English. A ``--lang`` that
names no shipped language is said once on standard error, and the locale
(else English) is used. A translator is returned, never stored: nothing
here is global mutable state. A sentence built before the language is
known is kept as a `Text` (its msgid and arguments) and rendered later.

Machine output (``--json``) is never translated.
"""

from __future__ import annotations

import gettext
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

DOMAIN = "trustmilter"
LOCALE_DIR = Path(__file__).parent / "locale"
# The languages of the rules' sources; English is the msgid itself.
LANGUAGES = ("en", "de", "fr", "ja")
# gettext's own lookup order for the message locale.
_ENVIRONMENT = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def N_(message: str) -> str:
    """Mark a string for extraction without translating it (translated where shown)."""
    return message


@dataclass(frozen=True, slots=True)
class Text:
    """A sentence kept as its msgid and named arguments, so it can be shown in any language.

    Named placeholders (``%(record)s``) let a translator reorder the parts.
    """

    template: str
    args: tuple[tuple[str, str], ...] = ()

    def render(self, tr: Callable[[str], str] = N_) -> str:
        return tr(self.template) % dict(self.args)


def text(template: str, **args: object) -> Text:
    """A `Text` of `template` (a literal marked with N_) with its arguments as strings."""
    return Text(template, tuple((k, str(v)) for k, v in args.items()))


def _language(value: str) -> str | None:
    """``de_DE.UTF-8@euro`` -> ``de``; None for anything not shipped (``C``, ``POSIX``)."""
    code = value.split(".")[0].split("@")[0].split("_")[0].split("-")[0].strip().lower()
    return code if code in LANGUAGES else None


def choose(lang: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The language to use: ``lang`` if given (unknown -> English), else the locale."""
    if lang:
        return _language(lang) or "en"
    env = os.environ if environ is None else environ
    for name in _ENVIRONMENT:
        value = env.get(name, "")
        if not value:
            continue
        # LANGUAGE is a priority list ("de:fr"); the first shipped one wins.
        for part in value.split(":"):
            found = _language(part)
            if found:
                return found
        if name != "LANGUAGE":
            # The first set variable decides (POSIX precedence), even as "C".
            return "en"
    return "en"


def translator(lang: str | None, environ: Mapping[str, str] | None = None
               ) -> Callable[[str], str]:
    """A ``gettext`` function for ``lang`` (or the locale); English when there is no catalog."""
    chosen = choose(lang, environ)
    if chosen == "en":
        return gettext.NullTranslations().gettext
    catalog = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[chosen],
                                  fallback=True)
    return catalog.gettext


def command_translator(lang: str | None, stderr: TextIO | None = None,
                       environ: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """The translator for a command's ``--lang``.

    A language that is not shipped (``--lang es``) is said once on
    `stderr`, in the language used instead: the locale's, else English.
    """
    if not lang or _language(lang) is not None:
        return translator(lang, environ)
    tr = translator(None, environ)
    notice = tr(N_("unknown language %(lang)s (known: %(known)s); using %(used)s"))
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in lang)
    print("trustmilter: " + notice % {"lang": repr(shown), "known": ", ".join(LANGUAGES),
                                      "used": choose(None, environ)},
          file=stderr if stderr is not None else sys.stderr)
    return tr
