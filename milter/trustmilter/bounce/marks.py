"""The marks of our own mail looked for on one bounce, for the milter and the CLI alike.

The bounce check and ``trustmilter explain-bounce`` both call `ownership`
with what they have: the milter the SMTP client's verified name and the
envelope recipients, the command the bounce's own header fields (its To,
Delivered-To, X-Original-To: where it was delivered). The token's verdict
comes from the replies check (checks/replies.py), which holds that key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from trustmilter.bounce.batv import return_path_mark
from trustmilter.bounce.explain import Bounce
from trustmilter.bounce.ours import Mark, decide, reporting_mta_mark
from trustmilter.bounce.signature import dkim_marks, returned_copy
from trustmilter.lookup import Resolver


@dataclass(frozen=True, slots=True)
class OwnMail:
    """What tells our mail from others': our domains (DKIM d=, the returned
    From), our MTAs' names, and the BATV secret (None: no tags to verify)."""

    own_domains: tuple[str, ...] = ()
    own_mtas: tuple[str, ...] = ()
    batv_secret: bytes | None = None


@dataclass(frozen=True, slots=True)
class Arrival:
    """How the bounce reached us: the verified name of the client that delivered
    it (None: unknown or unverified) and the addresses it was delivered to
    (our return paths, when it is a bounce of ours)."""

    client_name: str | None = None
    return_paths: tuple[str, ...] = ()


def ownership(bounce: Bounce, raw: bytes, own: OwnMail, arrival: Arrival,
              token: Mark | None, resolver: Resolver | None, now: float) -> Bounce:
    """`bounce` with its `ours` decided from every mark that can be checked here:
    the reporting MTA, our token (`token`, from the replies check), our DKIM
    signature on the returned copy (with `resolver`; None: not looked up) and a
    BATV return path."""
    marks: list[Mark] = []
    reporter = reporting_mta_mark(bounce.reporting_mta, arrival.client_name, own.own_mtas)
    if reporter is not None:
        marks.append(reporter)
    if token is not None:
        marks.append(token)
    if resolver is not None and own.own_domains:
        copy = returned_copy(raw)
        if copy is not None:
            marks.extend(dkim_marks(copy, own.own_domains, resolver, now))
    if own.batv_secret is not None:
        returned = bounce.returned
        paths = (*arrival.return_paths, *((returned.return_path,)
                                          if returned and returned.return_path else ()))
        tagged = return_path_mark(paths, own.batv_secret, now)
        if tagged is not None:
            marks.append(tagged)
    return replace(bounce, ours=decide(bounce.own, marks))
