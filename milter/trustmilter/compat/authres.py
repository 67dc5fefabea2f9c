"""authres, parsing by position: a subclass, and the code it relies on.

authres 1.2.0 consumes each token of an Authentication-Results field by
rebuilding the rest of the text without it (``re.sub(..., count=1)``): a
copy of the rest per token, quadratic in a long field (100 KB of
properties: 0.5 s, 1 MB: 19 s), and every message's A-R fields are parsed
(our authserv-id is looked for in each). `LinearHeader` moves a position
instead. Nothing global is replaced: a FeatureContext of ours is given
the subclass as its `header_class`. It relies on how authres's parser uses
`_parse_text` and `_parse_pattern`, and on FeatureContext parsing through
`header_class`; both are fingerprinted, and where either differs authres's
own class is kept (linear_features). The same class reads a quoted property
value followed by more properties, which authres drops (QuotedPvalue).
docs/upstream/authres.md describes both fixes for upstream.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import authres
import authres.core

from trustmilter.compat.patches import Patch

DIST = "authres"
VERSIONS = frozenset({"1.2.0"})
# What authres's parser shows of the unparsed rest of a header (see LinearHeader).
_SHOWN_REST = 41

_AUTHRES_PARSES = "A-R fields parsed by authres itself, quadratic in a long field"
PATCHES: tuple[Patch, ...] = (
    # The whole class: every method that reads _parse_text or calls _parse_pattern.
    Patch(
        authres.core.AuthenticationResultsHeader, "_parse_pattern", None, DIST, VERSIONS,
        fingerprint="9f7164a1f631ded68fe7a239620a7e7c103d0933a5c5950f8b600eccfca57277",
        guards=("AuthenticationResultsHeader",), lost=_AUTHRES_PARSES,
    ),
    Patch(
        authres.FeatureContext, "parse_value", None, DIST, VERSIONS,
        fingerprint="20a48fc91dcf013ce89cb59f119039a9129a929d3ee80595507823cf16bd150a",
        guards=("FeatureContext",), lost=_AUTHRES_PARSES,
    ),
)


@functools.lru_cache(maxsize=256)
def _token_pattern(pattern: str) -> re.Pattern[str]:
    """authres's token pattern, to be matched where the parse has got to."""
    # authres anchors it with "^"; match(text, pos) anchors it at pos instead.
    return re.compile(pattern.lstrip("^"), re.IGNORECASE)


class QuotedPvalue:
    """authres's ``_parse_pvalue`` with one change: a quoted-string value may be
    followed by another property.

    RFC 8601 §2.2: ``resinfo = [CFWS] ";" methodspec [ CFWS reasonspec ]
    [ CFWS 1*propspec ]``, and a pvalue may be a quoted-string. authres
    accepts a quoted-string only when ";" or the end follows it, so in
    ``dkim=pass header.i="a b" header.s=sel`` the header.i property was
    silently lost (and with it any value trustmilter must quote). Written
    against authres's other parse methods, so that it serves authres's own
    class as well as LinearHeader (the tests compare the two).
    """

    def _parse_pvalue(self: Any) -> str | None:
        self._parse_rfc5322_cfws()
        quoted: str | None = self._parse_rfc5322_quoted_string()
        if quoted:
            if not self._parse_pattern(r"@"):
                # quoted-string: whatever follows is the next property's business.
                self._parse_rfc5322_cfws()
                return quoted
            # quoted-string "@" domain-name
            domain_name = self._parse_rfc5322_dot_atom()
            self._parse_rfc5322_cfws()
            return f'"{quoted}"@{domain_name}' if domain_name else None
        if self._parse_pattern(r"@"):
            # "@" domain-name
            domain_name = self._parse_rfc5322_dot_atom()
            self._parse_rfc5322_cfws()
            return f"@{domain_name}" if domain_name else None
        # *ptext: authres's lax union of token, dot-atom and domain-name.
        match = self._parse_pattern(f"{authres.core.PTEXT_PATTERN}*")
        self._parse_rfc5322_cfws()
        return match.group() if match else None


class LinearHeader(QuotedPvalue, authres.core.AuthenticationResultsHeader):  # type: ignore[misc]
    """authres's header class, parsing by position.

    authres reads the rest itself only to test it for "" or r";|$" and to
    quote up to 40 characters in a SyntaxError: the first 41 characters give
    the same answers to all three.
    """

    _text = ""
    _pos = 0

    @property
    def _parse_text(self) -> str:
        return self._text[self._pos : self._pos + _SHOWN_REST]

    @_parse_text.setter
    def _parse_text(self, text: str) -> None:
        self._text, self._pos = text, 0

    def _parse_pattern(self, pattern: str) -> re.Match[str] | None:
        match = _token_pattern(pattern).match(self._text, self._pos)
        if match is not None:
            self._pos = match.end()
        return match


def linear_features(features: Any) -> Any:
    """`features` (an authres FeatureContext) parsing with LinearHeader, where
    the authres installed is the one LinearHeader was written for."""
    if all(patch.holds() for patch in PATCHES):
        features.header_class = LinearHeader
    return features
