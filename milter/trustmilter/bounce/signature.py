"""Our DKIM signature on the copy a bounce returns: the returned copy, and what verifies.

A report returns the message it could not deliver (RFC 3464 §2: a
message/rfc822 part) or only its header (RFC 6522 §4: text/rfc822-headers,
Postfix's choice above its bounce_size_limit). What verifies of our
DKIM signature on it (RFC 6376):

- the header signature (b=): it signs the header fields named in h= and
  the DKIM-Signature field itself with its bh= (§3.7), so it verifies
  without the body. Reporters keep the header as it was (a copy refolded
  by the reporter fails under simple canonicalization, and relaxed, the
  usual choice, is untouched by refolding). Verified, it proves the
  returned header is one we signed: that is the mark;
- the body hash (bh=): only where the whole body came back unchanged.
  Real reporters cut the copy (Postfix above bounce_size_limit, Exchange
  and many others), or re-encode it (8bit to quoted-printable), so it is
  reported, not required.

Only signatures whose d= is one of our domains are verified, at most
`MAX_SIGNATURES`, each with one key lookup through the resolver, with the
DKIM check's own precheck (RFC 8301: no rsa-sha1, keys of 1024 bits or
more). The copy is found by a linear walk of the report's parts, at most
`MAX_DEPTH` levels deep; nothing here raises for what a stranger wrote.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dkim
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import InvalidTagValueList, parse_tag_value

from trustmilter.bounce.ours import Mark
from trustmilter.compat.dkimpy import DkimpyLog, Parsed, rfc822_parse, verifier
from trustmilter.i18n import N_, text
from trustmilter.lookup import Resolver
from trustmilter.lookup.shims import DkimDns
from trustmilter.mail.fields import field_value, split_fields
from trustmilter.mail.mime import unbase64

log = logging.getLogger(__name__)

MAX_SIGNATURES = 3  # signatures of our domains verified per returned copy
MAX_FIELDS = 20  # DKIM-Signature fields of the copy read at most, ours or not
MAX_DEPTH = 3  # multipart levels walked to find the returned copy
MAX_PARTS = 50  # parts of one multipart looked into (a report has three)
MIN_KEY_BITS = 1024  # RFC 8301 §3.2
MAX_COPY = 1_000_000  # bytes of a bounce walked (as the reader's READ_LIMIT)
# Parts that return a message whole, and those that return its header only.
_WHOLE = frozenset({"message/rfc822", "message/global"})
_HEADER_ONLY = frozenset({"text/rfc822-headers", "message/rfc822-headers",
                          "message/global-headers"})
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_DKIMPY_LOG = DkimpyLog(log)


@dataclass(frozen=True, slots=True)
class ReturnedCopy:
    """The returned message as the report holds it, line ends CRLF."""

    data: bytes
    headers_only: bool


# ---- finding the copy ------------------------------------------------------------


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(header block, body) of a part; no header when it starts with a blank line."""
    if data.startswith((b"\n", b"\r\n")):
        return b"", data[data.index(b"\n") + 1 :]
    end = _HEADER_END.search(data)
    return (data, b"") if end is None else (data[: end.start()], data[end.end() :])


def _kind(header: bytes) -> tuple[str, str | None, str]:
    """Content type, boundary (None unless multipart) and transfer encoding."""
    fields = split_fields(header.splitlines())
    holder = email.message.Message()
    value = field_value(fields, "Content-Type")
    if value is not None:
        holder["Content-Type"] = value
    content_type = holder.get_content_type()
    boundary = holder.get_boundary() if content_type.startswith("multipart/") else None
    encoding = (field_value(fields, "Content-Transfer-Encoding") or "7bit").strip().lower()
    return content_type, boundary or None, encoding


def _parts(body: bytes, boundary: str) -> Iterator[bytes]:
    """The body parts of a multipart, in order (RFC 2046 §5.1.1): the line end
    before each delimiter belongs to the delimiter."""
    delimiter = re.compile(rb"^--" + re.escape(boundary.encode("utf-8", "surrogateescape"))
                           + rb"(--)?[ \t]*\r?$", re.MULTILINE)
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            end = match.start()
            end -= 2 if body[max(0, end - 2) : end] == b"\r\n" else int(end > start)
            yield body[start:max(start, end)]
        if match.group(1):
            return
        start = match.end() + 1  # past the delimiter's line end
    if start is not None and start < len(body):
        yield body[start:]  # an unclosed multipart: its last part runs to the end


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return unbase64(body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _find(data: bytes, depth: int) -> ReturnedCopy | None:
    header, body = _split(data)
    content_type, boundary, encoding = _kind(header)
    if boundary is not None and depth < MAX_DEPTH:
        for count, part in enumerate(_parts(body, boundary)):
            if count >= MAX_PARTS:
                break
            found = _find(part, depth + 1)
            if found is not None:
                return found
        return None
    if depth == 0 or (content_type not in _WHOLE and content_type not in _HEADER_ONLY):
        return None
    copy = _decoded(body, encoding).lstrip(b"\r\n")
    if not copy.strip():
        return None
    crlf = _LINE_END.sub(b"\r\n", copy)
    if content_type in _HEADER_ONLY:
        # A header alone: the empty body DKIM canonicalizes (RFC 6376 §3.4.3, §3.4.4).
        return ReturnedCopy(_split(crlf)[0].rstrip(b"\r\n") + b"\r\n\r\n", True)
    return ReturnedCopy(crlf, False)


def returned_copy(raw: bytes) -> ReturnedCopy | None:
    """The message (or header) a report returns, from its first returned part; None."""
    try:
        return _find(raw[:MAX_COPY], 0)
    except (ValueError, LookupError, TypeError) as error:  # a stranger's MIME
        log.debug("returned copy not found: %s", error)
        return None


# ---- our signatures on it ---------------------------------------------------------


def _domain(tags: dict[bytes, bytes]) -> str:
    return re.sub(rb"\s+", b"", tags.get(b"d", b"")).decode("ascii", "replace").rstrip(".").lower()


def _ours(domain: str, own_domains: tuple[str, ...]) -> bool:
    owned = (d.strip(".").lower() for d in own_domains)
    return bool(domain) and any(domain == d or domain.endswith("." + d) for d in owned)


# What the signature over the returned header shows of the returned body
# (_body_state), each a whole sentence so that a translator sees it whole.
_ONLY_THE_HEADER = N_("our signature d=%(domain)s s=%(selector)s verifies over the returned "
                      "header; only the header was returned")
_BODY_UNREADABLE = N_("our signature d=%(domain)s s=%(selector)s verifies over the returned "
                      "header; the body hash cannot be read")
_BODY_SIGNED = N_("our signature d=%(domain)s s=%(selector)s verifies over the returned "
                  "header; the returned body is the one signed")
_BODY_CHANGED = N_("our signature d=%(domain)s s=%(selector)s verifies over the returned "
                   "header; the returned body differs from the one signed (cut or re-encoded "
                   "on its way back)")


def _body_state(parsed: Parsed, tags: dict[bytes, bytes], headers_only: bool) -> str:
    """Whether the returned body is the body we signed (bh=, RFC 6376 §3.7): the
    sentence that says so."""
    if headers_only:
        return _ONLY_THE_HEADER
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
        body = policy.canonicalize_body(parsed[1])
        if b"l" in tags:
            body = body[: int(tags[b"l"])]
        signed = base64.b64decode(re.sub(rb"\s+", b"", tags[b"bh"]))
    except (dkim.DKIMException, ValueError, binascii.Error, KeyError):
        return _BODY_UNREADABLE
    if hashlib.sha256(body).digest() == signed:  # both algorithms we verify hash with SHA-256
        return _BODY_SIGNED
    return _BODY_CHANGED


def _verify(copy: ReturnedCopy, parsed: Parsed, index: int, tags: dict[bytes, bytes],
            resolver: Resolver, now: float) -> Mark:
    name = {"domain": _domain(tags),
            "selector": re.sub(rb"\s+", b"", tags.get(b"s", b"")).decode("ascii", "replace")}
    # Imported here: the checks package imports the bounce check, which imports
    # this module, so a module-level import would be a cycle when the command
    # line imports this first.
    from trustmilter.checks.dkim import precheck_signature

    problem = precheck_signature(tags, now)
    if problem is not None:
        # The DKIM check's own reason, as its verdict and the logs give it.
        return Mark("dkim", "claims", text(
            N_("our signature d=%(domain)s s=%(selector)s cannot be verified: %(reason)s"),
            reason=problem.reason, **name))
    dns = DkimDns(resolver)
    signer = verifier(dkim.DKIM, copy.data, parsed, logger=_DKIMPY_LOG, minkey=MIN_KEY_BITS)
    try:
        prepared = signer.verify_headerprep(index)
        if not prepared:
            return Mark("dkim", "claims", text(
                N_("our signature d=%(domain)s s=%(selector)s cannot be read"), **name))
        sig, include_headers, fields = prepared
        # Without bh=, dkimpy verifies b= alone: the signed header fields and the
        # DKIM-Signature field, whose bh= value is among what b= signs.
        header_only = {tag: value for tag, value in sig.items() if tag != b"bh"}
        verified = bool(signer.verify_sig(header_only, include_headers, fields[index], dns))
    except (dkim.DKIMException, ValueError, IndexError, TypeError) as error:
        # dkimpy's words, quoted.
        return Mark("dkim", "claims", text(
            N_("our signature d=%(domain)s s=%(selector)s cannot be verified: %(reason)s"),
            reason=str(error)[:120], **name))
    if dns.temperror:
        return Mark("dkim", "claims", text(
            N_("our signature d=%(domain)s s=%(selector)s: its key could not be looked up"),
            **name))
    if not verified:
        return Mark("dkim", "claims", text(
            N_("our signature d=%(domain)s s=%(selector)s does not verify over the returned "
               "header"), **name))
    return Mark("dkim", "proves", text(_body_state(parsed, tags, copy.headers_only), **name))


def dkim_marks(copy: ReturnedCopy, own_domains: tuple[str, ...], resolver: Resolver,
               now: float | None = None) -> list[Mark]:
    """What our signatures on the returned copy show, the first that proves last;
    [] when it carries none of ours."""
    if not own_domains or b"dkim-signature" not in copy.data[:200_000].lower():
        return []
    try:
        parsed: Parsed = rfc822_parse(copy.data)
    except (dkim.MessageFormatError, IndexError):
        return []
    values = [value for name, value in parsed[0] if name.lower() == b"dkim-signature"]
    marks: list[Mark] = []
    for index, value in enumerate(values[:MAX_FIELDS]):
        try:
            tags = dict(parse_tag_value(value))
        except InvalidTagValueList:
            continue
        if not _ours(_domain(tags), own_domains):
            continue
        mark = _verify(copy, parsed, index, tags, resolver, time.time() if now is None else now)
        marks.append(mark)
        if mark.status == "proves" or len(marks) >= MAX_SIGNATURES:
            break
    return marks
