"""Our split of a message for dkimpy: the same value (or error) as dkim.rfc822_parse."""

from __future__ import annotations

import random
import time

import dkim

from trustmilter.compat.dkimpy.parse import rfc822_parse


def _outcome(parse, raw: bytes) -> object:  # type: ignore[no-untyped-def]
    try:
        return parse(raw)
    except Exception as exc:
        return (type(exc), str(exc))


def test_same_split_as_dkimpy_for_any_line_end_mix() -> None:
    rng = random.Random(5322)
    pieces = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"From: a@example.com", b"Subject: x",
              b" folded", b"\tfolded", b"body text", b"From someone", b"bad line", b"X:", b""]
    samples = [b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 14)))
               for _ in range(6000)]
    samples += [
        b"", b"\r\n", b"\n", b"\r\n\r\n", b"From: a\r\n", b"From: a\r\n\r\n",
        b"From: a\r\n\r\nbody\r\n", b"From: a\n\nbody\nmore\r\n", b"From: a\r\n\nbody\n\r\n",
        b"From: a\n\r\nx\r\r\ny\n", b"\r\nbody only\n", b"\nbody\r\n", b" leading fold\r\n\r\nx",
    ]
    for raw in samples:
        assert _outcome(rfc822_parse, raw) == _outcome(dkim.rfc822_parse, raw), raw


def test_crlf_body_is_not_copied() -> None:
    body = b"line one\r\n" * 1000
    raw = b"From: a@example.com\r\nSubject: s\r\n\r\n" + body
    fields, parsed_body = rfc822_parse(raw)
    assert fields == [[b"From", b" a@example.com\r\n"], [b"Subject", b" s\r\n"]]
    assert parsed_body == body


def test_a_field_folded_over_many_lines_costs_linear_time() -> None:
    """dkimpy appends each folded line to the value so far: a 1 MB field took 3 s.
    A guard against that regression, not a speed measurement (about 1000 times
    what the split takes)."""
    raw = b"From: a@example.com\r\nX-A: a" + b"\r\n a" * 500_000 + b"\r\n\r\nbody\r\n"
    started = time.monotonic()
    fields, body = rfc822_parse(raw)
    assert time.monotonic() - started < 5
    assert fields[1] == [b"X-A", b" a" + b"\r\n a" * 500_000 + b"\r\n"]
    assert body == b"body\r\n"
