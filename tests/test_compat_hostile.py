"""Hostile input through the installed libraries, with the compat patches in place.

These fail if a patch goes inert (its name moved upstream, or start-up kept
the original): the same input through dkimpy's own code takes minutes. The
bounds are generous guards, not speed measurements: about ten times what the
patched path takes on a loaded machine, and several times less than what
the unpatched one takes.
"""

from __future__ import annotations

import re
import time

import pytest

from helpers import make_ctx
from keys import key_zone, message, rsa_key, seal, sign
from trustmilter import compat
from trustmilter.checks import arc, dkim
from trustmilter.checks.arc import ArcCheck
from trustmilter.checks.dkim import DkimCheck
from trustmilter.results import Outcome

FORWARDER = "forwarder.example.net"


@pytest.fixture(autouse=True)
def _installed() -> None:
    compat.install()


def test_a_run_of_blanks_in_h_costs_linear_time(dns_server, resolver) -> None:
    """dkimpy splits h= with re.split(rb"\\s*:\\s*"), which retries from every
    blank of a run no colon follows: 30 KB took 1.8 s, so the 100 KB here take
    20 s or more (200 KB through this test with the patches inert: 4 minutes).
    Through DkimCheck, with the key in DNS."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com"))
    signed = sign(message(), key, "example.com")
    hostile = re.sub(rb"message-id", b"message-id" + b" " * 100_000 + b"x", signed, count=1)
    ctx = make_ctx(resolver, ip="192.0.2.4", helo="mail.example.com",
                   mail_from="alice@example.com", message=hostile)
    started = time.monotonic()
    [result] = DkimCheck(dkim.Config()).run(ctx)
    assert time.monotonic() - started < 10
    # h= no longer matches what was signed: the header hash fails, nothing worse.
    assert result.outcome is Outcome.FAIL
    assert result.findings[0].name == "dkim.signature_mismatch"


def test_a_long_folded_field_beside_an_arc_seal_costs_linear_time(dns_server, resolver) -> None:
    """dkimpy's rfc822_parse appends each continuation line to the value so far:
    a 0.8 MB folded field took 4.4 s CPU with an ARC-Seal present (2.4 MB:
    14.7 s in the review's measurement). ArcCheck now splits as DkimCheck does."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com") + key_zone(key, "arc", FORWARDER))
    sealed = seal(sign(message(), key, "example.com"), key, FORWARDER,
                  "dkim=pass header.d=example.com; dmarc=pass header.from=example.com")
    folded = b"X-Folded: a\r\n" + b" b\r\n" * 600_000  # 2.4 MB
    ctx = make_ctx(resolver, ip="198.51.100.25", helo=f"mx.{FORWARDER}",
                   mail_from=f"bounce@{FORWARDER}", message=folded + sealed)
    started = time.monotonic()
    [result] = ArcCheck(arc.Config()).run(ctx)
    assert time.monotonic() - started < 15
    # A field above the seal is not covered by it (RFC 8617 §4.1.3): still valid.
    assert result.outcome is Outcome.PASS


def test_the_same_chain_passes_without_the_field(dns_server, resolver) -> None:
    """The control for the test above: the chain it builds is a valid one."""
    key = rsa_key()
    dns_server.load(key_zone(key, "sel", "example.com") + key_zone(key, "arc", FORWARDER))
    sealed = seal(sign(message(), key, "example.com"), key, FORWARDER, "dkim=pass")
    ctx = make_ctx(resolver, ip="198.51.100.25", helo=f"mx.{FORWARDER}",
                   mail_from=f"bounce@{FORWARDER}", message=sealed)
    [result] = ArcCheck(arc.Config()).run(ctx)
    assert result.outcome is Outcome.PASS
