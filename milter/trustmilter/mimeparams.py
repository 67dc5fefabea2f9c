"""The standard library's MIME parameter split, in linear time.

``email.message._parseparam`` splits a Content-Type (or any structured
field) into its ``;`` parameters. Python 3.11's version re-counts the
quotes from the start of the rest of the field at every ``;`` it meets
inside an unclosed quote, and slices the rest off anew for every
parameter: a 100 KB field of ``a=";;;;...`` took 5 s (CPython gh-136063,
bpo-42909; fixed only in later Pythons). It runs on text the sender
chooses, for every message: `get_param`, `get_content_charset` and
`get_boundary` call it, and so does the parser itself for each multipart
part, so the automation check, the URI and bounce readers all reach it.

`install()` puts the version here in its place, once per process (App.build
and the bounce command): the same list for every input
(tests/test_mimeparams.py compares them), counting each stretch of the
field once.
"""

from __future__ import annotations

import email.message
import threading

_install_lock = threading.Lock()
# The standard library's own, kept for the tests' comparison.
STDLIB_PARSEPARAM = email.message._parseparam  # type: ignore[attr-defined]


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


def install() -> None:
    """Make the email package split parameters with `parseparam` (idempotent)."""
    with _install_lock:
        email.message._parseparam = parseparam  # type: ignore[attr-defined]
