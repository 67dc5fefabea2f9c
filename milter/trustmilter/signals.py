"""The catalogue of signal names the checks emit and the policy may name.

A signal is either ``<result>.<outcome>`` (one per CheckResult, e.g.
``spf.mailfrom.fail``) or a finding name (e.g. ``iprev.ptr_missing``).
This module is the one list of them: checks emit only names listed here,
the policy loader rejects any other name (so ``dmarc.fial`` is an error,
not a rule that never fires), and documentation is generated from it.

Results recorded by a trusted upstream gateway arrive as
``upstream.<method>.<outcome>`` for any RFC 8601 method, so those are
accepted by shape rather than listed one by one.

A policy may end a name with ``*`` to match every signal with that prefix
(``dnsbl.*``). Nothing here does I/O; everything is immutable.
"""

from __future__ import annotations

import difflib
import re

from trustmilter.results import Outcome

# Result names (CheckResult.check) of the checks; each yields one signal per outcome.
RESULT_NAMES: tuple[str, ...] = (
    "iprev",
    "helo",
    "spf.mailfrom",
    "spf.helo",
    "dkim",
    "dmarc",
    "arc",
    "dnsbl",
    "uribl",
    "names",
    "headers",
    # Loops, automation, rate tiers, learned reputation (SEED-RULES §5, §7). The
    # result names differ from their finding prefixes (loop., auto.), so a rule
    # naming "loop.*" or "auto.*" matches findings only, never "loops.pass".
    "loops",
    "automation",
    "rate",
    "reputation",
    # Inbound bounces (SEED-RULES §6; RFC 3464).
    "bounce",
)

# Finding name -> what it means. The text is for documentation and `policy show`.
FINDINGS: dict[str, str] = {
    # iprev (RFC 8601 §3; SEED-RULES §1)
    "iprev.ptr_missing": "the client IP has no PTR record",
    "iprev.ptr_generic": "the PTR name looks like a consumer or dynamic line",
    "iprev.ptr_not_sender_domain": "the PTR name is not in the envelope sender's domain",
    "iprev.forward_mismatch": "no PTR name resolves back to the client IP",
    # HELO/EHLO (RFC 5321 §2.3.5, §4.1.4; SEED-RULES §2)
    "helo.missing": "the client sent no HELO/EHLO name",
    "helo.ip_literal": "the HELO name is an IP address literal",
    "helo.ip_literal_mismatch": "the HELO address literal is not the client IP",
    "helo.localhost": "the HELO name is localhost or a loopback address",
    "helo.single_label": "the HELO name has no dot",
    "helo.unknown_tld": "the HELO name does not end in a known public suffix",
    "helo.nxdomain": "the HELO name does not exist in the DNS",
    "helo.not_client_ip": "the HELO name does not resolve to the client IP",
    "helo.not_sender_domain": "the HELO name is not in the envelope sender's domain",
    # DKIM (RFC 6376, RFC 8301)
    "dkim.key_missing": "the signing key is not published",
    "dkim.key_revoked": "the signing key is revoked (empty p=)",
    "dkim.body_hash_mismatch": "the body changed after signing",
    "dkim.signature_mismatch": "the signed headers changed after signing",
    "dkim.key_too_small": "the RSA key is shorter than the configured minimum",
    "dkim.malformed": "the DKIM-Signature header cannot be parsed",
    # DMARC (RFC 7489)
    "dmarc.policy.none": "the From domain's applicable DMARC policy is none",
    "dmarc.policy.quarantine": "the From domain's applicable DMARC policy is quarantine",
    "dmarc.policy.reject": "the From domain's applicable DMARC policy is reject",
    "dmarc.spf_aligned": "SPF passed for a domain aligned with From",
    "dmarc.dkim_aligned": "a DKIM signature aligned with From passed",
    "dmarc.org_domain_record": "the DMARC record came from the organizational domain",
    "dmarc.pct_sampled_out": "pct= sampling let this failure off with a lighter policy",
    # ARC (RFC 8617)
    "arc.trusted_pass": "a valid ARC chain from a trusted sealer vouches for the original",
    # DNS blocklists (RFC 5782)
    "dnsbl.listed": "the client IP is listed (carries the list's weight)",
    "dnsbl.error_code": "a blocklist answered with an error code (ignored)",
    "uribl.listed": "a linked domain is listed (carries the list's weight)",
    "uribl.error_code": "a URI blocklist answered with an error code (ignored)",
    "uribl.lookup_limit": "more linked domains than the lookup limit; the rest were skipped",
    # Name existence (SEED-RULES §3)
    "names.sender_nonexistent": "the envelope sender's domain does not exist",
    "names.sender_no_address": "the envelope sender's domain has no A/AAAA/MX, or a null MX",
    "names.from_nonexistent": "the From header's domain does not exist",
    "names.from_no_address": "the From header's domain has no A/AAAA/MX, or a null MX",
    "names.rcpt_nonexistent": "a recipient domain does not exist",
    # Header sanity (RFC 5322; SEED-RULES §4)
    "headers.from_missing": "no From header",
    "headers.from_multiple": "more than one From header",
    "headers.from_unparseable": "the From header is not a valid address list",
    "headers.date_missing": "no Date header",
    "headers.date_invalid": "the Date header is not an RFC 5322 date",
    "headers.subject_malformed": "the Subject header is malformed",
    "headers.to_malformed": "the To header is malformed",
    "headers.reply_to_malformed": "the Reply-To header is malformed",
    "headers.message_id_missing": "no Message-ID header",
    "headers.nul_bytes": "the message contains NUL bytes",
    "headers.line_too_long": "a line is longer than 998 characters",
    "headers.8bit_unencoded": "a header contains raw 8-bit bytes",
    # Mail loops (SEED-RULES §5; RFC 5321 §6.3)
    "loop.support_sender": "MAIL FROM or From is one of our own support addresses",
    "loop.support_to_support": "a support address receives mail from another support address",
    "loop.too_many_received": "more Received headers than checks.loops.max_received",
    "loop.marker_seen": "our own loop marker header is already present: the mail came back",
    # Automated mail (SEED-RULES §5, §7; RFC 3834, RFC 3464, RFC 2369, RFC 2919)
    "auto.noreply_sender": "the sender's local part is no-reply style (noreply, mailer-daemon...)",
    "auto.bulk": "bulk or list mail (Precedence bulk/junk/list, List-Id, List-Unsubscribe)",
    "auto.machine_generated": "machine-generated (Auto-Submitted other than no, X-Autoreply...)",
    "auto.bounce": "a bounce: the null sender, or a multipart/report delivery-status report",
    # Rate tiers per rolling window (SEED-RULES §5: 20 pass, 20 held, then rejected)
    "rate.tier.quarantine": "more messages in the window than rate.quarantine_after",
    "rate.tier.reject": "more messages in the window than rate.reject_after",
    "rate.state_unavailable": "the state backend failed, so the messages could not be counted",
    # Learned reputation (SEED-RULES §7: releasing teaches the filter)
    "reputation.learned": "mail from this sender was released from quarantine often enough",
    # Bounces (SEED-RULES §6; RFC 3464, RFC 3463)
    "bounce.own": "a bounce of our own outbound mail (its returned message is from own_domains)",
    "bounce.foreign": "a bounce of mail that did not come from own_domains (backscatter)",
    "bounce.permanent": "a bounce reporting a permanent failure (5.x.x) for some recipient",
    "bounce.delayed": "a bounce reporting a temporary failure or delay (4.x.x)",
}

# Signals every policy may name: each result's outcomes plus the findings.
KNOWN_SIGNALS: frozenset[str] = frozenset(
    {f"{name}.{outcome.value}" for name in RESULT_NAMES for outcome in Outcome} | set(FINDINGS)
)

# Findings named other than after their result (``loops`` reports ``loop.*``).
_FINDING_PREFIXES: dict[str, tuple[str, ...]] = {
    "loops": ("loop.",),
    "automation": ("auto.",),
}


def signal_prefixes(result: str) -> tuple[str, ...]:
    """Prefixes of every signal a result of this name may carry: outcomes and findings.

    The daemon uses this to know which signals can still appear once some
    checks have run (a verdict is final only if nothing later can undo it).
    """
    findings = _FINDING_PREFIXES.get(result, (f"{result.split('.')[0]}.",))
    return (f"{result}.", *findings)


UPSTREAM_PREFIX = "upstream."
# upstream.<RFC 8601 method keyword>.<outcome>
_UPSTREAM = re.compile(
    r"upstream\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.(?:"
    + "|".join(re.escape(o.value) for o in Outcome)
    + r")\Z"
)
WILDCARD = "*"


def is_known_signal(name: str) -> bool:
    """True if `name` is a signal some check or trusted gateway can produce."""
    return name in KNOWN_SIGNALS or _UPSTREAM.match(name) is not None


def is_known_pattern(pattern: str) -> bool:
    """True if `pattern` (a signal, or a prefix ending in ``*``) can ever match."""
    if not pattern.endswith(WILDCARD):
        return is_known_signal(pattern)
    prefix = pattern[: -len(WILDCARD)]
    if not prefix or WILDCARD in prefix:
        return False
    if prefix.startswith(UPSTREAM_PREFIX) or UPSTREAM_PREFIX.startswith(prefix):
        return True
    return any(signal.startswith(prefix) for signal in KNOWN_SIGNALS)


def matches(pattern: str, signal: str) -> bool:
    """True if `signal` is `pattern`, or starts with it when it ends in ``*``."""
    return bool(matching(pattern, frozenset((signal,))))


def matching(pattern: str, signals: frozenset[str]) -> frozenset[str]:
    """The signals of `signals` that `pattern` matches: itself, or with a
    trailing ``*`` every signal that starts with what comes before it.

    A pattern without ``*`` is one set lookup, not a scan of every signal.
    """
    if pattern.endswith(WILDCARD):
        prefix = pattern[: -len(WILDCARD)]
        return frozenset(s for s in signals if s.startswith(prefix))
    return frozenset((pattern,)) if pattern in signals else frozenset()


def suggestion(name: str) -> str | None:
    """The known signal closest to a misspelt `name`, for error messages."""
    close = difflib.get_close_matches(name, sorted(KNOWN_SIGNALS), n=1, cutoff=0.75)
    return close[0] if close else None
