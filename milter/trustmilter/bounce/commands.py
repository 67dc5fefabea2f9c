"""``trustmilter explain-bounce FILE [--json]``: a bounce, told in plain words.

Exit status 0 for any input that could be read (bounce or not), 1 when the
file cannot be read. Readable output is English for now; issue 5 adds the
translations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trustmilter.bounce.explain import Bounce, explain


def add_explain_parser(commands: Any) -> None:
    """Register ``explain-bounce`` on the CLI's subparsers."""
    parser = commands.add_parser("explain-bounce", help="explain a bounce (non-delivery report)")
    parser.add_argument("message", help="the bounce (.eml), or - for standard input")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--own-domain", action="append", default=[], metavar="DOMAIN",
                        help="a domain of ours: tells our own outbound mail (repeat)")


def report(bounce: Bounce) -> str:
    """The readable English report."""
    if not bounce.is_bounce:
        lines = ["This message is not a bounce."]
        lines.extend(f"note: {p}" for p in bounce.problems)
        return "\n".join(lines)
    origin = "our own outbound mail" if bounce.own else "mail not sent by us (or unknown)"
    source = f" (from {bounce.reporting_mta_source})" if bounce.reporting_mta_source else ""
    lines = [
        f"Bounce ({bounce.format or 'unknown format'}) reported by "
        f"{bounce.reporting_mta or 'an unknown server'}{source}.",
        f"It reports on {origin}.",
    ]
    if bounce.cause is not None:
        lines.append(f"Cause: {bounce.cause.value}.")
    for r in bounce.recipients:
        m = r.meaning
        kind = {"permanent": "permanent failure, will not be retried",
                "temporary": "temporary failure, may be retried",
                "success": "success"}.get(m.class_name or "", "unknown class")
        lines.append(f"Recipient {r.address}: {r.action or 'no action given'}, {kind}")
        if r.status:
            parts = [p for p in (m.subject_meaning, m.detail_meaning) if p]
            lines.append(f"  status {r.status}" + (f": {' / '.join(parts)}" if parts else ""))
        if r.smtp_code:
            lines.append(f"  SMTP reply code {r.smtp_code}")
        lines.append(f"  cause: {r.cause.value}")
        if r.diagnostic:
            lines.append(f"  server said: {r.diagnostic}")
        if r.remote_mta:
            lines.append(f"  remote server: {r.remote_mta}")
    returned = bounce.returned
    if returned is not None:
        lines.append("Returned message:")
        for label, value in (("Message-ID", returned.message_id), ("Subject", returned.subject),
                             ("From", returned.from_), ("To", returned.to),
                             ("Date", returned.date)):
            if value:
                lines.append(f"  {label}: {value}")
    lines.extend(f"note: {p}" for p in bounce.problems)
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
    print(json.dumps(bounce.to_json()) if args.json else report(bounce))
    return 0
