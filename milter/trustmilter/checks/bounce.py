"""Inbound bounces, read at end of message (docs/rules.md §6; RFC 3464, RFC 3463).

A message that looks like a bounce — the null sender (RFC 5321 §4.5.5),
a multipart/report, or a From of MAILER-DAEMON / postmaster — is read by
the same reader as ``trustmilter explain-bounce`` (`bounce/explain.py`).
The result, named ``bounce``:

- ``none`` for anything that is not a bounce (most mail: skipped without
  parsing the body; also a report of nothing but successful deliveries and
  a challenge-response filter's notice, bounce/notices.py);
- ``fail`` for a bounce reporting a permanent failure, ``neutral`` for one
  that does not (a delay warning, successes beside a delay, an unreadable
  report);
- findings: ``bounce.ours`` (verifiably a bounce of our own mail: see
  below), ``bounce.own`` (the returned message claims to come from one of
  `own_domains`), ``bounce.foreign`` (it came from elsewhere: backscatter,
  or a report meant for someone else), ``bounce.permanent`` (the reporter
  gave up on a recipient), ``bounce.delayed`` (it is still trying);
- its `summary` (also `BounceEvidence.summary`, read with `summary_of`):
  one printable line — origin, whether it is ours and why, reporting MTA,
  each recipient with its code and cause — for the verdict log line, and
  asked for as the help desk's header (`header`) on delivered bounces.
  Every value in it that the bounce's sender wrote is percent-encoded
  (`quoted`): no ";" or "=" of theirs can add a field the help desk would
  read as ours.

Ours or not (bounce/ours.py): ``yes`` when a mark a forger cannot make
says so — the report comes from one of `own_mtas` (named as the reporter
and delivered by it, under the name the MTA verified), the returned header
carries our token (the replies check verifies it, with its key), our DKIM
signature on the returned copy verifies (d= one of `own_domains`, the key
looked up in DNS), or the bounce goes to a BATV return path our
`batv_key_file` verifies; ``claims`` when only the bounce's own words say so
(a From of ours inside); ``no`` otherwise, or when a mark of ours on it is
wrong (a forged token).

Hard bounces of our own mail (5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10: the
address or its domain does not exist) are remembered for `keep_days`, at
most `MAX_RECORDED` per message, where ``trustmilter bounces list`` shows
them with the evidence: only from a bounce that is verifiably ours, since
a forged bounce could otherwise stop our mail to any address. The check
returns them as an effect (state/effects.py) and the engine writes them
once the bounce is delivered (accepted or held), never for a bounce we
refuse; the summary says ``hard=N``. Nothing here raises for odd input.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from trustmilter.bounce.batv import MAX_SECRET_BYTES
from trustmilter.bounce.explain import Bounce, BounceRecipient, explain
from trustmilter.bounce.marks import Arrival, OwnMail, ownership
from trustmilter.bounce.ours import token_mark
from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage, skipped
from trustmilter.checks.bounce_signs import DAEMON_LOCAL_PARTS, may_be_bounce
from trustmilter.checks.replies import RESULT as REPLY_RESULT
from trustmilter.checks.replies import ReplyCheck, returned_token
from trustmilter.config.errors import InvalidField
from trustmilter.domains import is_host_name
from trustmilter.mail.addresses import first_address
from trustmilter.mail.text import clip
from trustmilter.mail.token import KeyFileError, load_key
from trustmilter.model import is_field_name
from trustmilter.results import CheckResult, Finding, HeaderRequest, Outcome
from trustmilter.state.base import HardBounce
from trustmilter.state.effects import RecordHardBounces

__all__ = ["DAEMON_LOCAL_PARTS", "BounceCheck", "BounceEvidence", "Config", "batv_secret",
           "may_be_bounce", "preflight", "quoted", "summary", "summary_of"]

RESULT = "bounce"
DAY = 86400.0
log = logging.getLogger(__name__)
MAX_SUMMARY = 900  # a header line stays well inside RFC 5322's 998
MAX_VALUE = 255  # characters of one value taken from a bounce, before encoding
MAX_LISTED = 5  # recipients named in the summary; the rest are counted
# Recipients of one bounce recorded at most: a report naming thousands of
# recipients must not turn one message into thousands of state writes.
MAX_RECORDED = 20
# RFC 3463 / RFC 7505: the destination mailbox or system does not exist.
HARD_CODES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
# Characters a value taken from a bounce keeps as they are in the summary:
# those of host names, addresses and message ids. Everything else (";", "=",
# quotes, blanks, "%", CR/LF, non-ASCII) is percent-encoded, so a value can
# never end its field or add one (RFC 3986 §2.1 percent-encoding, on UTF-8).
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                  ".@_+-:<>[]/!#$&'*?^{|}~")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool = True
    # Our own mail domains (and their subdomains): a bounce whose returned
    # message came from one of them reports our own outbound mail.
    own_domains: tuple[str, ...] = ()
    # Our own MTAs that may report a bounce to us (outbound relays): host
    # names, or ".example.org" for every host under it. A report from one of
    # them, delivered by one of them, is verifiably ours.
    own_mtas: tuple[str, ...] = ()
    # The secret our MTA tags return paths with (BATV prvs=, as Exim's
    # ${prvs}): 32 to 64 bytes, mode 600. Empty: no tags verified.
    batv_key_file: str = ""
    # Record hard-bounced recipients (5.1.x) of our own mail in the state store.
    record_hard_bounces: bool = True
    # Days a recorded hard bounce is kept after its latest report.
    keep_days: float = field(default=90.0, metadata={"min": 1, "max": 3650})
    # The summary header for the help desk on delivered bounces; '' for none.
    header: str = "X-Trustmilter-Bounce"

    def __post_init__(self) -> None:
        for index, domain in enumerate(self.own_domains):
            if not is_host_name(domain.strip(".")):
                raise InvalidField(("own_domains", index), "a domain like example.com", domain)
        for index, host in enumerate(self.own_mtas):
            if not is_host_name(host.strip(".")):
                raise InvalidField(("own_mtas", index),
                                   "a host name like relay.example.com, or .example.com", host)
        if self.batv_key_file and not self.batv_key_file.startswith("/"):
            raise InvalidField(("batv_key_file",), "an absolute path, or ''", self.batv_key_file)
        if self.header and not is_field_name(self.header):
            raise InvalidField(
                ("header",), "a header field name (printable ASCII, no ':' or space), or ''",
                self.header,
            )


def batv_secret(config: Config) -> bytes | None:
    """The BATV secret, or None when none is configured; KeyFileError when unusable."""
    if not config.batv_key_file:
        return None
    secret = load_key(config.batv_key_file)
    if len(secret) > MAX_SECRET_BYTES:
        raise KeyFileError(f"{config.batv_key_file}: {len(secret)} bytes; a BATV secret "
                           f"has at most {MAX_SECRET_BYTES} (Exim's limit)")
    return secret


def preflight(config: Config) -> None:
    """A BATV key file that is set must be usable: a typo must not turn the mark off."""
    batv_secret(config)


# ---- pure parts ---------------------------------------------------------------


Origin = Literal["own", "foreign", "unknown"]


@dataclass(frozen=True, slots=True)
class BounceEvidence:
    """A bounce read: whose mail it returned, and its one-line summary."""

    origin: Origin
    summary: str


def summary_of(result: CheckResult) -> str | None:
    """The one-line summary of a bounce result, or None (not a bounce)."""
    evidence = result.evidence
    return evidence.summary if isinstance(evidence, BounceEvidence) else None


def origin(bounce: Bounce, own_domains: tuple[str, ...]) -> Origin:
    """"own", "foreign", or "unknown" (no own domains set, or no returned headers)."""
    if bounce.own:
        return "own"
    returned = bounce.returned
    if own_domains and returned is not None and (returned.from_ or returned.return_path):
        return "foreign"
    return "unknown"


def quoted(value: str) -> str:
    """A value taken from a bounce, safe inside the summary: at most MAX_VALUE
    characters, everything but host, address and message-id characters
    percent-encoded (so "a;b=c" reads "a%3Bb%3Dc")."""
    return "".join(
        char if char in _KEPT else "".join(f"%{byte:02X}" for byte in char.encode(
            "utf-8", "surrogatepass"))
        for char in value[:MAX_VALUE]
    )


def summary(bounce: Bounce, origin_word: str, recorded: str | None = None) -> str:
    """One printable line: ``own; ours=yes:token; reporting-mta=..; 5.1.1
    <a@example.net> user unknown``, and how many hard bounces of ours it
    reports (``hard=N``) when any. Every value that comes from the bounce is
    `quoted`; the words around them are ours."""
    parts = [origin_word, f"ours={bounce.ours.word}"]
    if bounce.reporting_mta:
        parts.append(f"reporting-mta={quoted(bounce.reporting_mta)}")
    if bounce.returned is not None and bounce.returned.message_id:
        parts.append(f"message-id={quoted(bounce.returned.message_id.strip())}")
    listed = bounce.recipients[:MAX_LISTED]
    parts.extend(
        f"{quoted(r.status) if r.status else '-'} <{quoted(r.address)}> "
        f"{r.cause.value if r.cause else 'delivered'}"
        for r in listed)
    if len(bounce.recipients) > MAX_LISTED:
        parts.append(f"and {len(bounce.recipients) - MAX_LISTED} more")
    if not bounce.recipients:
        parts.append("no recipient could be read")
    if recorded is not None:
        parts.append(recorded)
    line = _UNPRINTABLE.sub("?", "; ".join(parts))
    return line if len(line) <= MAX_SUMMARY else line[: MAX_SUMMARY - 3] + "..."


def is_hard(recipient: BounceRecipient) -> bool:
    """The recipient's address or domain does not exist, and delivery failed for good.

    Only the 5.1.x codes about the destination (RFC 3463 §3.2; 5.1.10, RFC
    7505): not 5.1.7/5.1.8 (our sender address was refused: a problem on
    our side, perhaps a passing DNS failure) nor 5.1.0/5.1.9 (vague); and
    only a code the bounce states, not one inferred from its words."""
    return (
        recipient.failed
        and recipient.permanent
        and recipient.status_source in ("report", "diagnostic")
        and recipient.meaning.code in HARD_CODES
    )


# ---- the check ----------------------------------------------------------------


class BounceCheck(BaseCheck[Config]):
    """Is this a bounce, whose mail did it return, and which recipients are gone for good?"""

    # DNS only for our DKIM key, and only when the returned copy carries a
    # signature of ours; the store only through effects. It reads the token's
    # verdict from the replies check when that runs.
    spec: ClassVar[CheckSpec] = CheckSpec(
        "bounce", result=RESULT, stage=Stage.DATA, waits_on="dns", requires=(ReplyCheck.spec.name,),
        findings={
            "bounce.ours": "verifiably a bounce of our own mail: reported by our own MTA, or "
                           "returning our token, our DKIM signature or our BATV return path",
            "bounce.own":
                "a bounce of our own outbound mail (its returned message is from own_domains)",
            "bounce.foreign":
                "a bounce of mail that did not come from own_domains (backscatter)",
            "bounce.permanent": "a bounce reporting a permanent failure (5.x.x) for some recipient",
            "bounce.delayed": "a bounce reporting a temporary failure or delay (4.x.x)",
        },
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.own = OwnMail(config.own_domains, config.own_mtas, batv_secret(config))

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        message = ctx.message
        if message is None:
            return [skipped(RESULT, "no message yet")]
        if not may_be_bounce(ctx.envelope.mail_from, message):
            return [CheckResult(RESULT, Outcome.NONE, "not a bounce")]
        bounce = explain(message.raw, self.config.own_domains, message.mime)
        if not bounce.is_bounce:
            return [CheckResult(RESULT, Outcome.NONE, "not a bounce")]
        token = returned_token(ctx.results.get(REPLY_RESULT, ()))
        bounce = ownership(
            bounce, message.raw, self.own,
            Arrival(ctx.connection.hostname, ctx.envelope.rcpt_to),
            token_mark(token.returned_id, token.forged) if token else None,
            ctx.dns, ctx.clock())
        origin_word = origin(bounce, self.config.own_domains)
        # Remembered by the engine once the bounce is delivered (state/effects.py),
        # and only when it is verifiably ours: a forged bounce must not stop our mail.
        hard = self._hard_bounces(ctx, bounce) if bounce.ours.value == "yes" else ()
        line = summary(bounce, origin_word, f"hard={len(hard)}" if hard else None)
        findings = self._findings(bounce, origin_word)
        permanent = any(r.failed and r.permanent for r in bounce.recipients)
        return [CheckResult(
            RESULT, Outcome.FAIL if permanent else Outcome.NEUTRAL, clip(line),
            tuple(findings), summary=line,
            headers=(HeaderRequest(self.config.header, line),) if self.config.header else (),
            effects=(RecordHardBounces(hard),) if hard else (),
            evidence=BounceEvidence(origin_word, line),
        )]

    @staticmethod
    def _findings(bounce: Bounce, origin_word: Origin) -> list[Finding]:
        found = []
        if bounce.ours.value == "yes":
            found.append(Finding("bounce.ours", "+".join(bounce.ours.evidence)))
        if origin_word in ("own", "foreign"):
            found.append(Finding(f"bounce.{origin_word}", clip(bounce.reporting_mta or "")))
        permanent = [r.address for r in bounce.recipients if r.failed and r.permanent]
        if permanent:
            found.append(Finding("bounce.permanent", clip(", ".join(permanent))))
        delayed = [r.address for r in bounce.recipients if r.failed and not r.permanent]
        if delayed:
            found.append(Finding("bounce.delayed", clip(", ".join(delayed))))
        return found

    def _hard_bounces(self, ctx: CheckContext, bounce: Bounce) -> tuple[HardBounce, ...]:
        """The hard-bounced recipients to remember (at most MAX_RECORDED), or none."""
        hard = [r for r in bounce.recipients if is_hard(r) and "@" in r.address]
        if not hard or not self.config.record_hard_bounces:
            return ()
        now = ctx.clock()
        returned = bounce.returned
        return tuple(
            HardBounce(
                recipient=clip(recipient.address.strip("<> "), 320),
                status=recipient.status or "",
                cause=recipient.cause.value if recipient.cause else "",
                reporting_mta=clip(bounce.reporting_mta or "", 255),
                sender=clip(first_address(returned.from_ or "") if returned else "", 320),
                message_id=clip((returned.message_id or "") if returned else "", 255),
                diagnostic=clip(recipient.diagnostic or "", 300),
                client=str(ctx.connection.ip),
                ours="+".join(bounce.ours.evidence),
                first_seen=now,
                last_seen=now,
                expires=now + self.config.keep_days * DAY,
            )
            for recipient in hard[:MAX_RECORDED]
        )
