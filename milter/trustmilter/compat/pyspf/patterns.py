"""pyspf's checks of a domain-spec in linear time: the same answers, no rescans.

A sender's SPF record (a TXT record of up to 64 KB, fetched over TCP when
it does not fit a UDP answer) reaches three regular expressions of pyspf
2.0 that are quadratic in it, with the GIL held:

- ``RE_TOPLAB`` (is the last label a top-level one?) retries
  ``[0-9a-z]*[a-z][0-9a-z]*`` at every way of splitting a long label that
  does not end the text (10 KB: 0.8 s);
- ``RE_TOPLAB`` and ``RE_CHAR`` (macros) look for the "}" of every "%{"
  anew to the end of the text when none follows (100 KB: 1.4 s);
- `query.expand` searches the whole domain-spec for a bad macro once per
  label, with ``RE_INVALID_MACRO``, the same search every time
  (10 KB: 0.5 s).

The registry (compat/pyspf/__init__.py) points pyspf's module globals at
the objects here: a top-label test that allows one way of
matching, "%{" tried for its "}" only up to the last "}" of the text, and
the bad-macro search remembered for the text it was last asked about, per
thread. pyspf calls only `split`, `finditer` and `search` on them; each
gives the same answer as pyspf's own for every text
(tests/test_compat_spfpatterns.py compares them with the installed
originals).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import spf

# pyspf's macro-char pattern (as 2.0.14 writes it, should it go), and the same
# with "%{...}" never matching: after the last "}" of a text none can.
_MACRO: str = getattr(spf, "PAT_CHAR", r"%(%|_|-|(\{[^\}]*\}))")
_MACRO_WITHOUT_BRACES = r"%(%|_|-|(\{(?!)))"
# pyspf's top label: [0-9a-z]*[a-z][0-9a-z]* is a run of letters and digits
# with a letter in it, written so that it can be matched one way only.
_TOPLAB = r"\.(?:(?=[0-9]*[a-z])[0-9a-z]+|[0-9a-z]+-[0-9a-z-]*[0-9a-z])\.?$"


class BraceSafePattern:
    """A pattern with pyspf's macro alternative, matched in two stretches: up to
    the last "}" as written, after it with "%{" failing at once (it would only
    look for a "}" to the end and fail, once for every "%{")."""

    def __init__(self, head: str, flags: int = 0) -> None:
        self.pattern = re.compile(head + _MACRO, flags)
        self._after_last_brace = re.compile(head + _MACRO_WITHOUT_BRACES, flags)

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        """The matches of `self.pattern.finditer(text)`, at the same places."""
        end = text.rfind("}") + 1
        # A match that starts before `end` ends by `end`: a macro ends at a "}" at
        # most, and a top label (no "}" in it) runs to the end of the text.
        yield from self.pattern.finditer(text, 0, end)
        yield from self._after_last_brace.finditer(text, end)

    def split(self, text: str) -> list[str | Any]:
        """`self.pattern.split(text)`: no match is empty, so each cuts the text once."""
        pieces: list[str | Any] = []
        done = 0
        for match in self.finditer(text):
            pieces.append(text[done : match.start()])
            pieces.extend(match.groups())
            done = match.end()
        pieces.append(text[done:])
        return pieces

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pattern, name)


class RememberedSearch:
    """pyspf's RE_INVALID_MACRO, whose `search` answers again without searching
    when this thread asks about the very same text as last time (expand asks
    once per label of it)."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self._last = threading.local()

    def search(self, text: str) -> re.Match[str] | None:
        last: tuple[str, re.Match[str] | None] | None = getattr(self._last, "value", None)
        if last is not None and last[0] is text:
            return last[1]
        found = self.pattern.search(text)
        self._last.value = (text, found)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pattern, name)


RE_TOPLAB = BraceSafePattern(_TOPLAB + "|", re.IGNORECASE)
RE_CHAR = BraceSafePattern("")
# pyspf's own pattern (as 2.0.14 writes it, should it go), searched less often.
RE_INVALID_MACRO = RememberedSearch(
    getattr(spf, "RE_INVALID_MACRO", re.compile(r"(?<!%)%[^{%_-]|%$"))
)
