"""One SMTP connection as trustmilter sees it, stage by stage — no libmilter here.

The adapter (adapter.py) turns libmilter callbacks into calls on an
`SmtpSession` and its answers (`Step`, `Final`) back into milter replies.
Connection facts live on the session; everything about one message lives
on a `Transaction`, made at MAIL FROM and dropped at end of message or
abort, so several messages on one connection never mix.

Decisions: the connect, HELO and MAIL stages are checked at MAIL FROM
(only then is it known whether the client authenticated). A verdict that
no later result can change — a reject or tempfail forced by a rule whose
exemptions (`unless`) cannot appear any more — is given at RCPT TO, like
Postfix's smtpd_delay_reject, so the log names the recipient. Everything
else is decided at end of message.
"""

from __future__ import annotations

import ipaddress
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from trustmilter.app import App
from trustmilter.authresults import HEADER_NAME, ForgedHeader, build_header_value
from trustmilter.checks.base import Stage
from trustmilter.daemon.apps import AppHolder
from trustmilter.daemon.config import OnErrorConfig
from trustmilter.daemon.metrics import Metrics
from trustmilter.daemon.verdictlog import LEADING_KEYS, format_verdict_line
from trustmilter.evaluation import Evaluation, decide, forged_headers, run_checks
from trustmilter.model import Connection, Envelope, Facts, IPAddress, Message
from trustmilter.pipeline import result_name
from trustmilter.policy.evaluate import evaluate
from trustmilter.results import CheckResult, Outcome, Results
from trustmilter.signals import UPSTREAM_PREFIX, signal_prefixes
from trustmilter.verdict import Action, Reply, Verdict

verdict_log = logging.getLogger("trustmilter.verdict")

EARLY_STAGES = (Stage.CONNECT, Stage.HELO, Stage.MAIL)
RCPT_STAGES = (Stage.RCPT,)
LATE_STAGES = (Stage.DATA,)
# RFC 3463 5.3.4: message too big for system.
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds the fixed limit")
# RFC 3463 4.3.2: system not accepting network messages (for now).
BUSY = Reply(451, "4.3.2", "Too many large messages at once, please try again later")


class ClientKind(StrEnum):
    EXTERNAL = "external"
    AUTHENTICATED = "authenticated"
    TRUSTED = "trusted"


@dataclass(frozen=True, slots=True)
class Step:
    """The answer to one SMTP step."""

    action: Literal["continue", "accept", "reject", "tempfail", "discard"]
    reply: Reply | None = None


CONTINUE = Step("continue")


@dataclass(frozen=True, slots=True)
class Final:
    """End of message: the header edits to make, then the step to answer with."""

    step: Step
    insert_headers: tuple[tuple[str, str], ...] = ()  # at the top, in this order
    remove_headers: tuple[ForgedHeader, ...] = ()
    quarantine_reason: str | None = None


@dataclass(slots=True)
class Transaction:
    """One message, MAIL FROM to end of message."""

    app: App
    kind: ClientKind
    started: float
    mail_from: str
    authenticated_as: str | None = None
    rcpts: list[str] = field(default_factory=list)
    spool: tempfile.SpooledTemporaryFile[bytes] | None = None
    size: int = 0
    header_size: int = 0  # bytes of the spool up to and including the empty line
    oversize: bool = False
    results: Results = field(default_factory=Results)
    # Results of the RCPT-stage checks for the recipients that were accepted.
    rcpt_results: list[CheckResult] = field(default_factory=list)
    # `results` plus `rcpt_results`, kept as recipients are accepted: built anew
    # for each RCPT, it made a transaction quadratic in its recipients.
    accepted: Results | None = None
    early: Verdict | None = None
    early_logged: bool = False
    spent: float = 0.0  # seconds spent waiting on checks so far (the message budget)
    failed_stage: str | None = None  # a no-reply callback failed; answer on_error at EOM


class SmtpSession:
    """State and decisions for one SMTP connection; used from one thread at a time."""

    def __init__(
        self, apps: AppHolder, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._apps = apps
        self._metrics = metrics
        self._clock = clock
        self.ip: IPAddress | None = None
        self.hostname: str | None = None
        self.helo_name: str | None = None
        self.tx: Transaction | None = None
        # A no-reply callback before MAIL FROM failed (connect, HELO): without
        # its facts no message on this connection can be judged.
        self.failed_stage: str | None = None

    # --- connection -------------------------------------------------------

    def connect(self, hostname: str, address: str | None) -> None:
        """Record the client; an address that is not an IP is local submission."""
        try:
            self.ip = ipaddress.ip_address(address) if address else None
        except ValueError:
            self.ip = None
        # Postfix passes "[ip]" or "unknown" when the name did not verify.
        verified = hostname and not hostname.startswith("[") and hostname != "unknown"
        self.hostname = hostname if verified else None

    def helo(self, name: str) -> None:
        self.helo_name = name.strip() or None

    def client_kind(self, app: App, authenticated_as: str | None) -> ClientKind:
        """Trusted networks and local submission, then SASL users, then everyone else."""
        config = app.policy.milter
        if self.ip is None or any(
            self.ip.version == net.version and self.ip in net for net in config.networks()
        ):
            return ClientKind.TRUSTED
        if authenticated_as and config.skip_authenticated:
            return ClientKind.AUTHENTICATED
        return ClientKind.EXTERNAL

    def error_step(self, authenticated_as: str | None = None) -> Step:
        """The step to answer with when trustmilter itself failed."""
        config = self.on_error(authenticated_as)
        if config.action == "accept":
            return Step("accept")
        return Step("tempfail", config.reply.reply())

    def on_error(self, authenticated_as: str | None = None) -> OnErrorConfig:
        """The configured answer when trustmilter itself fails, for this client."""
        app = self.tx.app if self.tx else self._apps.current()
        kind = self.tx.kind if self.tx else self.client_kind(app, authenticated_as)
        return getattr(app.policy.milter.on_error, kind.value)  # type: ignore[no-any-return]

    # --- transaction ------------------------------------------------------

    def mail_from(
        self, address: str, params: dict[str, str | None], authenticated_as: str | None
    ) -> Step:
        """Start a message; check the connection, HELO and sender now."""
        self.abort()
        app = self._apps.current()
        tx = Transaction(
            app=app,
            kind=self.client_kind(app, authenticated_as),
            started=self._clock(),
            mail_from=address.strip().strip("<>"),
            authenticated_as=authenticated_as,
        )
        self.tx = tx
        self._metrics.in_flight(+1)
        if self.failed_stage is not None:  # its cause was logged when it happened
            return self._failed(tx, "", self.failed_stage, "mail")
        limit = app.policy.milter.max_message_size
        declared = params.get("SIZE")
        if limit and declared and declared.isdigit() and int(declared) > limit:
            tx.oversize = True  # RFC 1870 §6: refuse at MAIL FROM what cannot fit
            return self._refused(tx, "", Step("reject", TOO_BIG), "too_big", "mail")
        if tx.kind is not ClientKind.EXTERNAL:
            return CONTINUE
        tx.results = self._run(tx, self._facts(None), EARLY_STAGES, None)
        # Only the verdict matters before end of message: no header to build yet.
        verdict = evaluate(app.policy, tx.results)
        if _final(app, verdict, EARLY_STAGES):
            tx.early = verdict
        return CONTINUE

    def rcpt(self, address: str) -> Step:
        """Refuse a recipient when the answer is already certain, else check it.

        RCPT-stage checks (rate tiers, recipient domains) run for this
        recipient alone; a recipient they refuse leaves no trace in the
        message's results, so the others are judged without it.
        """
        tx = self._require_tx()
        recipient = address.strip().strip("<>")
        if tx.early is not None:
            tx.rcpts.append(recipient)
            if not tx.early_logged:
                tx.early_logged = True
                self._log(tx, "", tx.early, tx.results, "rcpt")
                self._count(tx.early, tx.results)
            return _refusal(tx.early)
        if tx.kind is not ClientKind.EXTERNAL:
            tx.rcpts.append(recipient)
            return CONTINUE
        prior = tx.accepted if tx.accepted is not None else tx.results.plus(tx.rcpt_results)
        facts = Facts(self._connection(), Envelope(tx.mail_from, (recipient,)), None)
        results = self._run(tx, facts, RCPT_STAGES, prior)
        verdict = evaluate(tx.app.policy, results)
        if _final(tx.app, verdict, (*EARLY_STAGES, *RCPT_STAGES)):
            self._log(tx, "", verdict, results, "rcpt", rcpts=(recipient,))
            self._count(verdict, results)
            return _refusal(verdict)
        tx.rcpts.append(recipient)
        tx.rcpt_results.extend(results.all()[len(prior.all()):])
        tx.accepted = results  # `prior` and this recipient's results, in that order
        return CONTINUE

    def header(self, name: str, value: bytes) -> None:
        """Spool one header field as it will be hashed (leading space kept)."""
        self._write(name.encode("ascii", "replace") + b":" + value + b"\r\n")

    def end_of_headers(self) -> None:
        self._write(b"\r\n")
        self._require_tx().header_size = self._require_tx().size

    def body(self, chunk: bytes) -> None:
        self._write(chunk)

    def end_of_message(self, queue_id: str) -> Final:
        """Decide the message and say which header edits and reply go with it."""
        tx = self._require_tx()
        try:
            if tx.failed_stage is not None:
                # The failure was logged when it happened; now answer on_error.
                return Final(self._failed(tx, queue_id, tx.failed_stage, "eom"))
            if tx.oversize:
                return Final(self._refused(tx, queue_id, Step("reject", TOO_BIG), "too_big", "eom"))
            if tx.kind is not ClientKind.EXTERNAL:
                # Unchecked: only the header is needed, to remove forgeries.
                headers = Message(self._read_spool(tx, tx.header_size))
                return self._finish_bypassed(tx, queue_id, forged_headers(tx.app, headers))
            with self._memory_for(tx) as granted:
                if not granted:
                    return Final(self._refused(tx, queue_id, Step("tempfail", BUSY), "busy", "eom"))
                return self._judge(tx, queue_id, Message(self._read_spool(tx)))
        finally:
            self.abort()

    def _judge(self, tx: Transaction, queue_id: str, message: Message) -> Final:
        """Run the end-of-message checks on the whole message and decide."""
        facts = self._facts(message)
        results = self._run(tx, facts, LATE_STAGES, tx.results.plus(tx.rcpt_results))
        evaluation = decide(tx.app, facts, results)
        return self._finish(tx, queue_id, evaluation)

    @contextmanager
    def _memory_for(self, tx: Transaction) -> Iterator[bool]:
        """A large-message slot for a message that spooled to disk (True), or False
        when none came free within the message's budget; small messages need none."""
        if tx.size <= tx.app.policy.milter.spool_memory_limit:
            yield True
            return
        slots = self._apps.large_messages
        with self._waiting(tx) as left:
            granted = slots.acquire(timeout=left)
        try:
            yield granted
        finally:
            if granted:
                slots.release()

    def abort(self) -> None:
        """Drop the current message (RSET, a new MAIL FROM, the client went away)."""
        if self.tx is None:
            return
        if self.tx.spool is not None:
            self.tx.spool.close()
        self.tx = None
        self._metrics.in_flight(-1)

    def record_failure(self, stage: str) -> None:
        """A no-reply callback failed: remember it, so end of message answers on_error."""
        if self.tx is not None:
            self.tx.failed_stage = stage
        else:
            self.failed_stage = stage

    # --- helpers ----------------------------------------------------------

    def _require_tx(self) -> Transaction:
        if self.tx is None:
            raise RuntimeError("milter protocol: no MAIL FROM before this step")
        return self.tx

    def _run(
        self, tx: Transaction, facts: Facts, stages: tuple[Stage, ...], prior: Results | None
    ) -> Results:
        """Run `stages` within what is left of the message's budget.

        The budget counts time spent waiting on our checks, not the time the
        client takes to send: a large message on a slow link is not penalised.
        """
        with self._waiting(tx) as left:
            return run_checks(tx.app, facts, stages, prior=prior, timeout=left)

    @contextmanager
    def _waiting(self, tx: Transaction) -> Iterator[float]:
        """What is left of the message's budget; the time spent inside counts against it."""
        started = self._clock()
        try:
            yield max(0.0, tx.app.policy.milter.message_timeout - tx.spent)
        finally:
            tx.spent += self._clock() - started

    def _connection(self) -> Connection:
        assert self.ip is not None  # external clients always have an address
        return Connection(ip=self.ip, hostname=self.hostname, helo=self.helo_name)

    def _facts(self, message: Message | None) -> Facts:
        tx = self._require_tx()
        return Facts(
            connection=self._connection(),
            envelope=Envelope(mail_from=tx.mail_from, rcpt_to=tuple(tx.rcpts)),
            message=message,
        )

    def _write(self, data: bytes) -> None:
        tx = self._require_tx()
        tx.size += len(data)
        limit = tx.app.policy.milter.max_message_size
        if tx.oversize or (limit and tx.size > limit):
            tx.oversize = True  # stop keeping it; end of message rejects 552 5.3.4
            return
        if tx.spool is None:
            # Mode 0600, in $TMPDIR; rolled over to disk past the memory limit.
            tx.spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by abort())
                max_size=tx.app.policy.milter.spool_memory_limit, prefix="trustmilter-"
            )
        tx.spool.write(data)

    @staticmethod
    def _read_spool(tx: Transaction, size: int = -1) -> bytes:
        """The spooled message from its start: `size` bytes, or all of it."""
        if tx.spool is None or tx.oversize:
            return b""
        tx.spool.seek(0)
        return tx.spool.read(size)

    def _refused(self, tx: Transaction, queue_id: str, step: Step, why: str, stage: str) -> Step:
        """Log and count a refusal the policy did not decide: the message is too big
        (`why` too_big) or no memory came free for it (busy). Returns `step`."""
        action = Action.REJECT if step.action == "reject" else Action.TEMPFAIL
        verdict = Verdict(action, step.reply, 0.0, (f"message.{why}",))
        self._log(tx, queue_id, verdict, tx.results, stage)
        self._count(verdict, tx.results)
        return step

    def _failed(self, tx: Transaction, queue_id: str, failed_stage: str, stage: str) -> Step:
        """The on_error answer for a message a no-reply callback failed on, with
        its verdict line (reason ``error.<failed_stage>``). Returns the step."""
        step = self.error_step(tx.authenticated_as)
        action = Action.ACCEPT if step.action == "accept" else Action.TEMPFAIL
        verdict = Verdict(action, step.reply, 0.0, (f"error.{failed_stage}",))
        self._log(tx, queue_id, verdict, tx.results, stage)
        self._count(verdict, tx.results)
        return step

    def _finish_bypassed(
        self, tx: Transaction, queue_id: str, forged: tuple[ForgedHeader, ...]
    ) -> Final:
        """Our own users and hosts: no trust checks, but forgeries still go (RFC 8601 §5)."""
        results = Results(_bypass_results(tx))
        verdict = Verdict(Action.ACCEPT, None, 0.0, (f"client.{tx.kind.value}",))
        self._log(tx, queue_id, verdict, results, "eom")
        self._count(verdict, results)
        inserted: tuple[tuple[str, str], ...] = ()
        if tx.kind is ClientKind.AUTHENTICATED:
            inserted = ((HEADER_NAME, build_header_value(tx.app.authserv_id, results)),)
        return Final(CONTINUE, insert_headers=inserted, remove_headers=forged)

    def _finish(self, tx: Transaction, queue_id: str, evaluation: Evaluation) -> Final:
        verdict = evaluation.verdict
        self._log(tx, queue_id, verdict, evaluation.results, "eom")
        self._count(verdict, evaluation.results)
        action = verdict.action
        if action in (Action.REJECT, Action.TEMPFAIL):
            return Final(Step(action.value, verdict.reply))  # type: ignore[arg-type]
        if action is Action.DISCARD:
            return Final(Step("discard"))
        return Final(
            CONTINUE,
            insert_headers=evaluation.headers_added,
            remove_headers=evaluation.headers_removed,
            quarantine_reason=verdict.quarantine_reason if action is Action.QUARANTINE else None,
        )

    def _count(self, verdict: Verdict, results: Results) -> None:
        self._metrics.message(verdict.action.value)
        for result in results.all():
            self._metrics.check_result(result.check, result.outcome.value)
        for hit in verdict.hits:
            self._metrics.rule_hit(hit.rule, hit.shadow)

    def _log(
        self,
        tx: Transaction,
        queue_id: str,
        verdict: Verdict,
        results: Results,
        stage: str,
        rcpts: Iterable[str] | None = None,
    ) -> None:
        pairs = self._verdict_pairs(tx, verdict, results, stage, rcpts or tx.rcpts)
        verdict_log.info(format_verdict_line(queue_id, pairs))

    def _verdict_pairs(
        self,
        tx: Transaction,
        verdict: Verdict,
        results: Results,
        stage: str,
        rcpts: Iterable[str],
    ) -> Iterable[tuple[str, str]]:
        yield "action", verdict.action.value
        yield "reply", str(verdict.reply) if verdict.reply else ""
        yield "client", str(self.ip) if self.ip else "local"
        yield "client_name", self.hostname or ""
        yield "helo", self.helo_name or ""
        yield "from", f"<{tx.mail_from}>"
        yield "rcpt", ",".join(f"<{r}>" for r in rcpts)
        yield "client_kind", tx.kind.value
        outcomes: dict[str, list[str]] = {}
        for result in results.all():
            outcomes.setdefault(result.check, []).append(result.outcome.value)
        # A result named like a connection field (the `helo` check) gets a suffix.
        yield from (
            (f"{check}_check" if check in LEADING_KEYS else check, ",".join(values))
            for check, values in outcomes.items()
        )
        # A check's one-line summary (the bounce check's), after all outcomes.
        for result in results.all():
            if "summary" in result.data:
                yield f"{result.check}_summary", result.data["summary"]
        yield "findings", ",".join(f.name for r in results.all() for f in r.findings)
        yield "score", f"{verdict.score:g}"
        yield "rules", ",".join(
            f"{hit.rule}(shadow)" if hit.shadow else hit.rule for hit in verdict.hits
        )
        yield "stage", stage
        yield "ms", str(round((self._clock() - tx.started) * 1000))


def _refusal(verdict: Verdict) -> Step:
    return Step("reject" if verdict.action is Action.REJECT else "tempfail", verdict.reply)


def _bypass_results(tx: Transaction) -> list[CheckResult]:
    """RFC 8601 §2.7.4: record the SMTP AUTH identity of our own users."""
    if tx.kind is ClientKind.AUTHENTICATED:
        return [CheckResult("auth", Outcome.PASS, method="auth",
                            props=(("smtp.auth", tx.authenticated_as or ""),))]
    return []


def _final(app: App, verdict: Verdict, done: Iterable[Stage]) -> bool:
    """True if a forced reject/tempfail cannot be undone by a later stage.

    Signals only accumulate, so a matched rule stays matched unless one of
    its `unless` signals could still appear: we look at which checks have
    not run yet (and at upstream A-R, read at end of message). Scores are
    never final (a later signal may score negative), only forced actions.
    """
    # Only a hit that itself forces the verdict's action can make it final:
    # a final tempfail beside an undecided reject must not become a 5xx.
    forcing = [
        hit for hit in verdict.hits
        if not hit.shadow and hit.action is verdict.action
        and hit.action in (Action.REJECT, Action.TEMPFAIL)
    ]
    if not forcing:
        return False  # most verdicts: nothing below needs working out
    done = set(done)
    later = {
        prefix
        for check in app.pipeline.checks
        if check.stage not in done
        for prefix in signal_prefixes(result_name(check))
    }
    later.add(UPSTREAM_PREFIX)
    rules = {rule.name: rule for rule in app.policy.rules}
    for hit in forcing:
        rule = rules.get(hit.rule)
        if rule is None:
            continue
        if not any(_could_match_later(pattern, later) for pattern in rule.unless):
            return True
    return False


def _could_match_later(pattern: str, prefixes: set[str]) -> bool:
    stem = pattern.rstrip("*")
    if pattern.endswith("*"):
        return any(stem.startswith(p) or p.startswith(stem) for p in prefixes)
    return any(pattern.startswith(p) for p in prefixes)
