"""RFC 2047 encoded-words (mail/encoded_words.py): what real mailers send, the
standard library's answer on well-formed text, odd input, and linear time."""

from __future__ import annotations

import base64
import email.header
import random
import time

import pytest

from trustmilter.mail.encoded_words import decode_words


def b_word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def stdlib(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


@pytest.mark.parametrize(("value", "expected"), [
    # Outlook and Thunderbird: UTF-8, B and Q.
    ("=?utf-8?B?QXV0b21hdGljIHJlcGx5OiBoZWxsbw==?=", "Automatic reply: hello"),
    ("=?UTF-8?Q?R=C3=A9ponse_automatique_:_votre_demande?=", "Réponse automatique : votre demande"),
    # ISO-8859-1 Q, as older German clients write it.
    ("=?iso-8859-1?q?Abwesenheitsnotiz:_Ihre_Anfrage_f=FCr_M=E4rz?=",
     "Abwesenheitsnotiz: Ihre Anfrage für März"),
    # ISO-2022-JP B, what Japanese mailers send; and split across two words in
    # the middle of the escape sequence's run (decoded together, RFC 2047 §6.2).
    ("=?ISO-2022-JP?B?GyRCPCtGMDF+RXobKEI=?=: ご連絡", "自動応答: ご連絡"),
    ("=?ISO-2022-JP?B?GyRCPCtGMDF+?= =?ISO-2022-JP?B?RXobKEI=?=", "自動応答"),
    ("=?shift_jis?B?jqmTromek5o=?=", "自動応答"),
    # White space between encoded-words disappears, around them it stays.
    ("Re: =?utf-8?q?a?= =?utf-8?q?b?= and c", "Re: ab and c"),
    ("=?utf-8?q?a?=\r\n =?iso-8859-1?q?b?=", "ab"),
    # RFC 2231 language suffix.
    ("=?UTF-8*en?Q?x?=", "x"),
    ("no words here", "no words here"),
    ("", ""),
])
def test_decodes_what_mailers_send(value, expected):
    assert decode_words(value) == expected


@pytest.mark.parametrize("value", [
    "=?unknown-charset?q?a?=",  # unknown charset
    "=?punycode?q?abc?=",  # refused: quadratic decoder
    "=?base64?q?abc?=",  # no text encoding
    "=?utf-8?b?x?=",  # impossible base64 length
    "=?utf-8?q?caf\u00e9?=",  # non-ASCII inside a word
    "=?utf-8?q?never closed",
    "=?",
])
def test_what_cannot_be_decoded_stays_as_written(value):
    assert decode_words(value) == value


def test_same_as_the_standard_library_on_well_formed_text():
    rng = random.Random(2047)
    words = ["Automatic", "reply:", "Abwesenheitsnotiz", "Réponse", "自動応答", "不在", "é", "x"]
    charsets = ["utf-8", "iso-8859-1", "iso-2022-jp", "shift_jis"]
    for _ in range(3000):
        pieces = []
        for _ in range(rng.randrange(1, 6)):
            word = rng.choice(words)
            charset = rng.choice(charsets)
            try:
                word.encode(charset)
            except UnicodeEncodeError:
                charset = "utf-8"
            pieces.append(b_word(word, charset) if rng.random() < 0.6 or not word.isascii()
                          else word)
        value = " ".join(pieces)
        assert decode_words(value) == stdlib(value), value


def test_any_input_decodes_without_raising():
    rng = random.Random(5322)
    alphabet = "=?qQbB_ \t\r\nutf-8aZ09+/\u00e9\udcff"
    for _ in range(5000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        assert isinstance(decode_words(value), str)


@pytest.mark.parametrize("shape", [
    "=?utf-8?q?a?= ",  # many words: the standard library took 13 s for 1 MB
    "=?utf-8?q?a?= x ",  # words and text: a run per word
    "=?utf-8?q?a?= =?iso-8859-1?q?b?= ",  # charsets alternating
    "=?x?q?",  # broken starts
    "=?",
    "=?zz?q?a?= ",  # unknown charset each time
])
def test_a_megabyte_of_encoded_words_takes_linear_time(shape):
    """A guard, not a measurement: about 1 s per MB now, the bound is far above it."""
    value = shape * (1_000_000 // len(shape))
    started = time.monotonic()
    decode_words(value)
    assert time.monotonic() - started < 30
