"""Our own mail, recognisable: a keyed token in its header and keyed digests to store.

Three keyed values, all HMAC-SHA256 (RFC 2104) under one site key, each
with a label of its own so that no value can stand in for another:

- the **token** stamped on the mail we send (``X-Trustmilter-Token: 1.<22
  characters>``): a MAC over its Message-ID and Date. A bounce that returns
  our message's header carries it, and only we can have made it, so a
  bounce with a valid token is a bounce of our mail, not backscatter or a
  forgery naming one of our addresses. Truncated to 128 bits: half the
  hash, the least RFC 2104 §5 recommends, and far beyond reach of a forger
  who must send each guess through our MX (2^-128 per try); short enough
  for one header line. Prefixed by a version ("1."), so another scheme can
  follow while mail stamped by this one is still coming back;
- the **digest** of a Message-ID, what the state store keeps of a message
  we sent (128 bits, hex): a reply's In-Reply-To or References is looked
  up by it, and a copy of the store does not tell which Message-IDs were
  ours (a plain hash would, to anyone who holds a candidate ID);
- the digest of a sender address: addresses are easy to guess, so only a
  keyed hash hides them.

The Date is compared as the instant it names (RFC 5322 §3.3), so a
returned header refolded or re-spaced by the reporting MTA still verifies;
a Date nothing can parse is compared as its text with blanks collapsed.
Message-IDs are compared as written between the angle brackets (RFC 5322
§3.6.4), blanks dropped: a folded References line must not change them.

The key comes from a file the operator creates (`load_key`); everything
else here is pure, linear in its input and never raises for what a sender
wrote. Verification is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
from collections import deque
from datetime import UTC
from email.utils import parsedate_to_datetime

# A key shorter than this is refused: 256 bits, the size of the hash's block
# of security (RFC 2104 §3 asks for at least the hash's output length).
KEY_MIN_BYTES = 32
KEY_MAX_BYTES = 4096  # a key file larger than this is not a key file
TOKEN_VERSION = "1"
TOKEN_BYTES = 16  # 128 bits: see the module docstring
DIGEST_BYTES = 16
_TOKEN_LABEL = b"trustmilter token v1\x00"
_MESSAGE_LABEL = b"trustmilter message-id v1\x00"
_SENDER_LABEL = b"trustmilter sender v1\x00"
# RFC 5322 §3.6.4 msg-id: "<" id-left "@" id-right ">"; any run without
# brackets or blanks between brackets is taken (obsolete forms too), and at
# most 998 characters, the line limit of §2.1.1.
_MSG_ID = re.compile(r"<([^<>\s]{1,998})>")
_BLANKS = re.compile(r"\s+")
MAX_DATE = 998  # characters of a Date field read at most (RFC 5322 §2.1.1's line)
_TOKEN_TEXT = re.compile(r"([0-9A-Za-z]{1,8})\.([A-Za-z0-9_-]{1,64})")


class KeyFileError(ValueError):
    """The key file cannot serve: missing, unreadable, too short or too open."""


def load_key(path: str) -> bytes:
    """The site key: the file's bytes, surrounding blanks stripped.

    `openssl rand -hex 32 > FILE` or `head -c 32 /dev/urandom > FILE` make
    one. The file must be the daemon's alone: readable by others, anyone on
    the host could forge our tokens. Raises KeyFileError (one line).
    """
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(KEY_MAX_BYTES + 1)
    except OSError as error:
        raise KeyFileError(f"{path}: {error.strerror or error}") from error
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"{path}: not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: group or others may read it (mode {mode & 0o777:o}; "
                           "chmod 600, owned by the daemon's user)")
    key = data.strip()
    if len(data) > KEY_MAX_BYTES:
        raise KeyFileError(f"{path}: more than {KEY_MAX_BYTES} bytes: not a key")
    if len(key) < KEY_MIN_BYTES:
        raise KeyFileError(f"{path}: {len(key)} bytes, a key needs at least {KEY_MIN_BYTES}")
    return key


# ---- what is compared ----------------------------------------------------------


def message_id(value: str | None) -> str | None:
    """The first msg-id of a Message-ID field, without brackets; None if there is none."""
    if not value:
        return None
    match = _MSG_ID.search(value)
    return match.group(1) if match else None


def referenced_ids(in_reply_to: str | None, references: str | None, limit: int) -> tuple[str, ...]:
    """The msg-ids a reply names, at most `limit`, the likeliest first.

    In-Reply-To (RFC 5322 §3.6.4: the parent(s)) first, then References
    from its end: the latest messages of the thread, where the one we sent
    and the reply answers usually stands. One pass over each field, at
    most `limit` ids kept, whatever their length (a hostile References of
    a million ids costs one linear scan).
    """
    if limit <= 0:
        return ()
    found: dict[str, None] = {}
    for match in _MSG_ID.finditer(in_reply_to or ""):
        found.setdefault(match.group(1))
        if len(found) >= limit:
            return tuple(found)
    latest: deque[str] = deque(maxlen=limit)
    for match in _MSG_ID.finditer(references or ""):
        latest.append(match.group(1))
    for ident in reversed(latest):
        found.setdefault(ident)
        if len(found) >= limit:
            break
    return tuple(found)


def date_instant(value: str | None) -> str:
    """What of a Date field the token covers: the instant (epoch seconds) it names,
    else its text with blanks collapsed ('' for none)."""
    text = _BLANKS.sub(" ", (value or "")[:MAX_DATE]).strip()
    if not text:
        return ""
    try:
        parsed = parsedate_to_datetime(text)
        if parsed.tzinfo is None:  # RFC 5322 §3.3 "-0000": UTC, the origin's zone unknown
            parsed = parsed.replace(tzinfo=UTC)
        return str(int(parsed.timestamp()))
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return text


# ---- the keyed values ------------------------------------------------------------


def _mac(key: bytes, label: bytes, *parts: str) -> bytes:
    message = label + b"\x00".join(p.encode("utf-8", "surrogateescape") for p in parts)
    return hmac.new(key, message, hashlib.sha256).digest()


def make_token(key: bytes, ident: str, date: str | None) -> str:
    """The header value for a message with Message-ID `ident` (no brackets) and Date `date`."""
    mac = _mac(key, _TOKEN_LABEL, ident, date_instant(date))[:TOKEN_BYTES]
    return f"{TOKEN_VERSION}.{base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')}"


def token_matches(key: bytes, value: str, ident: str, date: str | None) -> bool:
    """Whether `value` (a token header's value) is ours for this Message-ID and Date.

    Constant-time in what is compared; any malformed value is simply False.
    """
    match = _TOKEN_TEXT.fullmatch(value.strip())
    if match is None or match.group(1) != TOKEN_VERSION:
        return False
    expected = make_token(key, ident, date)
    return hmac.compare_digest(expected.encode("ascii"), match.group(0).encode("ascii"))


def message_digest(key: bytes, ident: str) -> str:
    """What the store keeps of a Message-ID (no brackets): 32 hex digits."""
    return _mac(key, _MESSAGE_LABEL, ident)[:DIGEST_BYTES].hex()


def sender_digest(key: bytes, address: str) -> str:
    """What the store keeps of a sender address (case folded): 32 hex digits; '' for ''."""
    folded = address.strip().lower()
    return _mac(key, _SENDER_LABEL, folded)[:DIGEST_BYTES].hex() if folded else ""
