"""Our MIME parameter split: the same list as this Python's standard library, for any field."""

from __future__ import annotations

import email.message
import random
import time
from collections.abc import Callable
from typing import cast

from trustmilter import compat
from trustmilter.checks.automation import report_type
from trustmilter.compat.stdlib_email import parseparam

# This Python's own, captured before anything was installed.
stdlib_parseparam = cast(Callable[[object], list[str]],
                         compat.original("email.message._parseparam"))


def test_same_parameters_as_the_stdlib_for_any_field() -> None:
    rng = random.Random(2045)
    alphabet = [";", '"', "\\", '\\"', "=", "a", "B", " ", "\t", "b=c", '="x;y"', ";;", "*0*="]
    for _ in range(8000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
        assert parseparam(text) == stdlib_parseparam(text), text


def test_same_parameters_as_this_pythons_stdlib() -> None:
    rng = random.Random(2231)
    alphabet = [";", '"', "\\", "=", "a", " ", "x=y", '"a;b"']
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 14)))
        assert parseparam(text) == stdlib_parseparam(text), text


def test_installed_parser_reads_parameters() -> None:
    compat.install()
    msg = email.message.Message()
    msg["Content-Type"] = 'multipart/report; Report-Type="delivery-status"; boundary="a;b"'
    assert msg.get_param("report-type") == "delivery-status"
    assert msg.get_boundary() == "a;b"
    assert msg.get_params() == [("multipart/report", ""), ("report-type", "delivery-status"),
                                ("boundary", "a;b")]


def test_an_unclosed_quote_costs_linear_time() -> None:
    """The stdlib re-counted quotes at every ';' of an unclosed quoted string: a
    100 KB Content-Type took 5 s. A guard against that regression, not a speed
    measurement: the bound is about 1000 times what ours takes."""
    compat.install()
    field = 'multipart/report; a="' + ";" * 1_000_000
    started = time.monotonic()
    assert report_type(field) == ""
    assert len(parseparam(field + ";a=b" * 100_000)) == 2
    assert time.monotonic() - started < 10
