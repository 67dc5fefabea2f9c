"""dkimpy's header-field work, linear: the same answers as the installed dkimpy's own."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import dkim

from keys import message, rsa_key, seal, sign
from trustmilter import compat
from trustmilter.compat.dkimpy.headers import (
    _DKIMPY_B64,
    RE_BTAG,
    DkimpyRe,
    b64_ok,
    select_headers,
    split_header_list,
    validate_signature_fields,
)

# The installed dkimpy's own, captured before anything was installed.
DKIMPY_BTAG = cast(re.Pattern[bytes], compat.original("dkim.RE_BTAG"))
dkimpy_select_headers = cast(Callable[..., Any], compat.original("dkim.select_headers"))
dkimpy_validate = cast(Callable[..., Any], compat.original("dkim.validate_signature_fields"))
# The b= test as dkimpy's validate_signature_fields writes it inline (its
# fingerprint in the registry pins the literal).
DKIMPY_B64 = re.compile(_DKIMPY_B64)


def random_bytes(rng: random.Random, alphabet: list[bytes], most: int) -> bytes:
    return b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, most)))


def outcome(func: Callable[[], object]) -> object:
    try:
        return ("value", func())
    except Exception as exc:
        return (type(exc), str(exc))


def test_h_split_is_dkimpys_for_any_text() -> None:
    rng = random.Random(6376)
    alphabet = [b" ", b"\t", b"\r", b"\n", b"\x0b", b"\x0c", b":", b"::", b"from", b"a", b" : "]
    for _ in range(6000):
        text = random_bytes(rng, alphabet, 16)
        assert split_header_list(text) == re.split(rb"\s*:\s*", text), text


def test_b64_test_is_dkimpys_for_any_text() -> None:
    rng = random.Random(4648)
    alphabet = [b" ", b"\t", b"\r\n", b"\n", b"A", b"z", b"0", b"+", b"/", b"=", b"==", b"!", b"-"]
    for _ in range(6000):
        text = random_bytes(rng, alphabet, 14)
        assert b64_ok(text) == (DKIMPY_B64.match(text) is not None), text


def test_validate_signature_fields_raises_what_dkimpy_raises() -> None:
    rng = random.Random(8617)
    values = {
        b"v": [b"1", b"2"],
        b"a": [b"rsa-sha256", b"rsa-sha1", b"ed25519-sha256", b"x"],
        b"b": [b"AAAA", b"AA AA", b"AAA=", b"A !", b" \t", b"", b"AAAA\n", b"A=A"],
        b"bh": [b"AAAA", b"AAA", b"!"],
        b"d": [b"example.com", b"a;b"],
        b"h": [b"from", b"from : to"],
        b"s": [b"sel"],
        b"i": [b"1", b"@example.com"],
        b"cv": [b"none", b"pass", b"bad"],
    }
    calls: list[tuple[tuple[bytes, ...] | None, bool]] = [
        (None, False),
        ((b"i", b"a", b"b", b"bh", b"d", b"h", b"s"), True),
        ((b"i", b"a", b"b", b"cv", b"d", b"s"), True),
    ]
    for _ in range(4000):
        sig = {tag: rng.choice(choices) for tag, choices in values.items() if rng.random() < 0.85}
        fields, arc = rng.choice(calls)
        args: tuple[object, ...] = () if fields is None else (list(fields), arc)
        ours = outcome(partial(validate_signature_fields, dict(sig), *args))
        theirs = outcome(partial(dkimpy_validate, dict(sig), *args))
        assert ours == theirs, sig


def test_btag_removal_is_dkimpys_for_any_text() -> None:
    rng = random.Random(1035)
    alphabet = [b" ", b"\t", b"\r\n", b"\n", b"\r", b";", b"b", b"=", b"b=", b"; b=", b" b =",
                b"A", b"+", b"/", b"!", b"x", b"\r\n ", b"bh=AA"]
    for _ in range(8000):
        text = random_bytes(rng, alphabet, 18)
        assert RE_BTAG.sub(rb"\1", text) == DKIMPY_BTAG.sub(rb"\1", text), text


def test_select_headers_is_dkimpys_for_any_header() -> None:
    rng = random.Random(5322)
    names = [b"From", b"from", b"To", b"Subject", b"X-A", b"x-a", b"DKIM-Signature"]
    wanted = [b"from", b"to", b"subject", b"x-a", b"cc", b"dkim-signature"]
    for _ in range(3000):
        headers = [(rng.choice(names), b"v%d" % i) for i in range(rng.randrange(0, 10))]
        include = [rng.choice(wanted) for _ in range(rng.randrange(0, 10))]
        assert select_headers(headers, include) == dkimpy_select_headers(headers, include)


def test_dkimpy_re_passes_other_calls_on() -> None:
    shim = DkimpyRe()
    assert shim.split(rb";", b"a;b") == [b"a", b"b"]
    assert shim.split(rb"\s*:\s*", b"a : b", 1) == [b"a", b"b"]
    assert shim.split(r"\s*:\s*", "a : b") == ["a", "b"]
    assert shim.match(rb"\d+$", b"12") is not None
    assert shim.IGNORECASE is re.IGNORECASE


def test_installed_dkimpy_still_verifies_dkim_and_arc() -> None:
    compat.install()
    assert dkim.select_headers is select_headers and dkim.RE_BTAG is RE_BTAG
    key = rsa_key(1024)
    txt = f"v=DKIM1; k=rsa; p={key.public}".encode()
    raw = sign(message(extra_headers=("X-A: 1", "X-A: 2")), key, "example.com")
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: txt)
    assert not dkim.verify(raw.replace(b"Hello,", b"Howdy"), dnsfunc=lambda n, timeout=5: txt)
    sealed = seal(raw, key, "forwarder.example", "dkim=pass header.d=example.com")
    cv, _sets, _reason = dkim.arc_verify(sealed, dnsfunc=lambda name, timeout=5: txt)
    assert cv == dkim.CV_Pass


def test_worst_inputs_cost_linear_time() -> None:
    """Each of dkimpy's own took seconds on a 100 KB field (h= split 6.5 s, b= test
    and RE_BTAG over 20 s, select_headers 6 s). A guard against that regression, not
    a speed measurement: each bound is about 1000 times what ours takes."""
    blanks = b"from" + b" " * 1_000_000 + b"x"
    started = time.monotonic()
    assert split_header_list(blanks) == [blanks]
    assert not b64_ok(b"A" + b" " * 1_000_000 + b"!")
    folded = b"\r\n " * 300_000 + b"; d=x"
    assert RE_BTAG.sub(rb"\1", b"; b=AAAA" + folded) == b"; b=" + folded
    assert select_headers([(b"x", b"v")] * 20_000, [b"n%d" % i for i in range(20_000)]) == []
    assert time.monotonic() - started < 10
