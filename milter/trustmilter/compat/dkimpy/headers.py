"""dkimpy's header-side work in linear time: the same answers, no backtracking.

Four places in dkimpy 1.1 are quadratic (or worse) in text a sender writes
into a DKIM-Signature or ARC header field, and hold the GIL while they run
(measured on a 100 KB field, Postfix's header_size_limit):

- ``re.split(rb"\\s*:\\s*", h)`` splits the h= tag: the engine retries the
  pattern from every byte of a run of blanks that no colon follows
  (a 100 KB run: 6.5 s);
- ``validate_signature_fields`` tests b= with ``[\\s0-9A-Za-z+/]+[\\s=]*$``:
  both parts match blanks, so a run of them before a bad byte is split
  every possible way (10 KB: 0.2 s, 100 KB: over 20 s);
- ``RE_BTAG`` (b= emptied before the header hash) nests its folding
  whitespace ``(?:(?:\\s*\\r?\\n)?\\s+)?`` inside a repetition: a run of
  folded blank lines is split every way at each (10 KB: 0.3 s);
- ``select_headers`` scans the whole header from the bottom for every name
  of h= it cannot find (10 000 fields and 10 KB of h= names: 0.6 s).

The registry (compat/dkimpy/__init__.py) points dkimpy at the versions
here: the h= split goes through `DkimpyRe` (dkimpy's view of the `re`
module: every other call is passed on untouched), the other three replace
dkimpy's module globals by name. Each gives the same value (or raises the
same exception) as dkimpy's own for every input: the tests
(tests/test_compat_dkimheaders.py) compare them with the installed
originals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import dkim

# dkimpy's h= separator, as it passes it to re.split.
H_SEPARATOR = rb"\s*:\s*"
# dkimpy's b= test, as it passes it to re.match.
_DKIMPY_B64 = rb"[\s0-9A-Za-z+/]+[\s=]*$"
# The same language with one way to match it: "[\s b64]+ [\s=]*" is "[\s b64]+"
# optionally followed by "=" and then "[\s=]*" (blanks before the first "=" can
# go to the first part). The first part stops where the second must start.
_B64 = re.compile(rb"[\s0-9A-Za-z+/]+(?:=[\s=]*)?$")


def _no_validate(sig: Any, *args: Any, **kwargs: Any) -> None:
    """Stands in for a dkimpy without validate_signature_fields (the registry
    reports it and never installs the version here)."""
    raise dkim.ValidationError("this dkimpy has no validate_signature_fields")


# dkimpy's own, read before anything is installed.
_ORIGINAL_VALIDATE = getattr(dkim, "validate_signature_fields", _no_validate)
# dkimpy's RE_BTAG with its FWS, (?:(?:\s*\r?\n)?\s+)?, written as the \s* it
# matches (any run of blanks, line ends included): each run is then taken
# whole, once, instead of being split at every line end it holds.
RE_BTAG = re.compile(rb"([;\s]b\s*=)(?:\s*[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")


def split_header_list(value: bytes) -> list[bytes]:
    """``re.split(rb"\\s*:\\s*", value)``: the pieces between colons, without the
    blanks next to each colon (blanks at either end of `value` stay)."""
    pieces = value.split(b":")
    if len(pieces) == 1:
        return pieces
    # bytes.strip() strips exactly the bytes \s matches in a bytes pattern.
    return [pieces[0].rstrip(), *(p.strip() for p in pieces[1:-1]), pieces[-1].lstrip()]


def b64_ok(value: bytes) -> bool:
    """Whether dkimpy's b= test ``re.match(_DKIMPY_B64, value)`` would match."""
    return _B64.match(value) is not None


class DkimpyRe:
    """The `re` module for dkimpy's code: its h= split is answered by
    `split_header_list`, everything else goes to `re` itself."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def split(pattern: Any, string: Any, maxsplit: int = 0, flags: int = 0) -> list[Any]:
        if pattern == H_SEPARATOR and not maxsplit and not flags and isinstance(string, bytes):
            return split_header_list(string)
        return re.split(pattern, string, maxsplit=maxsplit, flags=flags)


def validate_signature_fields(
    sig: Any, mandatory_fields: Sequence[bytes] | None = None, arc: bool = False
) -> None:
    """dkimpy's validate_signature_fields, with its b= test done by `b64_ok`.

    dkimpy checks the mandatory tags and a= first, then b= (twice: its bh=
    branch tests b= again). When those first checks pass and b= fails ours,
    this raises what dkimpy would; otherwise dkimpy runs, and its b= test,
    now bound to match, is linear.
    """
    fields = (
        [b"v", b"a", b"b", b"bh", b"d", b"h", b"s"] if mandatory_fields is None
        else mandatory_fields
    )
    hashes = dkim.ARC_HASH_ALGORITHMS if arc else dkim.HASH_ALGORITHMS
    if (
        all(field in sig for field in fields)
        and not (b"a" in sig and sig[b"a"] not in hashes)
        and b"b" in sig
        and not b64_ok(sig[b"b"])
    ):
        raise dkim.ValidationError(f"b= value is not valid base64 ({sig[b'b']!s})")
    if mandatory_fields is None:
        _ORIGINAL_VALIDATE(sig, arc=arc)
    else:
        _ORIGINAL_VALIDATE(sig, mandatory_fields, arc)


def select_headers(
    headers: Sequence[tuple[bytes, bytes]], include_headers: Sequence[bytes]
) -> list[tuple[bytes, bytes]]:
    """dkimpy's select_headers: for each name of h=, the next field of that name
    from the bottom up (RFC 6376 §5.4.2), each field at most once.

    dkimpy scans the header from the last field taken for every name; this
    lists each name's fields, bottom first, once.
    """
    fields: dict[bytes, list[int]] = {}
    for index in range(len(headers) - 1, -1, -1):
        fields.setdefault(headers[index][0].lower(), []).append(index)
    taken: dict[bytes, int] = {}
    selected = []
    for name in include_headers:
        assert name == name.lower()  # as dkimpy asserts
        found = fields.get(name, ())
        count = taken.get(name, 0)
        if count < len(found):
            selected.append(headers[found[count]])
            taken[name] = count + 1
    return selected
