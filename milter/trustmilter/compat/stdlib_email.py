"""The standard library's MIME parameter split, in linear time.

``email.message._parseparam`` splits a Content-Type (or any structured
field) into its ``;`` parameters. Python 3.11's version re-counts the
quotes from the start of the rest of the field at every ``;`` it meets
inside an unclosed quote, and slices the rest off anew for every
parameter: a 100 KB field of ``a=";;;;...`` took 5 s (CPython gh-136063,
bpo-42909; a fix was merged upstream in 2025). It runs on text the sender
chooses, for every message: `get_param`, `get_content_charset` and
`get_boundary` call it, and so does the parser itself for each multipart
part, so the automation check, the URI and bounce readers all reach it.

`compat.install()` puts the version here in its place: the same list for
every input (tests/test_compat_mimeparams.py compares them), counting each
stretch of the field once. It is gated on the source of the standard
library's function, not only on the Python version: a Python whose
_parseparam is not the unfixed one we measured (a release carrying the
upstream fix) keeps its own, with one start-up line.
"""

from __future__ import annotations

import email.message

from trustmilter.compat.patches import PYTHON, Patch


def parseparam(value: object) -> list[str]:
    """email.message._parseparam(value): the parameters, names lower-cased."""
    text = ";" + str(value)
    params: list[str] = []
    start = 0
    while text.startswith(";", start):
        start += 1
        end = text.find(";", start)
        # A ";" inside a quoted string does not end the parameter: the stdlib
        # counts '"' (less '\"') from `start` again at each one; these counts
        # grow by the stretch since the last ";" (no '\"' spans a ";").
        quotes = escaped = 0
        counted = start
        while end > start:
            quotes += text.count('"', counted, end)
            escaped += text.count('\\"', counted, end)
            if (quotes - escaped) % 2 == 0:
                break
            counted = end
            end = text.find(";", end + 1)
        if end < 0:
            end = len(text)
        param = text[start:end]
        if "=" in param:
            i = param.index("=")
            param = param[:i].strip().lower() + "=" + param[i + 1 :].strip()
        params.append(param.strip())
        start = end
    return params


PATCHES: tuple[Patch, ...] = (
    # Python's series without a release we know carries the upstream fix; the
    # fingerprint (3.11.7's, unchanged for years before the fix) decides within.
    Patch(
        email.message, "_parseparam", parseparam, PYTHON, frozenset({"3.11", "3.12", "3.13"}),
        fingerprint="134d298cc0c98045177ba3978ecf719fda7c3effaf9a68e2b6457e9f5b4357e2",
        lost="linear-time protection lost, unless this Python carries the gh-136063 fix",
    ),
)
