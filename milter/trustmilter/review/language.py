"""The page's language: the browser's choice among en, de, fr and ja.

The first of the browser's Accept-Language (RFC 9110 §12.5.4, quality
values honoured; ``de-CH`` counts as ``de``) that trustmilter ships, else
review.default_language. The words come from the same gettext catalogs
as the command line's (i18n.py); the templates reach them through
Jinja2's i18n extension, whose callables look up the translations of the
request being served (flask.g), never of a shared, changing environment.
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from types import MappingProxyType

from flask import g, request

from trustmilter.i18n import DOMAIN, LANGUAGES, LOCALE_DIR


def catalogs() -> Mapping[str, gettext.NullTranslations]:
    """Each shipped language's translations, read once when the app is made."""
    found: dict[str, gettext.NullTranslations] = {"en": gettext.NullTranslations()}
    for lang in LANGUAGES:
        if lang != "en":
            found[lang] = gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[lang],
                                              fallback=True)
    return MappingProxyType(found)


def requested_language(default: str) -> str:
    """The browser's language if trustmilter has it, else `default`."""
    best = request.accept_languages.best_match(LANGUAGES)
    return best if best in LANGUAGES else default


_ENGLISH = gettext.NullTranslations()


def _translations() -> gettext.NullTranslations:
    """The request's translations (set before each request; English before that)."""
    found: gettext.NullTranslations = g.get("translations", _ENGLISH)
    return found


def tr(message: str) -> str:
    """`message` in the request's language."""
    return _translations().gettext(message)


def ntr(singular: str, plural: str, count: int) -> str:
    """For Jinja2's i18n extension, which wants one; the page uses no plural forms."""
    return _translations().ngettext(singular, plural, count)
