"""install_library_seams: every replacement in place after one call."""

from __future__ import annotations

import email.message

import dkim
import dkim.canonicalization
import dkim.crypto
import spf

from trustmilter import mimeparams
from trustmilter.checks import canonicalization, dkimcrypto, dkimlinear, spflinear
from trustmilter.seams import install_library_seams


def test_one_call_installs_every_seam() -> None:
    install_library_seams()
    install_library_seams()  # idempotent
    assert dkim.canonicalization.compress_whitespace is canonicalization.compress_whitespace
    assert dkim.canonicalization.strip_trailing_whitespace is (
        canonicalization.strip_trailing_whitespace)
    assert dkim.crypto.int2str is dkimcrypto.int2str
    assert dkim.evaluate_pk is dkimcrypto.evaluate_pk
    assert dkim.select_headers is dkimlinear.select_headers
    assert dkim.RE_BTAG is dkimlinear.RE_BTAG
    assert spf.RE_TOPLAB is spflinear.RE_TOPLAB
    assert email.message._parseparam is mimeparams.parseparam  # type: ignore[attr-defined]
