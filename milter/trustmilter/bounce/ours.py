"""Does a bounce return our own mail? Three answers, and what each rests on.

A bounce names the mail it returns, and anyone can write one: a forged
bounce whose returned copy is From one of our addresses costs nothing
(backscatter does it by accident). So "ours" has three values:

- ``yes``: a mark a forger cannot make says so (`Evidence`):
  ``reporting-mta`` (the report comes from one of our own MTAs, by name,
  and was delivered to us by one of them, a name our MTA verified),
  ``token`` (the returned header carries our keyed token, valid for its
  Message-ID and Date), ``dkim`` (our DKIM signature on the returned copy
  verifies against our published key) or ``return-path`` (the bounce goes
  to a BATV return path whose tag our key verifies);
- ``claims``: nothing proves it, but the bounce says so: the returned
  copy is From (or its Return-Path is) one of our domains, or it names one
  of our MTAs as the reporter without coming from it, or it carries a mark
  of ours that no longer verifies (an expired return-path tag, a
  signature the reporter's re-encoding broke);
- ``no``: it claims nothing of ours, or it carries a mark of ours that is
  wrong (a token that is not ours for that message, a return-path tag
  whose hash is not ours): forged or damaged, so not ours.

What "yes" does not prove: every mark travels in the mail we send, so a
recipient of one of our messages can return it in a bounce of their own
(a replay), for as long as the mark stays valid (a return-path tag a week,
a token or signature for as long as the key). Only what is bound to the
mark is proved: that the returned message is one we sent, not that the
recipients the report names refused it. The reporting-MTA mark alone is
free of this: the report comes from our own system.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from trustmilter.i18n import N_, Text, text

OursValue = Literal["yes", "claims", "no"]
Evidence = Literal["reporting-mta", "token", "dkim", "return-path"]
# What a mark found: it proves the mail ours, it only claims so, or it
# contradicts the claim (a mark of ours that is wrong).
MarkStatus = Literal["proves", "claims", "contradicts"]
# The order evidence is named in, the strongest first.
EVIDENCE_ORDER: tuple[Evidence, ...] = ("reporting-mta", "token", "dkim", "return-path")


@dataclass(frozen=True, slots=True)
class Mark:
    """One mark of ours looked for on a bounce, and what was found."""

    kind: Evidence
    status: MarkStatus
    # In our words, kept as a sentence and its values: explain-bounce shows it
    # in the reader's language, --json and the logs in English.
    detail: Text


# What a detail is about, for the readable report: the marks' kinds, the
# returned copy's From, and whatever else names itself.
DETAIL_KINDS = {
    "reporting-mta": N_("reporting MTA"), "token": N_("token"), "dkim": N_("DKIM signature"),
    "return-path": N_("return path"), "from": N_("returned From"),
}


@dataclass(frozen=True, slots=True)
class Detail:
    """What one mark looked at showed: what it is about, and in our words."""

    kind: str  # an Evidence kind, or "from"
    text: Text

    def line(self) -> str:
        """``dkim: our signature ... verifies ...``: --json and the logs (English)."""
        return f"{self.kind}: {self.text.render()}"

    def render(self, tr: Callable[[str], str] = N_) -> str:
        """The readable line in `tr`'s language."""
        kind = DETAIL_KINDS.get(self.kind)
        return f"{tr(kind) if kind else self.kind}: {self.text.render(tr)}"


@dataclass(frozen=True, slots=True)
class Ours:
    """Whether the bounce returns our own mail: the value, the evidence that
    proves it (empty unless ``yes``) and what each mark looked at showed."""

    value: OursValue = "no"
    evidence: tuple[Evidence, ...] = ()
    details: tuple[Detail, ...] = ()

    @property
    def word(self) -> str:
        """``yes:token+dkim``, ``claims`` or ``no``: one token for a summary line."""
        return f"yes:{'+'.join(self.evidence)}" if self.value == "yes" else self.value

    @property
    def lines(self) -> tuple[str, ...]:
        """`details` in English, one line each (--json, the logs)."""
        return tuple(detail.line() for detail in self.details)

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "evidence": list(self.evidence),
                "details": list(self.lines)}


CLAIMED_FROM = text(N_("the returned message is from one of our domains"))


def decide(claimed_from: bool, marks: Iterable[Mark]) -> Ours:
    """The answer from the marks: any proof makes it ours; else a contradicted
    mark makes it not ours; else any claim (the returned copy's From among
    them) makes it "claims"."""
    found = list(marks)
    details = tuple(Detail(m.kind, m.detail) for m in found)
    if claimed_from:
        details += (Detail("from", CLAIMED_FROM),)
    proved = {m.kind for m in found if m.status == "proves"}
    if proved:
        return Ours("yes", tuple(k for k in EVIDENCE_ORDER if k in proved), details)
    if any(m.status == "contradicts" for m in found):
        return Ours("no", (), details)
    if claimed_from or any(m.status == "claims" for m in found):
        return Ours("claims", (), details)
    return Ours("no", (), details)


# ---- the reporting MTA ------------------------------------------------------------


def host_name(value: str | None) -> str:
    """A host name in the form compared: ``MX.Example.ORG.`` and ``[mx.example.org]``
    both read ``mx.example.org`` (the reader has taken RFC 3464's "dns;" off)."""
    return (value or "").strip().strip("[]").strip().rstrip(".").lower()


def is_own_mta(name: str | None, own_mtas: tuple[str, ...]) -> bool:
    """`name` is one of `own_mtas`: a host name, or ".example.org" for every host under it."""
    host = host_name(name)
    if not host:
        return False
    for entry in own_mtas:
        wanted = entry.strip().rstrip(".").lower()
        if wanted.startswith("."):
            if host.endswith(wanted):
                return True
        elif host == wanted:
            return True
    return False


def reporting_mta_mark(reporter: str | None, client_name: str | None,
                       own_mtas: tuple[str, ...]) -> Mark | None:
    """Whether one of our MTAs reported it: named as the reporter, and the client
    that delivered the bounce is one of ours by the name our MTA verified
    (Postfix gives a client's name only when its address and name confirm each
    other). The report's own words alone are a claim: anyone can write them."""
    if not is_own_mta(reporter, own_mtas):
        return None
    if is_own_mta(client_name, own_mtas):
        return Mark("reporting-mta", "proves", text(
            N_("reported by our %(reporter)s, delivered by our %(client)s"),
            reporter=host_name(reporter), client=host_name(client_name)))
    if not host_name(client_name):
        return Mark("reporting-mta", "claims", text(
            N_("names our %(reporter)s as its reporter, but came from a client with no "
               "verified name"), reporter=host_name(reporter)))
    return Mark("reporting-mta", "claims", text(
        N_("names our %(reporter)s as its reporter, but came from %(client)s"),
        reporter=host_name(reporter), client=host_name(client_name)))


# ---- our token, as the replies check verifies it -----------------------------------


def token_mark(returned_id: str | None, forged: bool) -> Mark | None:
    """The token's mark from its verdict (checks/replies.py `TokenEvidence`): the
    Message-ID a valid token was found for, and whether a token that is not
    ours was seen."""
    if returned_id is not None:
        return Mark("token", "proves", text(N_("our token, valid for the returned %(message_id)s"),
                                            message_id=f"<{returned_id}>"))
    if forged:
        return Mark("token", "contradicts",
                    text(N_("a token that is not ours for the returned message")))
    return None
