"""dkimpy's byte/integer conversions and key parsing, replaced: the same answers."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable
from typing import Any, cast

import dkim
import dkim.crypto
import pytest

from keys import message, rsa_key, sign
from trustmilter import compat
from trustmilter.compat.dkimpy import crypto as dkimcrypto

# The installed dkimpy's own, captured before anything was installed.
ORIGINAL_INT2STR = cast(Callable[..., bytearray], compat.original("dkim.crypto.int2str"))
ORIGINAL_STR2INT = cast(Callable[[bytes], int], compat.original("dkim.crypto.str2int"))
ORIGINAL_EVALUATE_PK = cast(Callable[..., Any], compat.original("dkim.evaluate_pk"))


def test_int2str_matches_dkimpy_for_every_length_rule() -> None:
    rng = random.Random(8017)
    numbers = [0, 1, 255, 256, 65535, 2**2048 - 1] + [rng.getrandbits(rng.randrange(1, 4100))
                                                       for _ in range(400)]
    for n in numbers:
        assert dkimcrypto.int2str(n) == ORIGINAL_INT2STR(n), n
        for length in (0, 1, 2, 31, 256, 512):
            # Shorter than the number: dkimpy keeps the low bytes only.
            assert dkimcrypto.int2str(n, length) == ORIGINAL_INT2STR(n, length), (n, length)
    assert isinstance(dkimcrypto.int2str(7), bytearray)


def test_str2int_matches_dkimpy() -> None:
    rng = random.Random(6376)
    for size in (0, 1, 2, 3, 128, 256, 513):
        data = bytes(rng.randrange(256) for _ in range(size))
        assert dkimcrypto.str2int(data) == ORIGINAL_STR2INT(data)
        assert dkimcrypto.str2int(bytearray(data)) == ORIGINAL_STR2INT(data)


def _key_text(bits: int) -> bytes:
    return f"v=DKIM1; k=rsa; p={rsa_key(bits).public}".encode()


def test_key_memo_gives_dkimpy_answer_and_skips_bad_keys() -> None:
    txt = _key_text(1024)
    dkimcrypto.parsed_key.cache_clear()
    first = dkimcrypto.evaluate_pk("sel._domainkey.example.com", txt)
    assert first == ORIGINAL_EVALUATE_PK("sel._domainkey.example.com", txt)
    assert first[1:] == (1024, b"rsa", False)
    assert dkimcrypto.evaluate_pk("sel._domainkey.example.com", txt) is first
    assert dkimcrypto.parsed_key.cache_info().hits == 1
    bad = b"v=DKIM1; k=rsa; p=AAAA"
    for _ in range(2):
        with pytest.raises(dkim.KeyFormatError):
            dkimcrypto.evaluate_pk("bad._domainkey.example.com", bad)
    assert dkimcrypto.parsed_key.cache_info().currsize == 1  # failures are not kept


def test_installed_dkimpy_still_verifies_and_rejects() -> None:
    compat.install()
    assert dkim.crypto.int2str is dkimcrypto.int2str
    assert dkim.crypto.str2int is dkimcrypto.str2int
    assert dkim.evaluate_pk is dkimcrypto.evaluate_pk
    raw = sign(message(body=b"Hello.\r\n"), rsa_key(2048), "example.com")
    txt = _key_text(2048)
    dns = lambda name, timeout=5: txt  # noqa: E731
    assert dkim.verify(raw, dnsfunc=dns)
    assert dkim.verify(raw, dnsfunc=dns)  # the remembered key
    assert not dkim.verify(raw.replace(b"Hello.", b"Hallo."), dnsfunc=dns)


def test_only_ordinary_key_texts_are_remembered() -> None:
    """A sender can publish 64 KB of TXT per selector; remembering thousands
    of those would cost hundreds of MB, so long texts are parsed each time."""
    dkimcrypto.parsed_key.cache_clear()
    padded = f"v=DKIM1; k=rsa; n={'x' * 3000}; p={rsa_key(1024).public}".encode()
    for _ in range(2):
        assert dkimcrypto.evaluate_pk("big._domainkey.example.com", padded)[1] == 1024
    assert dkimcrypto.parsed_key.cache_info().currsize == 0
    dkimcrypto.evaluate_pk("sel._domainkey.example.com", _key_text(1024))
    assert dkimcrypto.parsed_key.cache_info().currsize == 1


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _rsa_key_record(modulus: int, exponent: int) -> bytes:
    """A DKIM key record for any modulus and exponent (SubjectPublicKeyInfo, RFC 3279)."""
    def integer(value: int) -> bytes:
        return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))

    rsa_oid = _der(0x06, bytes.fromhex("2a864886f70d010101"))
    algorithm = _der(0x30, rsa_oid + b"\x05\x00")
    key = _der(0x30, integer(modulus) + integer(exponent))
    info = _der(0x30, algorithm + _der(0x03, b"\x00" + key))
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(info)


def test_rsa_keys_too_large_to_verify_are_refused_at_once() -> None:
    """pow(signature, e, n) with a sender's 64 KB key record (a 200 000-bit modulus
    and exponent) would hold the GIL for hours; 32 768 bits each took 56 s. Such
    keys are refused before any arithmetic. The time bound is a guard against that
    regression, not a speed measurement."""
    compat.install()
    rng = random.Random(8301)
    huge = rng.getrandbits(190_000) | (1 << 189_999) | 1
    largest = rng.getrandbits(8192) | (1 << 8191) | 1
    raw = sign(message(), rsa_key(1024), "example.com")
    started = time.monotonic()
    for record in (_rsa_key_record(huge, huge - 2), _rsa_key_record(huge, 65537),
                   _rsa_key_record(largest, (1 << 64) + 1)):
        with pytest.raises(dkim.KeyFormatError, match="too large"):
            dkimcrypto.evaluate_pk("big._domainkey.example.com", record)
        assert not dkim.verify(raw, dnsfunc=lambda name, timeout=5, r=record: r)
    assert time.monotonic() - started < 10
    # The largest key accepted: an 8192-bit modulus with a 64-bit exponent.
    _pk, bits, ktag, _ = dkimcrypto.evaluate_pk(
        "ok._domainkey.example.com", _rsa_key_record(largest, (1 << 64) - 1))
    assert (bits, ktag) == (8192, b"rsa")


def test_ordinary_rsa_keys_still_verify() -> None:
    compat.install()
    for bits in (1024, 2048, 4096):
        key = rsa_key(bits)
        txt = f"v=DKIM1; k=rsa; p={key.public}".encode()
        raw = sign(message(), key, "example.com")
        assert dkim.verify(raw, dnsfunc=lambda name, timeout=5, t=txt: t)
