"""DMARC policy records: the tag grammar of RFC 9989 §4.7-4.8 (and RFC 7489 §6.3).

Pure functions, no DNS. One parser serves both standards: the tags RFC 9989
added (``np``, ``psd``, ``t``) are read always and ignored by the RFC 7489
evaluation; ``pct``, which RFC 9989 removed (Appendix C.5.2, "historic" in
the tag registry of §9.3), is read always and used as RFC 9989 Appendix A.6
allows (see `asks_for_testing`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from trustmilter.lookup import DnsAnswer
from trustmilter.memo import remembered_when

# RFC 9989 §4.8 / RFC 7489 §6.4: dmarc-record = dmarc-version dmarc-sep ...;
# "v" must be the first tag and is case-insensitive, the value "DMARC1" is not
# (%s"DMARC1").
_VERSION = re.compile(r"^[ \t]*[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)")
# §4.7 only needs "at least one syntactically valid URI" for the rua= fallback.
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")

# Records up to this long are remembered (a domain's record serves all its
# mail); a sender can publish far longer ones, parsed each time.
MEMO_RECORD_CHARS = 2048


class Policy(StrEnum):
    """A Domain Owner Assessment Policy (RFC 9989 §4.7 p=/sp=/np=)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    @property
    def milder(self) -> Policy:
        """One level below: what t=y asks for (RFC 9989 §4.7 "t"), and what
        RFC 7489 §6.6.4 applied to messages pct sampling left out."""
        return {Policy.REJECT: Policy.QUARANTINE}.get(self, Policy.NONE)

    @property
    def strictness(self) -> int:
        return (Policy.NONE, Policy.QUARANTINE, Policy.REJECT).index(self)


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed DMARC record. A policy tag that is absent is None; one whose
    value is not a policy is None with its ``*_invalid`` flag set."""

    p: Policy | None
    sp: Policy | None = None
    sp_invalid: bool = False
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    has_rua: bool = False
    p_invalid: bool = False
    np: Policy | None = None
    np_invalid: bool = False
    psd: str = "u"  # RFC 9989 §4.7: y, n, or the default u
    testing: bool | None = None  # t=y / t=n; None when absent or invalid


def is_dmarc_record(txt: str) -> bool:
    """True when a TXT string starts with v=DMARC1; RFC 9989 §4.10 step 2 discards the rest."""
    return bool(_VERSION.match(txt))


def dmarc_txts(answer: DnsAnswer) -> list[str]:
    """The v=DMARC1 records in one TXT answer (strings joined, RFC 9989 §4.5)."""
    texts = [t.decode("utf-8", "replace") for t in answer.txt_strings()]
    return [t for t in texts if is_dmarc_record(t)]


def _policy(value: str) -> Policy | None:
    try:
        return Policy(value.strip().lower())
    except ValueError:
        return None


def _flag(value: str, allowed: str, default: str) -> str:
    value = value.strip().lower()
    return value if len(value) == 1 and value in allowed else default


@remembered_when(lambda txt: len(txt) <= MEMO_RECORD_CHARS)
def parse_record(txt: str) -> Record:
    """Parse a record that `is_dmarc_record`. Unknown tags are ignored and a bad
    optional value falls back to its default (RFC 9989 §4.8); the first of a
    repeated tag counts."""
    tags: dict[str, str] = {}
    for part in txt.split(";")[1:]:
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if sep and name and name not in tags:
            tags[name] = value.strip()

    def policy_tag(name: str) -> tuple[Policy | None, bool]:
        value = _policy(tags[name]) if name in tags else None
        return value, name in tags and value is None

    p, p_invalid = policy_tag("p")
    sp, sp_invalid = policy_tag("sp")
    np, np_invalid = policy_tag("np")
    pct_text = tags.get("pct", "100")
    testing = _flag(tags.get("t", ""), "yn", "")
    rua = [uri.strip() for uri in tags.get("rua", "").split(",") if uri.strip()]
    return Record(
        p=p,
        sp=sp,
        sp_invalid=sp_invalid,
        adkim=_flag(tags.get("adkim", "r"), "rs", "r"),
        aspf=_flag(tags.get("aspf", "r"), "rs", "r"),
        pct=int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100,
        has_rua=any(_URI.match(uri) for uri in rua),
        p_invalid=p_invalid,
        np=np,
        np_invalid=np_invalid,
        psd=_flag(tags.get("psd", "u"), "ynu", "u"),
        testing={"y": True, "n": False}.get(testing),
    )


def usable_rfc9989(record: Record) -> Record | None:
    """The record as RFC 9989 §4.10.1 evaluates it, or None for "no DMARC processing".

    A missing p= reads as p=none (§4.7 "p"). An invalid p=, sp= or np= makes
    the record act as p=none when rua= holds a valid URI, else DMARC does
    not apply (§4.10.1)."""
    if not (record.p_invalid or record.sp_invalid or record.np_invalid):
        return record if record.p is not None else replace(record, p=Policy.NONE)
    if not record.has_rua:
        return None
    return replace(record, p=Policy.NONE, sp=None, np=None,
                   p_invalid=False, sp_invalid=False, np_invalid=False)


def usable_rfc7489(record: Record) -> Record | None:
    """The record as RFC 7489 §6.6.3 step 6 evaluates it, or None (permerror).

    Without a valid p= (or with an invalid sp=) it acts as p=none when rua=
    holds a valid URI; np=, psd= and t= do not exist in RFC 7489."""
    plain = replace(record, np=None, np_invalid=False, psd="u", testing=None)
    if plain.p is not None and not plain.sp_invalid:
        return plain
    if not plain.has_rua:
        return None
    return replace(plain, p=Policy.NONE, sp=None, p_invalid=False, sp_invalid=False)


def asks_for_testing(record: Record) -> bool:
    """RFC 9989 t=y: apply the policy one level milder (§4.7 "t").

    Without a t= tag, a legacy pct=0 counts as t=y: RFC 9989 Appendix A.6
    introduces t=y and t=n as the analogues of pct=0 and pct=100, and pct=0
    under RFC 7489 §6.6.4 meant exactly "one level milder for every
    message". Any other pct value is not read: the tag is removed (Appendix
    C.5.2, "historic" in §9.3) and there is no sampling any more."""
    if record.testing is not None:
        return record.testing
    return record.pct == 0


def requested_policy(record: Record, inherited: bool, author_exists: bool | None) -> Policy | None:
    """Which tag's policy applies (RFC 9989 §4.10.1), or None when that depends
    on whether the Author Domain exists and the DNS did not say.

    The Author Domain's own record gives p=. A record inherited from the
    Organizational or Public Suffix Domain gives sp= for an existing Author
    Domain and np= for a nonexistent one (§3.2.13: NXDOMAIN); an absent np=
    falls back to sp=, then p= (§4.7 "np"), an absent sp= to p=."""
    assert record.p is not None
    if not inherited:
        return record.p
    existing = record.sp or record.p
    nonexistent = record.np or existing
    if author_exists is None and nonexistent is not existing:
        return None
    return nonexistent if author_exists is False else existing
