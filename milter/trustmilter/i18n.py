"""Translations of the readable output of ``explain-bounce`` and ``doctor`` (issue 5).

The catalogs are standard gettext ``.mo`` files shipped in the package
(``locale/<lang>/LC_MESSAGES/trustmilter.mo``), compiled from the ``.po``
sources next to them (see the header of any ``.po`` file). The language is
``--lang``, else the user's locale (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
``LANG``, the order gettext itself uses), else English. A translator is
returned, never stored: nothing here is global mutable state.

Machine output (``--json``) is never translated.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Callable, Mapping
from pathlib import Path

DOMAIN = "trustmilter"
LOCALE_DIR = Path(__file__).parent / "locale"
# The languages of the seeds (SEED-RULES.md); English is the msgid itself.
LANGUAGES = ("en", "de", "fr", "ja")
# gettext's own lookup order for the message locale.
_ENVIRONMENT = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def N_(message: str) -> str:
    """Mark a string for extraction without translating it (translated where shown)."""
    return message


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
