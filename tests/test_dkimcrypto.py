"""dkimpy's byte/integer conversions and key parsing, replaced: the same answers."""

from __future__ import annotations

import random

import dkim
import dkim.crypto
import pytest

from keys import message, rsa_key, sign
from trustmilter.checks import dkimcrypto

ORIGINAL_INT2STR = dkim.crypto.int2str
ORIGINAL_STR2INT = dkim.crypto.str2int


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
    dkimcrypto._remembered_evaluate_pk.cache_clear()
    first = dkimcrypto.evaluate_pk("sel._domainkey.example.com", txt)
    assert first == dkimcrypto._ORIGINAL_EVALUATE_PK("sel._domainkey.example.com", txt)
    assert first[1:] == (1024, b"rsa", False)
    assert dkimcrypto.evaluate_pk("sel._domainkey.example.com", txt) is first
    assert dkimcrypto._remembered_evaluate_pk.cache_info().hits == 1
    bad = b"v=DKIM1; k=rsa; p=AAAA"
    for _ in range(2):
        with pytest.raises(dkim.KeyFormatError):
            dkimcrypto.evaluate_pk("bad._domainkey.example.com", bad)
    assert dkimcrypto._remembered_evaluate_pk.cache_info().currsize == 1  # failures are not kept


def test_installed_dkimpy_still_verifies_and_rejects() -> None:
    dkimcrypto.install()
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
    dkimcrypto._remembered_evaluate_pk.cache_clear()
    padded = f"v=DKIM1; k=rsa; n={'x' * 3000}; p={rsa_key(1024).public}".encode()
    for _ in range(2):
        assert dkimcrypto.evaluate_pk("big._domainkey.example.com", padded)[1] == 1024
    assert dkimcrypto._remembered_evaluate_pk.cache_info().currsize == 0
    dkimcrypto.evaluate_pk("sel._domainkey.example.com", _key_text(1024))
    assert dkimcrypto._remembered_evaluate_pk.cache_info().currsize == 1
