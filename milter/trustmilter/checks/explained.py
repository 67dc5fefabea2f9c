"""Which local failures a trusted party's recorded pass explains (forwarded mail).

A message forwarded to us fails here in predictable ways: the forwarder's
address is not in the author's SPF record, a footer or a changed Subject
breaks the author's DKIM signature, and DMARC, built on those two, fails
with them (RFC 7960 §3 lists how indirect flows break each; RFC 8617 §1
is ARC's answer). When someone the operator
trusts (an ARC sealer, an upstream gateway) recorded a pass for a method
before forwarding, the local failure of the same method is explained:
the result that carries the pass names those signals in
`CheckResult.explains`, and the policy neither scores them nor matches
rules on them. A method the trusted party did not see pass explains
nothing: a signature already broken when it arrived stays a failure.
"""

from __future__ import annotations

from collections.abc import Iterable

# What forwarding does to SPF: the forwarder's address is judged against the
# author's record (RFC 7960 §3: indirect mail flows break SPF).
SPF_FAILURES: tuple[str, ...] = ("spf.mailfrom.fail", "spf.mailfrom.softfail",
                                 "spf.mailfrom.neutral")
# A signature the forwarder's changes broke (RFC 7960 §3: footers, Subject tags).
DKIM_FAILURES: tuple[str, ...] = ("dkim.fail",)
# DMARC fails with them; its policy findings come only with that failure.
DMARC_FAILURES: tuple[str, ...] = ("dmarc.fail", "dmarc.policy.*", "dmarc.pct_sampled_out")

# The forwarding host is not the author's own: its HELO and PTR name belong to
# the forwarder, not to the From domain. Once the trusted party saw DMARC pass
# for the author, that mismatch says nothing against the message. (What the
# host is in itself - no PTR, a HELO that is no host name - still counts.)
NOT_THE_AUTHORS_HOST: tuple[str, ...] = ("helo.not_sender_domain", "helo.not_sender_mx",
                                         "iprev.ptr_not_sender_domain")

_BY_METHOD: dict[str, tuple[str, ...]] = {
    "spf": SPF_FAILURES,
    "dkim": DKIM_FAILURES,
    "dmarc": (*DMARC_FAILURES, *NOT_THE_AUTHORS_HOST),
}

# Every pattern a trusted pass can explain: what a check that reads such passes
# declares as explainable (finality).
ALL: tuple[str, ...] = (*SPF_FAILURES, *DKIM_FAILURES, *DMARC_FAILURES, *NOT_THE_AUTHORS_HOST)


def local_failures(method: str) -> tuple[str, ...]:
    """The local failure signals a trusted pass of `method` explains (none for others)."""
    return _BY_METHOD.get(method.lower(), ())


def explained_by(passed: Iterable[str]) -> frozenset[str]:
    """The local failure signals explained by trusted passes of the methods `passed`."""
    return frozenset(p for method in passed for p in local_failures(method))
