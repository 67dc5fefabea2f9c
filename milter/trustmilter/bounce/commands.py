"""The bounce subcommands: ``explain-bounce`` and ``bounces list|forget``.

``trustmilter explain-bounce FILE [--json] [--lang en|de|fr|ja]``: a bounce,
told in plain words. Exit status 0 for any input that could be read
(bounce or not), 1 when the file or the policy cannot be read. Our own
domains come from the policy (``checks.bounce.own_domains``) and
``--own-domain``. The readable output is translated (``--lang``, else the
locale; see i18n.py); ``--json`` stays English.

``trustmilter bounces list`` shows the hard bounces (5.1.x) of our own mail
that the milter recorded in the state store, latest first; ``bounces
forget ADDR`` drops one (the address was corrected, or the record was a
forged bounce's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustmilter import compat
from trustmilter.bounce.causes import EXPLANATIONS
from trustmilter.bounce.explain import Bounce, BounceRecipient, explain
from trustmilter.command_support import (
    CommandFailure,
    common_options,
    guarded,
    output,
    policy_from,
    printable,
    state_store,
    utc,
)
from trustmilter.i18n import N_, translator
from trustmilter.mail.addresses import normalise_address
from trustmilter.state.base import HardBounce


def add_explain_parser(commands: Any) -> None:
    """Register ``explain-bounce`` on the CLI's subparsers."""
    parser = commands.add_parser("explain-bounce", help="explain a bounce (non-delivery report)")
    parser.add_argument("message", help="the bounce (.eml), or - for standard input")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--own-domain", action="append", default=[], metavar="DOMAIN",
                        help="a domain of ours, besides the policy's own_domains (repeat)")
    parser.add_argument("--policy", type=Path,
                        help="policy.yaml, for checks.bounce.own_domains (default: built-in)")
    parser.add_argument("--lang", help="language of the readable report: en, de, fr or ja "
                        "(default: the locale, else English)")


# Whether the reporter gave up (RFC 3464 §2.3.3), in plain words.
_GIVEN_UP = N_("permanent failure, will not be retried")
_STILL_TRYING = N_("temporary failure, may be retried")
_DELIVERED = N_("not a failure")
# Where a recipient's code came from.
_SOURCES = {"report": N_("stated in the report"),
            "diagnostic": N_("from the server's reply"),
            "inferred": N_("inferred from the reply's words")}


def _recipient_lines(r: BounceRecipient, tr: Callable[[str], str]) -> list[str]:
    kind = tr(_DELIVERED if not r.failed else _GIVEN_UP if r.permanent else _STILL_TRYING)
    lines = [tr(N_("Recipient %(address)s: %(action)s, %(kind)s")) % {
        "address": r.address, "action": r.action or tr(N_("no action given")), "kind": kind}]
    if r.original_recipient and r.final_recipient and (
            r.original_recipient.lower() != r.final_recipient.lower()):
        lines.append("  " + tr(N_("the address used; delivery failed at %(final)s")) % {
            "final": r.final_recipient})
    if r.status:
        m = r.meaning
        parts = [tr(p) for p in (m.subject_meaning, m.detail_meaning) if p]
        source = f" ({tr(_SOURCES[r.status_source])})" if r.status_source else ""
        lines.append("  " + tr(N_("status %(status)s")) % {"status": r.status} + source
                     + (f": {' / '.join(parts)}" if parts else ""))
    if r.smtp_code:
        lines.append("  " + tr(N_("SMTP reply code %(code)s")) % {"code": r.smtp_code})
    if r.cause is not None:
        lines.append("  " + tr(N_("cause: %(cause)s")) % {"cause": tr(r.cause.value)})
        lines.append("    " + tr(EXPLANATIONS[r.cause]))
    if r.diagnostic:
        lines.append("  " + tr(N_("server said: %(text)s")) % {"text": r.diagnostic})
    if r.remote_mta:
        lines.append("  " + tr(N_("remote server: %(host)s")) % {"host": r.remote_mta})
    return lines


def report(bounce: Bounce, tr: Callable[[str], str] = N_) -> str:
    """The readable report in `tr`'s language (English by default)."""
    if not bounce.is_bounce:
        lines = [tr(N_("This message is not a bounce."))]
        lines.extend(tr(N_("note: %(problem)s")) % {"problem": p} for p in bounce.problems)
        return "\n".join(lines)
    origin = tr(N_("our own outbound mail") if bounce.own
                else N_("mail not sent by us (or unknown)"))
    server = bounce.reporting_mta or tr(N_("an unknown server"))
    head = (tr(N_("Bounce (%(format)s) reported by %(server)s (from %(source)s)."))
            if bounce.reporting_mta_source else
            tr(N_("Bounce (%(format)s) reported by %(server)s.")))
    lines = [
        head % {"format": bounce.format or tr(N_("unknown format")), "server": server,
                "source": bounce.reporting_mta_source},
        tr(N_("It reports on %(origin)s.")) % {"origin": origin},
    ]
    if bounce.cause is not None:
        # The Cause values are msgids (causes.py).
        lines.append(tr(N_("Cause: %(cause)s.")) % {"cause": tr(bounce.cause.value)})
    for r in bounce.recipients:
        lines.extend(_recipient_lines(r, tr))
    returned = bounce.returned
    if returned is not None:
        lines.append(tr(N_("Returned message:")))
        # Header field names stay as they are: they are what the reader will search for.
        for label, value in (("Message-ID", returned.message_id), ("Subject", returned.subject),
                             ("From", returned.from_), ("To", returned.to),
                             ("Date", returned.date)):
            if value:
                lines.append(f"  {label}: {value}")
    lines.extend(tr(N_("note: %(problem)s")) % {"problem": p} for p in bounce.problems)
    return "\n".join(lines)


def run_explain_bounce(args: argparse.Namespace) -> int:
    """Explain one bounce; 1 when it or the policy cannot be read."""
    return guarded(_explain_bounce, args)


def _explain_bounce(args: argparse.Namespace) -> None:
    own = (*policy_from(args.policy).checks.bounce.own_domains, *args.own_domain)
    try:
        raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    except OSError as error:
        raise CommandFailure(f"{args.message}: cannot read message: {error.strerror}") from error
    compat.install()  # a stranger's bounce: the parsers must stay linear
    bounce = explain(raw, own)
    print(json.dumps(bounce.to_json()) if args.json else report(bounce, translator(args.lang)))


# ---- bounces list|forget ------------------------------------------------------


def add_bounces_parser(commands: Any) -> None:
    """``bounces list|forget ADDR`` on the CLI's subparsers."""
    common = common_options("print one JSON document")
    parser = commands.add_parser("bounces", help="hard bounces of our own mail, as recorded")
    actions = parser.add_subparsers(dest="bounces_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common],
                       help="recipients our mail could not reach (5.1.x), latest first")
    forget = actions.add_parser("forget", parents=[common],
                                help="drop the record of one recipient address")
    forget.add_argument("address", metavar="ADDR")


def run_bounces(args: argparse.Namespace, now: Callable[[], float] = time.time) -> int:
    """``bounces list|forget``; 1 after one line on standard error."""
    return guarded(lambda parsed: _bounces(parsed, now()), args)


def _bounces(args: argparse.Namespace, now: float) -> None:
    settings = policy_from(args.policy)
    with state_store(settings) as store:
        if args.bounces_command == "list":
            records = store.hard_bounces(now)
            output(args, {"bounces": [record.as_json() for record in records]},
                   [_bounce_line(record) for record in records]
                   or ["no hard bounces recorded"])
            return
        address = normalise_address(args.address)
        if not store.forget_bounce(address):
            raise CommandFailure(f"{address}: no hard bounce recorded for this address")
        output(args, {"forgotten": address}, [f"{address}: forgotten"])


def _bounce_line(record: HardBounce) -> str:
    times = (f"{record.bounces} bounces, first {utc(record.first_seen)}, "
             if record.bounces > 1 else "")
    return printable(
        f"<{record.recipient}>  {record.status} {record.cause}  last={utc(record.last_seen)}  "
        f"{times}our sender=<{record.sender or '-'}>  reported by {record.reporting_mta or '?'}"
        f" via {record.client or '?'}  message-id={record.message_id or '-'}"
    )
