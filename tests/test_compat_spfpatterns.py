"""pyspf's domain-spec patterns, linear: the same answers as pyspf's own, for any text."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import spf

from trustmilter import compat
from trustmilter.compat.pyspf.patterns import RE_CHAR, RE_INVALID_MACRO, RE_TOPLAB

# The installed pyspf's own, captured before anything was installed.
ORIGINAL_TOPLAB, ORIGINAL_CHAR, ORIGINAL_INVALID_MACRO = (
    cast(re.Pattern[str], compat.original(f"spf.{name}"))
    for name in ("RE_TOPLAB", "RE_CHAR", "RE_INVALID_MACRO")
)


def texts(seed: int, alphabet: list[str], count: int, most: int = 14) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, most)))
            for _ in range(count)]


ALPHABET = ["%", "{", "}", "%{", "%{d}", "%%", "%_", "%-", ".", "a", "B", "1", "-", "_", "\n",
            "x.com", ".co-uk", "K", "\u212a", "\u017f", "é", "/", ":", "{ir}"]


@contextmanager
def pyspf_patterns(toplab: object, char: object, invalid: object) -> Iterator[None]:
    saved = spf.RE_TOPLAB, spf.RE_CHAR, spf.RE_INVALID_MACRO
    spf.RE_TOPLAB, spf.RE_CHAR, spf.RE_INVALID_MACRO = toplab, char, invalid
    try:
        yield
    finally:
        spf.RE_TOPLAB, spf.RE_CHAR, spf.RE_INVALID_MACRO = saved


def outcome(func: Callable[[], object]) -> object:
    try:
        return ("value", func())
    except spf.PermError as exc:
        return ("permerror", str(exc))


def test_top_label_split_is_pyspfs_for_any_text() -> None:
    for text in texts(7208, ALPHABET, 10000):
        assert RE_TOPLAB.split(text) == ORIGINAL_TOPLAB.split(text), text


def test_macros_are_found_where_pyspf_finds_them() -> None:
    for text in texts(4408, ALPHABET, 10000):
        ours = [(m.span(), m.groups()) for m in RE_CHAR.finditer(text)]
        theirs = [(m.span(), m.groups()) for m in ORIGINAL_CHAR.finditer(text)]
        assert ours == theirs, text


def test_bad_macro_search_remembers_only_the_same_text() -> None:
    first, second = "a.%x.b", "a.%%.b"
    assert RE_INVALID_MACRO.search(first) is not None
    assert RE_INVALID_MACRO.search(first) is not None
    assert RE_INVALID_MACRO.search(second) is None
    assert RE_INVALID_MACRO.search("".join(["a.", "%x.b"])) is not None  # equal, not the same


def test_domain_specs_expand_as_with_pyspfs_patterns() -> None:
    query = spf.query(i="192.0.2.1", s="strong-bad@email.example.com", h="mx.example.org")
    alphabet = [*ALPHABET, "%{s}", "%{l1r-}", "%{ir}", "%{v}", "%{h}", "%(", "%x", "example"]
    for text in texts(1123, alphabet, 4000):
        with pyspf_patterns(ORIGINAL_TOPLAB, ORIGINAL_CHAR, ORIGINAL_INVALID_MACRO):
            theirs = outcome(lambda: query.expand_domain(text))  # noqa: B023
        with pyspf_patterns(RE_TOPLAB, RE_CHAR, RE_INVALID_MACRO):
            ours = outcome(lambda: query.expand_domain(text))  # noqa: B023
        assert ours == theirs, text


def test_worst_domain_specs_cost_linear_time() -> None:
    """pyspf's patterns took 0.5 to 0.8 s on 10 KB of such a domain-spec and over
    20 s on 100 KB; a sender's record may be 64 KB. A guard against that
    regression, not a speed measurement: the bound is about 1000 times what
    ours take."""
    compat.install()
    size = 1_000_000
    query = spf.query(i="192.0.2.1", s="a@example.com", h="example.com")
    started = time.monotonic()
    assert RE_TOPLAB.split("x." + "a" * size + "!")[-1]
    assert RE_TOPLAB.split("%{" * (size // 2))[-1]
    assert len(list(RE_CHAR.finditer("%{" * (size // 2)))) == 0
    assert query.expand("%%." * (size // 3) + "com")
    assert time.monotonic() - started < 10
