"""One message, MAIL FROM to end of message: the engine every front end drives.

    tx = Transaction(app, client, sender, authenticated_as, declared_size)
    tx.opening()          -> Refusal | None      at MAIL FROM
    tx.recipient(rcpt)    -> Refusal | None      at each RCPT TO
    tx.finish(message)    -> MessageOutcome      at end of message
    tx.refuse(why)        -> MessageOutcome      end of message refused without a rule
    tx.failed(...)        -> (disposition, reply) our own failure, answered by on_error

The pymilter adapter (daemon/session.py), `trustmilter check`, the
benchmark and the tests call exactly this; nothing here knows pymilter,
and no thread is started here (the checks run on the App's executor).

Decisions, as Postfix's smtpd_delay_reject makes them: the connect, HELO
and MAIL stages are checked at MAIL FROM (only then is it known whether
the client authenticated). A verdict that no later result can change (a
reject or tempfail forced by a rule whose exemptions cannot appear any
more: policy/finality.py) is given at the first RCPT TO, so the log names
a recipient, and every recipient is refused. RCPT-stage checks (rate
tiers, recipient domains) run for each recipient alone: a recipient they
refuse leaves no trace in the message's results. Everything else is
decided at end of message. Mail submitted without SMTP (`Client.non_smtp`:
sendmail(1) through Postfix's non_smtpd_milters) can only be refused as a
whole: every refusal waits for end of message.

Our own clients (trusted networks, local submission, and SASL users when
`milter.skip_authenticated`) are not judged: no trust checks, no
Authentication-Results verdict, no scoring of inbound signals; forged
headers are still removed and an authenticated user's identity is
recorded (RFC 8601 §2.7.4). Their mail is outbound: with
`milter.outbound_checks` (the default) it runs, at the same steps, the
checks whose spec declares them for outbound mail (`CheckSpec.direction`),
and the policy evaluates what those report with the same rules, so a rule
can refuse outbound mail at RCPT TO or at end of message; their header
requests and state effects are applied as for inbound mail. Outbound
checks see the header only at end of message (our own mail is not read
whole). When no outbound check reported anything (each skipped, or none
is enabled), the message is passed and reported exactly as unchecked mail.

Every decision is reported once to the `observer` as a VerdictRecord (the
daemon writes the verdict line and counts metrics from it). What the
checks ask to remember (their effects: state/effects.py) is written once
the message is decided, and only for delivered mail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from trustmilter.checks.base import Direction, Stage
from trustmilter.engine.budget import Budget
from trustmilter.engine.client import Client, ClientKind, classify, direction_of, on_error
from trustmilter.engine.edits import HeaderEdits, header_edits
from trustmilter.engine.ledger import Ledger
from trustmilter.engine.outcome import Disposition, MessageOutcome, Refusal
from trustmilter.engine.record import VerdictRecord
from trustmilter.engine.runner import CheckRunner
from trustmilter.mail.addresses import envelope_address
from trustmilter.model import Connection, Envelope, Facts, Message
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.finality import is_final
from trustmilter.results import CheckResult, Outcome, Results
from trustmilter.state.base import StateError
from trustmilter.verdict import Action, Reply, Verdict

if TYPE_CHECKING:
    from trustmilter.app import App
    from trustmilter.authresults import ForgedHeader
    from trustmilter.config.daemon import OnErrorConfig

EARLY_STAGES = (Stage.CONNECT, Stage.HELO, Stage.MAIL)
RCPT_STAGES = (Stage.RCPT,)
LATE_STAGES = (Stage.DATA,)
# RFC 3463 5.3.4: message too big for system.
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds the fixed limit")
# RFC 3463 4.3.2: system not accepting network messages (for now).
BUSY = Reply(451, "4.3.2", "Too many large messages at once, please try again later")

# The result that records a SASL user's identity (RFC 8601 §2.7.4 "auth").
IDENTITY_RESULT = "auth"

Observer = Callable[[VerdictRecord], None]
NO_QUEUE_ID = "NOQUEUE"  # as Postfix writes a message without one
log = logging.getLogger("trustmilter.engine")


class Transaction:
    """One message; used from one thread at a time."""

    def __init__(
        self,
        app: App,
        client: Client,
        sender: str,
        authenticated_as: str | None = None,
        declared_size: int | None = None,
        *,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.client = client
        self.mail_from = envelope_address(sender)
        self.authenticated_as = authenticated_as
        self.declared_size = declared_size
        self.kind = classify(app.settings.milter, client, authenticated_as)
        # Inbound (judged), outbound (our own clients: outbound checks only) or
        # None (our own clients, outbound checks off: no check at all).
        self.direction = direction_of(app.settings.milter, self.kind)
        self.rcpts: list[str] = []
        self.budget = Budget(app.settings.milter.message_timeout, clock)
        self._observer = observer
        self._clock = clock
        self._started = clock()
        self._runner = CheckRunner(app, self.direction or Direction.INBOUND)
        self._ledger = Ledger()
        self._early: Verdict | None = None
        self._early_reported = False

    @property
    def checked(self) -> bool:
        """Whether this message is judged (external clients), so read whole; our own
        clients' mail is passed, or runs the outbound checks on its header."""
        return self.kind is ClientKind.EXTERNAL

    def on_error(self) -> OnErrorConfig:
        """The configured answer when trustmilter itself fails on this message."""
        return on_error(self.app.settings.milter, self.kind)

    # --- the SMTP steps ---------------------------------------------------

    def opening(self) -> Refusal | None:
        """MAIL FROM: refuse what cannot fit; check the connection, HELO and sender."""
        limit = self.app.settings.milter.max_message_size
        if limit and self.declared_size is not None and self.declared_size > limit:
            # RFC 1870 §6: refuse at MAIL FROM what cannot fit.
            return self._refusal("too_big", "mail")[0]
        if self.direction is None:
            return None
        results = self._run(self._facts(None), EARLY_STAGES, Results(self._identity()))
        self._ledger.opened(results)
        # Only the verdict matters before end of message: no header to build yet.
        verdict = evaluate(self.app.policy, results)
        if self._is_final(verdict, EARLY_STAGES):
            self._early = verdict
        return None

    def recipient(self, address: str) -> Refusal | None:
        """RCPT TO: refuse when the answer is already certain, else check this recipient."""
        recipient = envelope_address(address)
        if self._early is not None:
            self.rcpts.append(recipient)
            if not self._early_reported:
                self._early_reported = True
                self._report("", self._early, self._ledger.opening, "rcpt")
            return Refusal.of(self._early.action, self._early.reply)
        if self.direction is None:
            self.rcpts.append(recipient)
            return None
        prior = self._ledger.accepted
        facts = Facts(self._connection(), Envelope(self.mail_from, (recipient,)), None)
        results = self._run(facts, RCPT_STAGES, prior)
        verdict = evaluate(self.app.policy, results)
        if self._is_final(verdict, (*EARLY_STAGES, *RCPT_STAGES)):
            self._report("", verdict, results, "rcpt", rcpts=(recipient,))
            return Refusal.of(verdict.action, verdict.reply)
        self.rcpts.append(recipient)
        self._ledger.accept(results)
        return None

    def finish(self, message: Message, queue_id: str = "") -> MessageOutcome:
        """End of message: judge the whole message (or run the outbound checks on our
        own, or pass it) and say what to do.

        For our own clients `message` may be the header alone: forgeries are
        looked for, and the outbound checks read the header.
        """
        if self.direction is None:
            return self._pass(message, queue_id)
        facts = self._facts(message)
        results = self._run(facts, LATE_STAGES, self._ledger.accepted)
        verdict = evaluate(self.app.policy, results)
        if self.direction is Direction.OUTBOUND and not _shows_anything(results, verdict):
            return self._pass(message, queue_id)
        disposition = Disposition.of(verdict.action)
        delivered = disposition in (Disposition.ACCEPT, Disposition.QUARANTINE)
        if delivered:
            self._apply_effects(results, queue_id)
        edits = self._edits(message, results, verdict) if delivered else None
        record = self._report(queue_id, verdict, results, "eom",
                              forged=edits.forged if edits is not None else ())
        if edits is None:
            return MessageOutcome(disposition, verdict.reply, record)
        return MessageOutcome(
            disposition,
            None,
            record,
            add_headers=edits.add,
            remove_headers=edits.remove,
            quarantine_reason=(
                verdict.quarantine_reason if disposition is Disposition.QUARANTINE else None
            ),
        )

    def _edits(self, message: Message, results: Results, verdict: Verdict) -> HeaderEdits:
        """The header edits of a delivered message (made before its record, which
        names the forgeries they remove)."""
        if self.direction is Direction.OUTBOUND:
            # Not judged: no A-R verdict, only a SASL user's identity (RFC 8601 §2.7.4).
            return header_edits(
                self.app, message, Results(self._identity()), verdict.headers,
                authentication_results=self.kind is ClientKind.AUTHENTICATED,
            )
        return header_edits(self.app, message, results, verdict.headers)

    def refuse(self, why: Literal["too_big", "busy"], queue_id: str = "") -> MessageOutcome:
        """End of message refused by no policy rule: the message grew too big, or no
        large-message slot came free within its budget."""
        refusal, record = self._refusal(why, "eom", queue_id)
        return MessageOutcome(refusal.disposition, refusal.reply, record)

    def failed(self, failed_stage: str, stage: str, queue_id: str = ""
               ) -> tuple[Disposition, Reply | None]:
        """Our own failure in a step that could not answer (connect, HELO, a header):
        report it (reason ``error.<failed_stage>``) and give the on_error answer."""
        action, reply = self.on_error().answer()
        verdict = Verdict(action, reply, 0.0, (f"error.{failed_stage}",))
        self._report(queue_id, verdict, self._ledger.opening, stage, by_checks=False)
        return Disposition.of(action), reply

    # --- helpers ----------------------------------------------------------

    def _apply_effects(self, results: Results, queue_id: str) -> None:
        """Write what the checks asked to remember (state/effects.py): once, after the
        verdict, for delivered mail only. A store that fails costs the memory,
        not the message: one warning line."""
        store = self.app.state
        if store is None:
            return
        for result in results.all():
            for effect in result.effects:
                try:
                    effect.apply(store)
                except StateError as error:
                    log.warning("%s: %s: %s not remembered: %s", queue_id or NO_QUEUE_ID,
                                result.check, effect.describe(), error)

    def _pass(self, message: Message, queue_id: str) -> MessageOutcome:
        """Our own users and hosts: no trust checks, but forgeries still go (RFC 8601 §5)."""
        results = Results(self._identity())
        verdict = Verdict(Action.ACCEPT, None, 0.0, (f"client.{self.kind.value}",))
        edits = header_edits(
            self.app, message, results,
            authentication_results=self.kind is ClientKind.AUTHENTICATED,
        )
        record = self._report(queue_id, verdict, results, "eom", by_checks=False,
                              forged=edits.forged)
        return MessageOutcome(
            Disposition.ACCEPT, None, record, add_headers=edits.add, remove_headers=edits.remove
        )

    def _identity(self) -> list[CheckResult]:
        """RFC 8601 §2.7.4: record the SMTP AUTH identity of our own users."""
        if self.kind is ClientKind.AUTHENTICATED:
            return [CheckResult(IDENTITY_RESULT, Outcome.PASS, method="auth",
                                props=(("smtp.auth", self.authenticated_as or ""),))]
        return []

    def _refusal(self, why: Literal["too_big", "busy"], stage: str, queue_id: str = ""
                 ) -> tuple[Refusal, VerdictRecord]:
        """Report a refusal the policy did not decide."""
        action, reply = (Action.REJECT, TOO_BIG) if why == "too_big" else (Action.TEMPFAIL, BUSY)
        verdict = Verdict(action, reply, 0.0, (f"message.{why}",))
        record = self._report(queue_id, verdict, self._ledger.opening, stage, by_checks=False)
        return Refusal.of(action, reply), record

    def _is_final(self, verdict: Verdict, done: tuple[Stage, ...]) -> bool:
        if verdict.action not in (Action.REJECT, Action.TEMPFAIL):
            return False  # most verdicts: the later checks need not be worked out
        if self.client.non_smtp:
            # Postfix cannot refuse a sender or recipient of non-SMTP mail ("can't
            # reject recipient in non-smtpd(8) submission": the message would be
            # retried for ever); the refusal is given at end of message, whole.
            return False
        return is_final(self.app.policy, verdict, self._runner.later_prefixes(done),
                        self._runner.later_explainable(done))

    def _run(self, facts: Facts, stages: tuple[Stage, ...], prior: Results) -> Results:
        """Run `stages` within what is left of the message's budget."""
        with self.budget.waiting() as left:
            return self._runner.run(facts, stages, prior, left)

    def _connection(self) -> Connection:
        """The client as the checks see it: a stranger, or our own client (outbound)."""
        if self.direction is Direction.OUTBOUND:
            return self.client.outbound_connection(self.authenticated_as)
        return self.client.connection()

    def _facts(self, message: Message | None) -> Facts:
        return Facts(
            connection=self._connection(),
            envelope=Envelope(mail_from=self.mail_from, rcpt_to=tuple(self.rcpts)),
            message=message,
        )

    def _report(
        self,
        queue_id: str,
        verdict: Verdict,
        results: Results,
        stage: str,
        rcpts: tuple[str, ...] | None = None,
        *,
        by_checks: bool = True,
        forged: tuple[ForgedHeader, ...] = (),
    ) -> VerdictRecord:
        """Report one decision. Its direction is the message's when the checks
        decided it; a message passed unchecked, or refused without a rule, has none."""
        record = VerdictRecord(
            queue_id=queue_id,
            verdict=verdict,
            results=results,
            stage=stage,
            client=self.client,
            kind=self.kind,
            mail_from=self.mail_from,
            rcpts=rcpts or tuple(self.rcpts),
            elapsed_ms=round((self._clock() - self._started) * 1000),
            direction=self.direction if by_checks else None,
            forged=forged,
        )
        if self._observer is not None:
            self._observer(record)
        return record


def _shows_anything(results: Results, verdict: Verdict) -> bool:
    """Whether the outbound checks reported anything: a result that is not
    skipped, a header or state request, or a verdict other than a plain accept.
    Otherwise the message is passed as unchecked mail, with today's line."""
    if verdict.action is not Action.ACCEPT or verdict.hits or verdict.headers:
        return True
    return any(
        r.outcome is not Outcome.SKIPPED or r.headers or r.effects
        for r in results.all() if r.check != IDENTITY_RESULT
    )
