"""BATV return paths: a bounce sent to a tagged return path only our MTA wrote.

Bounce Address Tag Validation (draft-levine-smtp-batv, "prvs" for
private signature) tags the envelope sender of the mail we send:
``prvs=KDDDHHHHHH=alice@example.org``, where K is the key number, DDD
the last three digits of the day number (days since 1970) the tag
expires on, and HHHHHH the first three bytes, in hex, of HMAC-SHA1 over
"K DDD alice@example.org" under our secret. Every bounce goes to that
address (RFC 5321 §4.5.5: to the envelope sender), so a bounce to a
valid tag returns mail we sent in the last days; a forger cannot make
one without the secret. This reads the tags as Exim's ``${prvs}``
writes them (the hash over key number, day and address, the secret at
most 64 bytes, Exim's own limit), so Exim's ``${prvscheck}`` and this
agree.

A tag whose hash is not ours contradicts the claim (forged, or made
under a secret we no longer have); an expired one only claims (the
bounce came late, or is a replay). A tag is valid from the day it was
written until its day, at most `MAX_DAYS_AHEAD` days ahead: three digits
of day number wrap every 1000 days, and Exim writes a week ahead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from trustmilter.bounce.ours import Mark
from trustmilter.i18n import N_, text

DAY = 86400
MAX_DAYS_AHEAD = 31
# Exim refuses a longer secret (prvs_hmac_sha1: "if (Ustrlen(key) > 64) return NULL").
MAX_SECRET_BYTES = 64
MAX_ADDRESSES = 10  # addresses looked at per bounce
MAX_ADDRESS = 320  # characters of one address (RFC 5321 §4.5.3.1: 64 + 1 + 255)
# prvs=KDDDHHHHHH=local@domain; the tag's letters in any case.
_TAG = re.compile(r"prvs=([0-9])([0-9]{3})([0-9a-fA-F]{6})=([^@\s]{1,64}@[^@\s]{1,255})",
                  re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Tag:
    """One BATV tag read from an address."""

    key_number: str
    day: int  # the last three digits of the day it expires
    digest: str  # six hex digits, lower case
    address: str  # the address it tags


def tag_of(address: str) -> Tag | None:
    """The BATV tag of `address` (angle brackets allowed), or None."""
    match = _TAG.fullmatch(address.strip().strip("<>")[:MAX_ADDRESS])
    if match is None:
        return None
    return Tag(match.group(1), int(match.group(2)), match.group(3).lower(), match.group(4))


def digest(secret: bytes, key_number: str, day: int, address: str) -> str:
    """HHHHHH for a tag: HMAC-SHA1 over key number, day (three digits) and address."""
    source = f"{key_number}{day:03d}{address}".encode("utf-8", "surrogateescape")
    return hmac.new(secret, source, hashlib.sha1).hexdigest()[:6]


def tagged(secret: bytes, address: str, now: float, days: int = 7, key_number: str = "0") -> str:
    """`address` tagged to expire `days` from `now`, as Exim's ${prvs} does (7 days)."""
    day = (int(now // DAY) + days) % 1000
    return f"prvs={key_number}{day:03d}{digest(secret, key_number, day, address)}={address}"


def return_path_mark(addresses: Iterable[str], secret: bytes, now: float) -> Mark | None:
    """The mark of the first tagged address among `addresses` (the bounce's envelope
    recipients, the returned copy's Return-Path), or None when none is tagged."""
    for count, address in enumerate(addresses):
        if count >= MAX_ADDRESSES:
            break
        tag = tag_of(address)
        if tag is None:
            continue
        expected = digest(secret, tag.key_number, tag.day, tag.address)
        if not hmac.compare_digest(expected, tag.digest):
            return Mark("return-path", "contradicts", text(
                N_("a BATV return path for %(address)s whose tag is not ours"),
                address=tag.address))
        ahead = (tag.day - int(now // DAY)) % 1000
        if ahead > MAX_DAYS_AHEAD:
            return Mark("return-path", "claims", text(
                N_("our BATV return path for %(address)s, expired"), address=tag.address))
        return Mark("return-path", "proves",
                    text(N_("our BATV return path for %(address)s"), address=tag.address))
    return None
