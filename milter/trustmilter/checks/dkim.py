"""DKIM (RFC 6376, RFC 8463) via dkimpy: every signature, each its own result.

For each DKIM-Signature header field, top to bottom, the check reports one
result named ``dkim`` (RFC 6376 §6.1: signatures are verified independently;
RFC 8601 §2.7.1: one resinfo per signature) with the properties header.d,
header.i, header.s, header.a and header.b, and `DkimEvidence` holding d= and
s= for DMARC (read back with `signing_domains`). A message without signatures
gets one result, `none`.

Outcomes, with the finding that says why:
- pass: signature verified with an acceptable key.
- fail: ``dkim.signature_mismatch`` (the header hash does not verify),
  ``dkim.body_hash_mismatch`` (bh= differs, RFC 6376 §6.1.3), or
  ``dkim.key_too_small`` (an RSA key under `min_key_bits`, RFC 8301 §3.2).
- temperror: the key lookup failed transiently (RFC 6376 §6.1.2 TEMPFAIL).
- permerror (RFC 6376 §3.9 PERMFAIL): ``dkim.key_missing`` (NXDOMAIN/NODATA),
  ``dkim.key_revoked`` (empty p=), ``dkim.malformed`` (signature or key
  syntax, missing required tags, From not signed, key unsuitable for a=, an
  RSA key over 8192 bits or with an exponent over 64 bits: compat/dkimpy/crypto.py);
  also rsa-sha1 (RFC 8301 §3.1) and an expired signature, without finding.
- neutral: a signature this verifier cannot process at all, such as an
  unknown a= algorithm (RFC 8601 §2.7.1 "not otherwise able to be
  processed"), and signatures beyond `max_signatures` ("not verified").

dkimpy does the cryptography; its DNS goes through `lookup.shims.DkimDns`
over `ctx.dns`. dkimpy folds key problems into a plain False, so the key is
re-examined here (same TXT text, no second lookup) to name the cause.
Each signature is verified with its own dkimpy object, concurrently when
there are several. Nothing here decides what a failure means for the mail.
"""

from __future__ import annotations

import binascii
import logging
import re
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.compat.dkimpy import DkimpyLog, Parsed, rfc822_parse, verifier
from trustmilter.compat.dkimpy.crypto import KEY_MEMO_TEXT
from trustmilter.lookup import DnsStatus, Resolver
from trustmilter.lookup.shims import DkimDns
from trustmilter.memo import remembered_when
from trustmilter.results import AuthMethod, CheckResult, Finding, Outcome

log = logging.getLogger(__name__)

# RFC 6376 §3.5: the tags a DKIM-Signature must carry.
REQUIRED_TAGS = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
# RFC 6376 §3.3 + RFC 8301 §3.1 (rsa-sha1 is historic) + RFC 8463.
SUPPORTED_ALGORITHMS = {b"rsa-sha256": b"rsa", b"ed25519-sha256": b"ed25519"}
HISTORIC_ALGORITHMS = (b"rsa-sha1",)
# RFC 6008 §4 / RFC 8601 §2.7.1: header.b carries at least 8 characters of b=.
HEADER_B_CHARS = 12
# Signatures verified at once; each thread does one key lookup.
MAX_PARALLEL = 8


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # RSA keys shorter than this fail (RFC 8301 §3.2: at least 1024 bits).
    min_key_bits: int = field(default=1024, metadata={"min": 512, "max": 16384})
    # Signatures beyond this many are not verified (a cost bound), only counted.
    max_signatures: int = field(default=10, metadata={"min": 1, "max": 100})


@dataclass(frozen=True, slots=True)
class DkimEvidence:
    """Whose signature a result is about: d= (lower case, no trailing dot) and s=."""

    domain: str
    selector: str


def signing_domains(results: Iterable[CheckResult], outcome: Outcome) -> list[str]:
    """The d= domains of the signatures with `outcome`, in header order: for
    DMARC, the DKIM-authenticated identifiers (RFC 7489 §3.1.1) when `outcome`
    is pass."""
    return [
        r.evidence.domain for r in results
        if r.outcome is outcome and isinstance(r.evidence, DkimEvidence) and r.evidence.domain
    ]


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outcome decided before (or instead of) the cryptography."""

    outcome: Outcome
    reason: str
    finding: str | None = None



def preflight(config: Config) -> None:
    """Stop start-up if dkimpy cannot verify ed25519-sha256 (RFC 8463): PyNaCl is missing."""
    import importlib

    importlib.import_module("nacl.signing")

_DKIMPY_LOG = DkimpyLog(log)


def text(value: bytes) -> str:
    """A tag value as text, folding whitespace removed."""
    return re.sub(r"\s+", "", value.decode("ascii", "replace"))


def signature_props(tags: Mapping[bytes, bytes]) -> tuple[tuple[str, str], ...]:
    """RFC 8601 §2.7.1 properties of one signature, in the usual order."""
    props: list[tuple[str, str]] = []
    for tag in (b"d", b"i", b"s", b"a"):
        if tags.get(tag):
            props.append((f"header.{tag.decode()}", text(tags[tag])))
    if tags.get(b"b"):
        props.append(("header.b", text(tags[b"b"])[:HEADER_B_CHARS]))
    return tuple(props)


def precheck_signature(tags: Mapping[bytes, bytes], now: float) -> Verdict | None:
    """Problems with a signature's own tags (RFC 6376 §6.1.1), or None if it is verifiable."""
    missing = [tag.decode() for tag in REQUIRED_TAGS if tag not in tags]
    if missing:
        return Verdict(Outcome.PERMERROR, f"signature missing required tag {', '.join(missing)}=",
                       "dkim.malformed")
    if tags[b"v"].strip() != b"1":
        return Verdict(Outcome.PERMERROR, "incompatible signature version", "dkim.malformed")
    algorithm = tags[b"a"].strip().lower()
    if algorithm in HISTORIC_ALGORITHMS:
        # RFC 8301 §3.1: rsa-sha1 MUST NOT be used for verifying; such
        # signatures have permanently failed evaluation.
        return Verdict(Outcome.PERMERROR, "rsa-sha1 is historic (RFC 8301)")
    if algorithm not in SUPPORTED_ALGORITHMS:
        return Verdict(Outcome.NEUTRAL, f"unsupported algorithm {text(algorithm)[:40]}")
    # Each name stripped on its own: re.split(rb"\s*:\s*") would give the same
    # names, but retries from every byte of a run of blanks no colon follows.
    signed = [h.strip().lower() for h in tags[b"h"].split(b":")]
    if b"from" not in signed:
        return Verdict(Outcome.PERMERROR, "From field not signed", "dkim.malformed")
    try:
        dkim.validate_signature_fields(dict(tags))
    except (dkim.ValidationError, IndexError) as exc:  # IndexError: dkimpy on i= equal to d=
        expires = tags.get(b"x", b"").strip()
        if expires.isdigit() and int(expires) < now:
            return Verdict(Outcome.PERMERROR, "signature expired")
        return Verdict(Outcome.PERMERROR, _short(exc), "dkim.malformed")
    return None


@remembered_when(lambda name, txt, status, algorithm: txt is None or len(txt) <= KEY_MEMO_TEXT)
def classify_key(
    name: str, txt: bytes | None, status: DnsStatus | None, algorithm: bytes
) -> Verdict | None:
    """Problems with the key record (RFC 6376 §6.1.2), or None if it is usable.

    Remembered for key texts of ordinary size: the same few keys sign most mail.
    """
    if txt is None:
        if status is DnsStatus.TEMPERROR:
            return Verdict(Outcome.TEMPERROR, f"key lookup failed for {name}")
        return Verdict(Outcome.PERMERROR, f"no key for signature at {name}", "dkim.key_missing")
    try:
        key = parse_tag_value(txt)
    except InvalidTagValueList:
        return Verdict(Outcome.PERMERROR, "key syntax error", "dkim.malformed")
    if b"p" not in key:
        return Verdict(Outcome.PERMERROR, "key record without p=", "dkim.malformed")
    if not re.sub(rb"\s+", b"", key[b"p"]):
        # RFC 6376 §3.6.1: an empty p= means the key has been revoked.
        return Verdict(Outcome.PERMERROR, "key revoked", "dkim.key_revoked")
    if key.get(b"v", b"DKIM1").strip() != b"DKIM1":
        return Verdict(Outcome.PERMERROR, "key syntax error: bad v=", "dkim.malformed")
    key_type = key.get(b"k", b"rsa").strip().lower()
    if key_type != SUPPORTED_ALGORITHMS.get(algorithm):
        return Verdict(Outcome.PERMERROR, "inappropriate key algorithm", "dkim.malformed")
    hashes = key.get(b"h")
    if hashes is not None and b"sha256" not in [h.strip().lower() for h in hashes.split(b":")]:
        return Verdict(Outcome.PERMERROR, "inappropriate hash algorithm", "dkim.malformed")
    services = key.get(b"s")
    wanted = {b"*", b"email"}
    if services is not None and not wanted & {s.strip().lower() for s in services.split(b":")}:
        return Verdict(Outcome.PERMERROR, "inappropriate service type", "dkim.malformed")
    try:
        dkim.evaluate_pk(name, txt)
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:
        return Verdict(Outcome.PERMERROR, f"key syntax error: {_short(exc)}", "dkim.malformed")
    return None


def _short(exc: BaseException) -> str:
    """An exception's message, short enough for an A-R comment."""
    return str(exc).split("(", 1)[0].strip()[:120] or type(exc).__name__


class _RecordingDns:
    """dkimpy's dnsfunc: the shared shim, remembering what each name returned."""

    def __init__(self, resolver: Resolver) -> None:
        self.shim = DkimDns(resolver)
        self.seen: dict[str, bytes | None] = {}

    def __call__(self, name: str | bytes, timeout: float = 5) -> bytes | None:
        answer: bytes | None = self.shim(name, timeout=timeout)
        key = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        self.seen[key.rstrip(".").lower()] = answer
        return answer



def verify_one(
    raw: bytes, parsed: Parsed, index: int, tags: Mapping[bytes, bytes], resolver: Resolver,
    min_key_bits: int,
) -> Verdict:
    """Verify signature number `index` of `raw` with its own dkimpy object."""
    dns = _RecordingDns(resolver)
    # One split of the message serves every signature (compat.dkimpy.verifier).
    signer = verifier(dkim.DKIM, raw, parsed, logger=_DKIMPY_LOG, minkey=min_key_bits)
    crypto_error: Verdict | None = None
    verified = False
    try:
        verified = bool(signer.verify(idx=index, dnsfunc=dns))
    except dkim.KeyFormatError as exc:
        if signer.keysize and signer.keysize < min_key_bits:
            # RFC 8301 §3.2: keys under 1024 bits MUST NOT be considered valid.
            crypto_error = Verdict(Outcome.FAIL, f"key too small: {signer.keysize} bits",
                                   "dkim.key_too_small")
        else:
            crypto_error = Verdict(Outcome.PERMERROR, f"key syntax error: {_short(exc)}",
                                   "dkim.malformed")
    except dkim.ValidationError as exc:
        # The tags were validated beforehand, so this is the body hash (§6.1.3).
        crypto_error = Verdict(Outcome.FAIL, _short(exc) or "body hash mismatch",
                               "dkim.body_hash_mismatch")
    except (dkim.DKIMException, ValueError, IndexError) as exc:
        # dkimpy lets some malformed input escape as ValueError (bad base64
        # in bh=/b=, wrong Ed25519 signature length) or IndexError.
        crypto_error = Verdict(Outcome.PERMERROR, _short(exc), "dkim.malformed")

    name = f"{text(tags[b's'])}._domainkey.{text(tags[b'd'])}".lower()
    if dns.shim.temperror:
        return Verdict(Outcome.TEMPERROR, f"key lookup failed for {name}")
    if name in dns.seen:
        status = dns.shim.statuses.get(name) or dns.shim.statuses.get(name + ".")
        key_problem = classify_key(name, dns.seen[name], status, tags[b"a"].strip().lower())
        if key_problem is not None:
            return key_problem
    if crypto_error is not None:
        return crypto_error
    if verified:
        return Verdict(Outcome.PASS, "signature verified")
    return Verdict(Outcome.FAIL, "signature did not verify", "dkim.signature_mismatch")


def _result(verdict: Verdict, tags: Mapping[bytes, bytes]) -> CheckResult:
    """The `dkim` result for one signature."""
    domain = text(tags[b"d"]).lower().rstrip(".") if tags.get(b"d") else ""
    selector = text(tags[b"s"]) if tags.get(b"s") else ""
    findings = (Finding(verdict.finding, domain),) if verdict.finding else ()
    return CheckResult("dkim", verdict.outcome, verdict.reason, findings,
                       method=AuthMethod.DKIM, props=signature_props(tags),
                       evidence=DkimEvidence(domain, selector))


class DkimCheck(BaseCheck[Config]):
    """Verify every DKIM signature of the message."""

    spec: ClassVar[CheckSpec] = CheckSpec(
        "dkim", result="dkim", stage=Stage.DATA, waits_on="dns", method=AuthMethod.DKIM,
        findings={
            "dkim.key_missing": "the signing key is not published",
            "dkim.key_revoked": "the signing key is revoked (empty p=)",
            "dkim.body_hash_mismatch": "the body changed after signing",
            "dkim.signature_mismatch": "the signed headers changed after signing",
            "dkim.key_too_small": "the RSA key is shorter than the configured minimum",
            "dkim.malformed": "the DKIM-Signature header cannot be parsed",
        },
    )

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """One result per signature, in header order."""
        message = ctx.message
        if message is None:
            return [CheckResult(self.name, Outcome.SKIPPED, "no message", method="dkim")]
        if b"dkim-signature" not in message.header_block.lower():
            # No field can be a signature: spare dkimpy's split, which rewrites
            # the whole body. (Its header section ends where `header_block`
            # does, give or take the line end's octets.)
            return [CheckResult(self.name, Outcome.NONE, "message not signed", method="dkim")]
        try:
            # dkimpy's own header parser, so signature indexes match verify(idx=);
            # it reads only the header section, so unsigned mail costs little.
            parsed: Parsed = rfc822_parse(message.raw)
        except (dkim.MessageFormatError, IndexError) as exc:  # IndexError: leading continuation
            values = message.header_values("DKIM-Signature")
            if not values:
                return [CheckResult(self.name, Outcome.NONE, "message not signed", method="dkim")]
            verdict = Verdict(Outcome.PERMERROR, f"message unparseable: {_short(exc)}",
                              "dkim.malformed")
            return [_result(verdict, self._tags(v.encode("utf-8", "surrogateescape")) or {})
                    for v in values]
        values_raw = [value for key, value in parsed[0] if key.lower() == b"dkim-signature"]
        if not values_raw:
            return [CheckResult(self.name, Outcome.NONE, "message not signed", method="dkim")]

        now = time.time()
        verdicts: dict[int, Verdict] = {}
        todo: list[tuple[int, Mapping[bytes, bytes]]] = []
        all_tags: list[Mapping[bytes, bytes]] = []
        for index, value in enumerate(values_raw):
            tags = self._tags(value)
            all_tags.append(tags or {})
            if tags is None:
                verdicts[index] = Verdict(Outcome.PERMERROR, "signature syntax error",
                                          "dkim.malformed")
            elif index >= self.config.max_signatures:
                verdicts[index] = Verdict(Outcome.NEUTRAL, "not verified: limit")
            elif (problem := precheck_signature(tags, now)) is not None:
                verdicts[index] = problem
            else:
                todo.append((index, tags))
        verdicts.update(self._verify_all(ctx, message.raw, parsed, todo))
        return [_result(verdicts[i], all_tags[i]) for i in range(len(values_raw))]

    @staticmethod
    def _tags(value: bytes) -> dict[bytes, bytes] | None:
        """The tag=value list of a signature (RFC 6376 §3.2), or None if unparseable."""
        try:
            tags: dict[bytes, bytes] = parse_tag_value(value)
        except InvalidTagValueList:
            return None
        return tags

    def _verify_all(
        self, ctx: CheckContext, raw: bytes, parsed: Parsed,
        todo: list[tuple[int, Mapping[bytes, bytes]]],
    ) -> dict[int, Verdict]:
        """Verify the signatures in `todo`, each in its own thread when there are several."""
        bits = self.config.min_key_bits
        if len(todo) <= 1:
            return {i: verify_one(raw, parsed, i, tags, ctx.dns, bits) for i, tags in todo}
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(todo))) as pool:
            futures = {
                i: pool.submit(verify_one, raw, parsed, i, tags, ctx.dns, bits)
                for i, tags in todo
            }
            return {i: future.result() for i, future in futures.items()}
