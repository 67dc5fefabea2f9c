"""Our relaxed whitespace folding for dkimpy: the same bytes as the installed dkimpy's own."""

from __future__ import annotations

import random
import re
import time
import tracemalloc
from collections.abc import Callable
from typing import cast

import dkim
import dkim.canonicalization

from keys import key_zone, message, rsa_key, sign
from trustmilter import compat
from trustmilter.compat.dkimpy.canonicalization import (
    compress_whitespace,
    strip_trailing_whitespace,
)

Fold = Callable[[bytes], bytes]
# The installed dkimpy's own, captured before anything was installed.
dkimpy_compress = cast(Fold, compat.original("dkim.canonicalization.compress_whitespace"))
dkimpy_strip = cast(Fold, compat.original("dkim.canonicalization.strip_trailing_whitespace"))


def random_texts(count: int) -> list[bytes]:
    rng = random.Random(6376)
    alphabet = [b" ", b"\t", b"a", b"\r\n", b"\r", b"\n", b"  ", b"\t ", b" \t", b" \r\n"]
    texts = [b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))) for _ in range(count)]
    return [
        *texts,
        b"", b" ", b"\t", b"a b", b"a  b", b"a\tb", b"a \t b\r\n \t", b"\t\t\t",
        b" " * 1025, b"a" + b" \t" * 300 + b"\r\n", b"x \r\n\t\r\n  \r\n", b"\r\n \r\n",
    ]


def test_same_bytes_as_dkimpy_for_any_whitespace_mix() -> None:
    for text in random_texts(5000):
        assert compress_whitespace(text) == dkimpy_compress(text), text
        assert strip_trailing_whitespace(text) == dkimpy_strip(text), text
        # The order dkimpy's relaxed body applies them in.
        assert compress_whitespace(strip_trailing_whitespace(text)) == dkimpy_compress(
            dkimpy_strip(text)
        ), text


def test_installed_dkimpy_verifies_and_stays_small() -> None:
    compat.install()
    assert dkim.canonicalization.compress_whitespace is compress_whitespace
    assert dkim.canonicalization.strip_trailing_whitespace is strip_trailing_whitespace
    key = rsa_key(1024)
    # Ordinary text: single spaces between words, the odd double space.
    body = b"Ordinary text of a message body, one word after another.\r\n" * 30000
    body += b"A line with  a double space and a\ttab.\r\n" * 100
    raw = sign(message(body=body), key, "example.com")
    txt = "".join(re.findall(r'"([^"]*)"', key_zone(key, "sel", "example.com").split("TXT", 1)[1]))
    tracemalloc.start()
    try:
        assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: txt.encode())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # dkimpy's own folding peaked at 34 times the message (its line split
    # alone costs 4); with ours the whole verification stays under 6.
    assert peak < 6 * len(raw), peak / len(raw)


def test_a_long_run_of_blanks_costs_linear_time() -> None:
    """dkimpy's pattern retried from every byte of a run of blanks not followed
    by CRLF: a 160 KB run took 24 s with the GIL held, and a sender chooses
    the body. Ours starts a match only where a run starts. (A guard against
    that regression, not a speed measurement: the bound is 1000 times the
    time it takes.)"""
    body = b" " * 1_000_000 + b"x \r\n" + b"\t" * 1_000_000 + b"y\r\n"
    started = time.monotonic()
    stripped = strip_trailing_whitespace(body)
    assert time.monotonic() - started < 5
    assert stripped == b" " * 1_000_000 + b"x\r\n" + b"\t" * 1_000_000 + b"y\r\n"
