"""The benchmark corpus: realistic messages and the DNS zone that vouches for them.

`make_corpus(seed, ...)` builds, the same way for the same arguments, a
set of sender domains (``d17.example.net``...), each with a mail server in
198.51.100.0/24 or 203.0.113.0/24 whose PTR and A agree, an SPF record, a
DMARC record and a DKIM key, and messages of 2 KB to 100 KB from them
(log-uniform sizes; larger ones are MIME multipart with an attachment).
The mix, by design:

- signed: DKIM-signed by the From domain (rsa-sha256, relaxed/relaxed),
  SPF pass, aligned: the common case of legitimate bulk and person mail;
- unsigned: SPF pass and aligned only;
- forged: a From domain that publishes DMARC, sent from an address its SPF
  does not list and that has no PTR (DMARC fail, iprev fail);
- nxdomain: an envelope sender whose domain does not exist, which
  trustmilter decides at RCPT TO (the cheap early path).

Only the random choices are seeded: the DKIM keys are new RSA keys each
run (made with `cryptography`; RSA generation cannot be seeded), so
signatures differ between runs but which messages are signed does not.
Nothing is written to disk. Raw messages use CRLF line ends and are ASCII,
as the milter protocol client expects.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import random
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CRLF = b"\r\n"
NETWORKS = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/24"))
TLDS = ("com", "net", "org")
RECIPIENT_DOMAIN = "rcpt.example.org"
PROVIDER_SPF = "spf.provider.example.net"  # an include: target some domains use
MIN_SIZE, MAX_SIZE = 2 * 1024, 100 * 1024
KIND_WEIGHTS = (("signed", 55), ("unsigned", 30), ("forged", 10), ("nxdomain", 5))
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                  b"content-type"]
TXT_STRING_MAX = 255  # RFC 1035 §3.3.14: one character-string is at most 255 octets
_WORDS = (
    "account", "invoice", "meeting", "schedule", "report", "quarterly", "update", "please",
    "review", "attached", "document", "thanks", "regards", "team", "project", "delivery",
    "order", "shipment", "tracking", "password", "reset", "security", "notice",
    "newsletter", "offer", "subscription", "renewal", "confirm", "details", "support",
    "ticket", "request", "customer", "service", "weekly", "summary", "agenda", "minutes",
    "budget",
)


@dataclass(frozen=True, slots=True)
class SenderDomain:
    """One sending organisation: its domain, its mail server and its DKIM selector."""

    name: str
    ip: str
    host: str  # the server's name: PTR of `ip`, A back to it, its HELO
    selector: str
    key_index: int
    dmarc_policy: str


@dataclass(frozen=True, slots=True)
class BenchMessage:
    """One SMTP transaction as the MTA would present it to a milter."""

    kind: str  # signed, unsigned, forged, nxdomain
    client_ip: str
    client_name: str  # Postfix's {client_name}: the verified PTR name, or "unknown"
    helo: str
    mail_from: str
    rcpts: tuple[str, ...]
    raw: bytes  # the message as received: headers, blank line, body; CRLF


@dataclass(frozen=True, slots=True)
class Corpus:
    messages: tuple[BenchMessage, ...]
    zone: str  # fixture text for trustmilter.testing.dnsserver.DnsTestServer

    def kinds(self) -> dict[str, int]:
        """Messages per kind, for the report."""
        counts: dict[str, int] = {}
        for message in self.messages:
            counts[message.kind] = counts.get(message.kind, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class RsaKeyPair:
    private_pem: bytes
    public_b64: str


def make_rsa_key(bits: int) -> RsaKeyPair:
    """A new RSA key pair: PEM private half for dkimpy, base64 DER public half for p=
    (also the test suite's key maker)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RsaKeyPair(pem, base64.b64encode(der).decode("ascii"))


def _txt(text: str) -> str:
    """`text` as quoted character-strings of at most 255 octets each."""
    chunks = [text[i : i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def _reverse(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def _domains(count: int, rng: random.Random) -> list[SenderDomain]:
    """`count` domains, alternating between the two test networks."""
    domains = []
    per_network = math.ceil(count / len(NETWORKS))
    if per_network > 250:
        raise ValueError("at most 500 sender domains (two /24 networks, one IP each)")
    for index in range(count):
        network = NETWORKS[index % len(NETWORKS)]
        ip = str(network[1 + index // len(NETWORKS)])
        name = f"d{index}.example.{TLDS[index % len(TLDS)]}"
        policy = rng.choices(("none", "quarantine", "reject"), weights=(40, 30, 30))[0]
        domains.append(SenderDomain(name, ip, f"mail.{name}", f"s{index % 7}", index, policy))
    return domains


def _domain_zone(domain: SenderDomain, key: RsaKeyPair, index: int) -> list[str]:
    """The records a well-run sending domain publishes."""
    d, host = domain.name, domain.host
    # Some SPF records are a flat ip4:, others need an a/mx or include: lookup,
    # as real ones do (RFC 7208 §5): the checks' DNS work varies per domain.
    spf = (
        f"v=spf1 ip4:{domain.ip} -all",
        f"v=spf1 a:{host} mx ~all",
        f"v=spf1 include:{PROVIDER_SPF} ip4:{domain.ip} -all",
    )[index % 3]
    dmarc = f"v=DMARC1; p={domain.dmarc_policy}; rua=mailto:dmarc-reports@{d}"
    dkim_record = f"v=DKIM1; k=rsa; p={key.public_b64}"
    return [
        f"{d}. 3600 IN A {domain.ip}",
        f"{d}. 3600 IN MX 10 {host}.",
        f"{d}. 3600 IN TXT {_txt(spf)}",
        f"{host}. 3600 IN A {domain.ip}",
        f"{_reverse(domain.ip)} 3600 IN PTR {host}.",
        f"_dmarc.{d}. 3600 IN TXT {_txt(dmarc)}",
        f"{domain.selector}._domainkey.{d}. 3600 IN TXT {_txt(dkim_record)}",
    ]


def _common_zone() -> list[str]:
    return [
        f"{PROVIDER_SPF}. 3600 IN TXT \"v=spf1 ip4:192.0.2.0/24 ~all\"",
        f"{RECIPIENT_DOMAIN}. 3600 IN MX 10 mx.{RECIPIENT_DOMAIN}.",
        f"mx.{RECIPIENT_DOMAIN}. 3600 IN A 192.0.2.25",
    ]


def _text(rng: random.Random, size: int, link_domain: str) -> str:
    """Plain prose of about `size` characters, wrapped at 72, with a link or two."""
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        if rng.random() < 0.01:
            word = f"https://www.{link_domain}/p/{rng.randrange(10**6)}"
        words.append(word)
        length += len(word) + 1
    return textwrap.fill(" ".join(words), width=72)


def _body(rng: random.Random, size: int, domain: str) -> tuple[list[str], bytes]:
    """(MIME headers, body) of about `size` bytes."""
    if size < 8 * 1024:
        text = _text(rng, size, domain)
        return (["Content-Type: text/plain; charset=us-ascii"],
                text.replace("\n", "\r\n").encode("ascii") + CRLF)
    boundary = f"=_bench_{rng.randrange(16**12):012x}"
    text = _text(rng, 1500, domain)
    attachment = base64.encodebytes(rng.randbytes(int((size - 2000) * 3 / 4))).decode("ascii")
    parts = [
        "This is a multi-part message in MIME format.",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        text,
        f"--{boundary}",
        "Content-Type: application/pdf; name=\"report.pdf\"",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename=\"report.pdf\"",
        "",
        attachment.rstrip("\n"),
        f"--{boundary}--",
        "",
    ]
    body = "\n".join(parts).replace("\n", "\r\n")
    return ([f"Content-Type: multipart/mixed; boundary=\"{boundary}\""], body.encode("ascii"))


def _size(rng: random.Random) -> int:
    """Log-uniform between 2 KB and 100 KB: many small messages, some large."""
    return int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))


def _message(rng: random.Random, index: int, kind: str, domain: SenderDomain,
             keys: list[RsaKeyPair], when: datetime) -> BenchMessage:
    local = rng.choice(("alice", "bob", "billing", "news", "support", "noreply"))
    rcpts = tuple(f"user{rng.randrange(500)}@{RECIPIENT_DOMAIN}"
                  for _ in range(rng.choice((1, 1, 1, 2, 3))))
    client_ip, client_name, helo = domain.ip, domain.host, domain.host
    mail_from = f"{local}@{domain.name}"
    if kind == "forged":
        # An address in the test range that no sender's SPF lists and with no PTR.
        client_ip = str(NETWORKS[index % 2][251 + index % 4])
        client_name, helo = "unknown", f"[{client_ip}]"
        mail_from = f"{local}@{domain.name}"
    elif kind == "nxdomain":
        mail_from = f"{local}@gone{index}.example.net"
    mime_headers, body = _body(rng, _size(rng), domain.name)
    headers = [
        # Folded, as real Received: headers are (the client must send it as one value).
        f"Received: from {helo} ({client_name} [{client_ip}])\r\n"
        f"\tby {domain.host} with ESMTPS id {rng.randrange(16**10):010X};\r\n"
        f"\t{format_datetime(when)}",
        f"From: \"{local.title()}\" <{local}@{domain.name}>",
        f"To: <{rcpts[0]}>",
        f"Subject: {' '.join(rng.choice(_WORDS) for _ in range(5))}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: <{index}.{rng.randrange(16**8):08x}@{domain.name}>",
        "MIME-Version: 1.0",
        *mime_headers,
    ]
    if rng.random() < 0.3:
        headers.append(f"List-Unsubscribe: <https://www.{domain.name}/unsubscribe>")
    raw = "\r\n".join(headers).encode("ascii") + CRLF + CRLF + body
    if kind == "signed":
        signature = dkim.sign(
            raw,
            domain.selector.encode(),
            domain.name.encode(),
            keys[domain.key_index % len(keys)].private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=SIGNED_HEADERS,
        )
        raw = signature + raw
    return BenchMessage(kind, client_ip, client_name, helo, mail_from, rcpts, raw)


def make_corpus(seed: int = 1, messages: int = 300, domains: int = 200,
                keys: int = 4, key_bits: int = 2048) -> Corpus:
    """The corpus for `seed`; raises ValueError for impossible sizes."""
    if messages < 1 or domains < 1 or keys < 1:
        raise ValueError("messages, domains and keys must be at least 1")
    rng = random.Random(seed)
    key_pairs = [make_rsa_key(key_bits) for _ in range(keys)]
    senders = _domains(domains, rng)
    zone = _common_zone()
    for index, domain in enumerate(senders):
        zone.extend(_domain_zone(domain, key_pairs[domain.key_index % keys], index))
    start = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    kinds = [k for k, _ in KIND_WEIGHTS]
    weights = [w for _, w in KIND_WEIGHTS]
    corpus = []
    for index in range(messages):
        kind = rng.choices(kinds, weights=weights)[0]
        domain = senders[rng.randrange(len(senders))]
        when = start + timedelta(seconds=37 * index)
        corpus.append(_message(rng, index, kind, domain, key_pairs, when))
    return Corpus(tuple(corpus), "\n".join(zone) + "\n")
