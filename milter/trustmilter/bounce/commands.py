"""The bounce subcommands: ``explain-bounce`` and ``bounces list|forget``.

``trustmilter explain-bounce FILE [--json] [--lang en|de|fr|ja]``: a bounce,
told in plain words. Exit status 0 for any input that could be read
(bounce or not), 1 when the file or the policy cannot be read. Our own
domains come from the policy (``checks.bounce.own_domains``) and
``--own-domain``. The readable output is translated (``--lang``, else the
locale; see i18n.py); ``--json`` stays English.

Whether it returns our own mail is decided as the milter decides it
(bounce/marks.py), with the policy's keys and DNS: our token
(``checks.replies.key_file``), our DKIM signature on the returned copy
(its key looked up with the policy's ``dns``), a BATV return path in the
bounce's To, Delivered-To or X-Original-To (``checks.bounce.batv_key_file``),
and our own MTA as the reporter when ``--client-name`` gives the verified
name of the host that delivered it (a file holds no SMTP session). A mark
whose key cannot be read is left out, and said so.

``trustmilter bounces list`` shows the hard bounces (5.1.x) of our own mail
that the milter recorded in the state store, latest first, each with what
proved the bounce ours; ``bounces forget ADDR`` drops one (the address was
corrected, or the record was a forged bounce's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from trustmilter import compat, policy_search
from trustmilter.bounce.causes import EXPLANATIONS
from trustmilter.bounce.explain import Bounce, BounceRecipient, explain
from trustmilter.bounce.marks import Arrival, OwnMail, ownership
from trustmilter.bounce.ours import Detail, Evidence, token_mark
from trustmilter.bounce.stored import message_in_file
from trustmilter.checks.bounce import batv_secret
from trustmilter.checks.replies import bounce_token
from trustmilter.command_support import (
    CommandFailure,
    common_options,
    guarded,
    output,
    policy_from,
    printable,
    state_policy,
    state_store,
    utc,
)
from trustmilter.config.settings import Settings
from trustmilter.domains import DomainTools
from trustmilter.i18n import N_, command_translator, text
from trustmilter.lookup.resolver import build_resolver
from trustmilter.mail.addresses import normalise_address, parse_address_list
from trustmilter.mail.mime import walk as walk_mime
from trustmilter.mail.token import KeyFileError, load_key
from trustmilter.model import Message
from trustmilter.state.base import HardBounce


def add_explain_parser(commands: Any) -> None:
    """Register ``explain-bounce`` on the CLI's subparsers."""
    parser = commands.add_parser("explain-bounce", help="explain a bounce (non-delivery report)")
    parser.add_argument("message", help="the bounce (.eml), or - for standard input")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--own-domain", action="append", default=[], metavar="DOMAIN",
                        help="a domain of ours, besides the policy's own_domains (repeat)")
    parser.add_argument("--policy", type=Path,
                        help="policy.yaml: our domains, MTAs and keys, and the DNS servers "
                             f"our DKIM key is looked up with ({policy_search.DEFAULT_HELP})")
    parser.add_argument("--client-name", metavar="HOST",
                        help="the verified name of the host that delivered the bounce "
                             "(Postfix's client_name): one of own_mtas makes its report ours")
    parser.add_argument("--lang", help="language of the readable report: en, de, fr or ja "
                        "(default: the locale, else English)")


# Whether the reporter gave up (RFC 3464 §2.3.3), in plain words.
_GIVEN_UP = N_("permanent failure, will not be retried")
_STILL_TRYING = N_("temporary failure, may be retried")
_DELIVERED = N_("not a failure")
# What proved a bounce ours, in plain words (bounce/ours.py's evidence).
_EVIDENCE: dict[Evidence, str] = {
    "reporting-mta": N_("reported by one of our own MTAs"),
    "token": N_("the returned header carries our valid token"),
    "dkim": N_("our DKIM signature on the returned copy verifies"),
    "return-path": N_("sent to a BATV return path our key verifies"),
}
# A mark whose key could not be read (the key file's problem, as the error says it).
_NOT_CHECKED = N_("not checked: %(error)s")
# RFC 3464 §2.3.3 action values, in plain words; any other is shown as written.
_ACTIONS = {"failed": N_("failed"), "delayed": N_("delayed"), "delivered": N_("delivered"),
            "relayed": N_("relayed"), "expanded": N_("expanded")}
# Where the reporting server's name was read: a header field keeps its name.
_MTA_SOURCES = {"body": N_("the body text")}
# Where a recipient's code came from.
_STATUS_SOURCES = {"report": N_("stated in the report"),
                   "diagnostic": N_("from the server's reply"),
                   "inferred": N_("inferred from the reply's words")}


def _recipient_lines(r: BounceRecipient, tr: Callable[[str], str]) -> list[str]:
    kind = tr(_DELIVERED if not r.failed else _GIVEN_UP if r.permanent else _STILL_TRYING)
    lines = [tr(N_("Recipient %(address)s: %(action)s, %(kind)s")) % {
        "address": r.address,
        "action": _shown(r.action, _ACTIONS, tr) or tr(N_("no action given")), "kind": kind}]
    if r.original_recipient and r.final_recipient and (
            r.original_recipient.lower() != r.final_recipient.lower()):
        lines.append("  " + tr(N_("the address used; delivery failed at %(final)s")) % {
            "final": r.final_recipient})
    if r.status:
        m = r.meaning
        parts = [tr(p) for p in (m.subject_meaning, m.detail_meaning) if p]
        source = f" ({tr(_STATUS_SOURCES[r.status_source])})" if r.status_source else ""
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
        lines.extend(tr(N_("note: %(problem)s")) % {"problem": n.render(tr)}
                     for n in bounce.notes)
        return "\n".join(lines)
    server = bounce.reporting_mta or tr(N_("an unknown server"))
    head = (tr(N_("Bounce (%(format)s) reported by %(server)s (from %(source)s)."))
            if bounce.reporting_mta_source else
            tr(N_("Bounce (%(format)s) reported by %(server)s.")))
    lines = [
        head % {"format": bounce.format or tr(N_("unknown format")), "server": server,
                "source": _shown(bounce.reporting_mta_source, _MTA_SOURCES, tr)},
        _ours_line(bounce, tr),
    ]
    # What each mark showed: our words around the bounce's values.
    lines.extend(f"  - {detail.render(tr)}" for detail in bounce.ours.details)
    if bounce.cause is not None:
        # The Cause values are msgids (causes.py); docs/rules.md §6 names them.
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
    lines.extend(tr(N_("note: %(problem)s")) % {"problem": n.render(tr)} for n in bounce.notes)
    return "\n".join(lines)


def _shown(value: str | None, words: dict[str, str], tr: Callable[[str], str]) -> str | None:
    """`value` in plain words when it is one of `words`, else as the bounce wrote it."""
    if value is None:
        return None
    known = words.get(value.lower())
    return tr(known) if known is not None else value


def _ours_line(bounce: Bounce, tr: Callable[[str], str]) -> str:
    ours = bounce.ours
    if ours.value == "yes":
        evidence = "; ".join(tr(_EVIDENCE[kind]) for kind in ours.evidence)
        return tr(N_("It returns our own mail, verifiably: %(evidence)s.")) % {
            "evidence": evidence}
    if ours.value == "claims":
        return tr(N_("It claims to return our own mail; nothing proves it."))
    return tr(N_("It does not return our own mail, or nothing tells."))


def run_explain_bounce(args: argparse.Namespace) -> int:
    """Explain one bounce; 1 when it or the policy cannot be read."""
    return guarded(_explain_bounce, args)


def _explain_bounce(args: argparse.Namespace) -> None:
    settings = policy_from(args.policy)
    own = (*settings.checks.bounce.own_domains, *args.own_domain)
    try:
        raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    except OSError as error:
        raise CommandFailure(f"{args.message}: cannot read message: {error.strerror}") from error
    compat.install()  # a stranger's bounce: the parsers must stay linear
    # A file, not an MTA's handover: the message after any blank lines it begins with.
    raw = message_in_file(raw)
    bounce = explain(raw, own)
    if bounce.is_bounce:
        bounce = _with_marks(bounce, raw, settings, own, args.client_name)
    if args.json:
        print(json.dumps(bounce.to_json()))
    else:
        print(report(bounce, command_translator(args.lang)))


def _with_marks(bounce: Bounce, raw: bytes, settings: Settings, own_domains: tuple[str, ...],
                client_name: str | None) -> Bounce:
    """`bounce` with the marks of our mail checked as the milter checks them."""
    config = settings.checks.bounce
    skipped: list[Detail] = []
    secret = None
    try:
        secret = batv_secret(config)
    except KeyFileError as error:
        skipped.append(Detail("return-path", text(_NOT_CHECKED, error=error)))
    token = None
    replies = settings.checks.replies
    if replies.key_file:
        try:
            verdict = bounce_token(load_key(replies.key_file), replies.token_header,
                                   walk_mime(raw))
            token = token_mark(verdict.returned_id, verdict.forged)
        except KeyFileError as error:
            skipped.append(Detail("token", text(_NOT_CHECKED, error=error)))
    resolver = build_resolver(settings.dns, domains=DomainTools()) if own_domains else None
    delivered_to = tuple(
        address for name in ("To", "Delivered-To", "X-Original-To")
        for address in _addresses(raw, name))
    marked = ownership(bounce, raw, OwnMail(own_domains, config.own_mtas, secret),
                       Arrival(client_name, delivered_to), token, resolver, time.time())
    return replace(marked, ours=replace(marked.ours,
                                        details=(*marked.ours.details, *skipped)))


def _addresses(raw: bytes, name: str) -> list[str]:
    """The addresses of the bounce's own header field `name` (where it was delivered)."""
    return [mailbox.address for value in Message(raw).header_values(name)
            for mailbox in parse_address_list(value).mailboxes]


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
    settings = state_policy(args)
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
        f"  ours={record.ours or '?'}"
    )
