"""dkimpy's relaxed canonicalization, without one regular expression's cost.

RFC 6376 §3.4.2 and §3.4.4: relaxed canonicalization reduces every run of
spaces and tabs to a single space. dkimpy 1.1 does that with
``re.sub(b"[\\t ]+", b" ", text)``, which also "replaces" every single space
by itself: one match per word of the body. For ordinary text that is a
match every few bytes, and `re.sub` keeps a piece per match until it joins
them, so checking a 5 MB body peaked at 170 MB (34 times its size) and
this one function was 14 % of the milter's CPU under load.

`compress_whitespace` gives the same bytes for every input while matching
only runs that change: two or more spaces or tabs, or a lone tab. dkimpy
calls its module-level ``compress_whitespace`` by name at run time (for
DKIM and ARC, headers and bodies alike), so `install()` points that name
at ours, once per process, like the pyspf DNS hook (lookup/shims.py): a
process-global seam of the library, set in one place (App.build).
"""

from __future__ import annotations

import re
import threading

import dkim.canonicalization

# A run that canonicalization changes: 2+ spaces/tabs, or a single tab.
_CHANGING_RUN = re.compile(rb"[\t ]{2,}|\t")
_install_lock = threading.Lock()


def compress_whitespace(content: bytes) -> bytes:
    """Every run of spaces and tabs as one space (RFC 6376 §3.4.2, §3.4.4)."""
    return _CHANGING_RUN.sub(b" ", content)


def install() -> None:
    """Make dkimpy use `compress_whitespace` (idempotent)."""
    with _install_lock:
        dkim.canonicalization.compress_whitespace = compress_whitespace
