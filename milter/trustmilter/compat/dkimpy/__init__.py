"""dkimpy, as trustmilter uses it: the replacements, the split, the logger.

Nine names of dkimpy are replaced (each module here says why and what it
measured): relaxed canonicalization (canonicalization.py), the RSA byte
conversions and a memo of key parsing with RFC 8301 bounds (crypto.py), and
the header-field parsing that is quadratic in a hostile DKIM-Signature or
ARC field (headers.py). DKIM and ARC verification both build dkimpy's
object from one linear split of the message (`verifier`, parse.py) instead
of dkimpy's own parser, and `DkimpyLog` steers dkimpy's logging.

dkimpy is Launchpad's "dkimpy" 1.1.8; docs/upstream/dkimpy.md describes
each fix for upstream.
"""

from __future__ import annotations

import logging
from typing import Any

import dkim
import dkim.canonicalization
import dkim.crypto

from trustmilter.compat.dkimpy import canonicalization, crypto, headers
from trustmilter.compat.dkimpy.parse import Parsed, rfc822_parse
from trustmilter.compat.patches import SPEED_LOST, Patch

__all__ = ["PATCHES", "DkimpyLog", "Parsed", "rfc822_parse", "verifier"]

DIST = "dkimpy"
VERSIONS = frozenset({"1.1.8"})

PARSED_MESSAGE = Patch(
    # Nothing replaced: `verifier` writes DomainSigner.headers/.body, which
    # set_message would fill from rfc822_parse, and parse.py reproduces that.
    dkim.DomainSigner, "set_message", None, DIST, VERSIONS,
    fingerprint="a190c5063dd1f8b463696469ad925b1430f7d92fa0d2f59fc478bbf388bb9542",
    guards=("DomainSigner.__init__", "rfc822_parse"),
    lost="dkimpy parses each message itself, quadratic in a folded field",
)

PATCHES: tuple[Patch, ...] = (
    Patch(
        dkim.canonicalization, "compress_whitespace", canonicalization.compress_whitespace,
        DIST, VERSIONS,
        fingerprint="bc07bf281c2e4800e0af0dfb52ce131784881b8998836c545fb6045746dd3cb4",
    ),
    Patch(
        dkim.canonicalization, "strip_trailing_whitespace",
        canonicalization.strip_trailing_whitespace, DIST, VERSIONS,
        fingerprint="aed6a0fbde322c027ae63b0e66542baeb86431f3bb5d3ecec73306bc21db1e36",
    ),
    Patch(
        dkim.crypto, "int2str", crypto.int2str, DIST, VERSIONS,
        fingerprint="47d0b2c38b90de7b6ccbf5d9f0b875d49b3f15c13b4cd64c8a98f52affa9952d",
        lost=SPEED_LOST,
    ),
    Patch(
        dkim.crypto, "str2int", crypto.str2int, DIST, VERSIONS,
        fingerprint="414a99d57cb5e12479d8211a3bb99fbf41839bf5676ef2ffabe483663ae17fa9",
        lost=SPEED_LOST,
    ),
    # Required: the RFC 8301 bounds refuse RSA keys that take minutes to verify;
    # load_pk_from_dns is the caller whose 4-tuple unpacking ours must match.
    Patch(
        dkim, "evaluate_pk", crypto.evaluate_pk, DIST, VERSIONS,
        fingerprint="1117fbaf1a6dd47e8330e758c45704d85946a87f7e6710095427e5450e875081",
        guards=("load_pk_from_dns",), required=True,
    ),
    # dkimpy's view of `re`: its h= split (in these two methods) goes to ours.
    Patch(
        dkim, "re", headers.DkimpyRe(), DIST, VERSIONS,
        fingerprint="830441ceaf65505e9c44a1f1d2acd4de16730280959255e5ff6111fed1d3b1a5",
        guards=("DKIM.verify_headerprep", "ARC.verify_instance"),
    ),
    Patch(
        dkim, "validate_signature_fields", headers.validate_signature_fields, DIST, VERSIONS,
        fingerprint="a43549cb8a4551593023cfcbd19ab7867c7269637f386881471f6fdb6c18fc12",
    ),
    Patch(
        dkim, "RE_BTAG", headers.RE_BTAG, DIST, VERSIONS,
        fingerprint="cfa1f2f7b135bdbde1ed01748e55e8e4aa2a8b846f7f6bf5289ab1e5381b015e",
    ),
    Patch(
        dkim, "select_headers", headers.select_headers, DIST, VERSIONS,
        fingerprint="a0f7a17473d491b0d9780c29dba6b3c713ea1a6aad4bc134fcd5bf782474d197",
    ),
    PARSED_MESSAGE,
)

def verifier(kind: type[Any], raw: bytes, parsed: Parsed, **options: Any) -> Any:
    """dkimpy's `kind` (DKIM or ARC) for message `raw`, already split as `parsed`.

    `kind(raw)` would split the message again with dkimpy's parser, quadratic
    in a folded field; verifying only reads the split, so one serves every
    signature. Where dkimpy's constructor or parser is not the one this was
    written for, dkimpy parses `raw` itself (start-up logged that).
    """
    if not PARSED_MESSAGE.holds():
        return kind(raw, **options)
    signer = kind(None, **options)
    signer.headers, signer.body = parsed
    return signer


class DkimpyLog:
    """A logger for dkimpy that demotes its error lines to debug.

    dkimpy logs every bad key or signature at ERROR; for a filter those are
    facts about the sender, reported as results, not operational errors.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def debug(self, msg: object, *args: Any) -> None:
        self._logger.debug(msg, *args)

    info = warning = error = debug

    def isEnabledFor(self, level: int) -> bool:
        # dkimpy's DomainSigner.__init__ asks this to decide whether to keep
        # canonicalised content for debugging: never.
        return False
