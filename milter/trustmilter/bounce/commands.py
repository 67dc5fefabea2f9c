"""``trustmilter explain-bounce FILE [--json] [--lang en|de|fr|ja]``: a bounce, told in plain words.

Exit status 0 for any input that could be read (bounce or not), 1 when the
file cannot be read. The readable output is translated (``--lang``, else the
locale; see i18n.py); ``--json`` stays English.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustmilter.bounce.explain import Bounce, explain
from trustmilter.i18n import N_, translator


def add_explain_parser(commands: Any) -> None:
    """Register ``explain-bounce`` on the CLI's subparsers."""
    parser = commands.add_parser("explain-bounce", help="explain a bounce (non-delivery report)")
    parser.add_argument("message", help="the bounce (.eml), or - for standard input")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--own-domain", action="append", default=[], metavar="DOMAIN",
                        help="a domain of ours: tells our own outbound mail (repeat)")
    parser.add_argument("--lang", help="language of the readable report: en, de, fr or ja "
                        "(default: the locale, else English)")


# RFC 3463 §3.1 classes, in plain words.
_KINDS = {"permanent": N_("permanent failure, will not be retried"),
          "temporary": N_("temporary failure, may be retried"),
          "success": N_("success")}


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
        # The Cause values are msgids (explain.py); SEED-RULES §6 names them.
        lines.append(tr(N_("Cause: %(cause)s.")) % {"cause": tr(bounce.cause.value)})
    for r in bounce.recipients:
        m = r.meaning
        kind = tr(_KINDS.get(m.class_name or "", N_("unknown class")))
        lines.append(tr(N_("Recipient %(address)s: %(action)s, %(kind)s")) % {
            "address": r.address, "action": r.action or tr(N_("no action given")),
            "kind": kind})
        if r.status:
            parts = [p for p in (m.subject_meaning, m.detail_meaning) if p]
            lines.append("  " + tr(N_("status %(status)s")) % {"status": r.status}
                         + (f": {' / '.join(parts)}" if parts else ""))
        if r.smtp_code:
            lines.append("  " + tr(N_("SMTP reply code %(code)s")) % {"code": r.smtp_code})
        lines.append("  " + tr(N_("cause: %(cause)s")) % {"cause": tr(r.cause.value)})
        if r.diagnostic:
            lines.append("  " + tr(N_("server said: %(text)s")) % {"text": r.diagnostic})
        if r.remote_mta:
            lines.append("  " + tr(N_("remote server: %(host)s")) % {"host": r.remote_mta})
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
    """Explain one bounce; 1 when it cannot be read."""
    try:
        raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    except OSError as error:
        print(f"trustmilter: {args.message}: cannot read message: {error.strerror}",
              file=sys.stderr)
        return 1
    bounce = explain(raw, tuple(args.own_domain))
    print(json.dumps(bounce.to_json()) if args.json else report(bounce, translator(args.lang)))
    return 0
