"""DKIM and ARC test keys, generated in the test run, and signing helpers.

Keys are made with `cryptography` (RSA) and PyNaCl (Ed25519, RFC 8463),
cached for the session because RSA generation is slow; nothing is written
to disk. `key_zone()` renders the public half as a zone-fixture TXT record,
split into 255-octet character-strings (RFC 6376 §3.6.2.2) so large keys
need TCP. `sign()` and `seal()` call dkimpy exactly as a real signer or
forwarder would.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import dkim
import nacl.encoding
import nacl.signing

from trustmilter.bench.corpus import make_rsa_key

CRLF = b"\r\n"


@dataclass(frozen=True)
class TestKey:
    """A key pair as dkimpy wants the private half and DNS the public half."""

    private: bytes  # PEM (RSA) or base64 seed (Ed25519), dkimpy's privkey
    public: str  # base64 for p=
    algorithm: bytes  # a= of signatures made with it
    key_type: str  # k= of the key record
    bits: int = 0


@cache
def rsa_key(bits: int = 1024, variant: int = 0) -> TestKey:
    """An RSA key of `bits`; `variant` gives a different key of the same size."""
    del variant  # only part of the cache key
    pair = make_rsa_key(bits)  # the benchmark corpus's key maker
    return TestKey(pair.private_pem, pair.public_b64, b"rsa-sha256", "rsa", bits)


@cache
def ed25519_key() -> TestKey:
    """An Ed25519 key (RFC 8463)."""
    signing = nacl.signing.SigningKey.generate()
    seed = signing.encode(encoder=nacl.encoding.Base64Encoder)
    public = signing.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
    return TestKey(seed, public, b"ed25519-sha256", "ed25519", 256)


def txt_strings(text: str) -> str:
    """`text` as quoted character-strings of at most 255 octets each."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def key_zone(key: TestKey, selector: str, domain: str, public: str | None = None,
             extra: str = "") -> str:
    """The zone-fixture line publishing `key` at <selector>._domainkey.<domain>."""
    p = key.public if public is None else public
    record = f"v=DKIM1; k={key.key_type}; {extra}p={p}"
    return f"{selector}._domainkey.{domain}. 300 IN TXT {txt_strings(record)}\n"


def message(
    from_: str = "Alice <alice@example.com>",
    to: str = "support@example.org",
    subject: str = "Hello",
    body: bytes = b"Hello,\r\nthis is a test message.\r\n",
    extra_headers: tuple[str, ...] = (),
    message_id: str = "<1234@example.com>",
) -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    lines = [
        f"From: {from_}",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Mon, 01 Jan 2024 10:00:00 +0000",
        f"Message-ID: {message_id}",
        *extra_headers,
    ]
    return CRLF.join(line.encode() for line in lines) + CRLF + CRLF + body


def sign(
    raw: bytes,
    key: TestKey,
    domain: str,
    selector: str = "sel",
    canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
    identity: str | None = None,
    algorithm: bytes | None = None,
) -> bytes:
    """`raw` with a DKIM-Signature by `key` prepended."""
    header = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private,
        identity=identity.encode() if identity else None,
        canonicalize=canonicalize,
        signature_algorithm=algorithm or key.algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return header + raw


def seal(raw: bytes, key: TestKey, domain: str, results: str, selector: str = "arc",
         srv_id: str | None = None) -> bytes:
    """`raw` as a forwarder would pass it on: its A-R recorded and an ARC set added.

    `results` is the A-R payload after the authserv-id, e.g.
    ``"dkim=pass header.d=example.com; dmarc=pass header.from=example.com"``.
    """
    srv = srv_id or f"mx.{domain}"
    with_ar = f"Authentication-Results: {srv}; {results}".encode() + CRLF + raw
    arc_set = dkim.arc_sign(
        with_ar,
        selector.encode(),
        domain.encode(),
        key.private,
        srv.encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    assert arc_set, "dkimpy made no ARC set (no A-R with the srv_id?)"
    return b"".join(arc_set) + with_ar
