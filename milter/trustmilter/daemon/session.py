"""One SMTP connection as the milter sees it — no libmilter here, and no decisions.

The adapter (adapter.py) turns libmilter callbacks into calls on an
`SmtpSession`; the session keeps what belongs to the connection and the
MTA's way of handing over a message, and leaves every decision to the
engine's `Transaction` (engine/transaction.py), made at MAIL FROM and
dropped at end of message or abort, so several messages on one
connection never mix. What stays here:

- the connection facts (client address, verified name, HELO);
- the spool: the message as it arrives, in memory up to
  `milter.spool_memory_limit`, then in a 0600 temporary file; past
  `milter.max_message_size` it stops keeping bytes and the message is
  refused at end of message;
- the large-message slots: a message that spooled to disk is judged only
  with one of `milter.large_message_slots`, waited for within its budget;
- the failure memory: a no-reply callback (connect, HELO, header, body)
  that failed is answered with `milter.on_error` at the next step that
  can answer;
- the verdict line and metrics, written from each decision's record.
"""

from __future__ import annotations

import ipaddress
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from trustmilter.config.daemon import OnErrorConfig
from trustmilter.daemon.apps import AppHolder
from trustmilter.daemon.metrics import Metrics
from trustmilter.daemon.verdictlog import format_verdict_line
from trustmilter.engine import Client, Disposition, MessageOutcome, Refusal, Transaction
from trustmilter.engine.client import classify, on_error
from trustmilter.engine.record import VerdictRecord
from trustmilter.model import IPAddress, Message
from trustmilter.verdict import Reply

verdict_log = logging.getLogger("trustmilter.verdict")


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """The answer when trustmilter itself failed: accept, or tempfail with a reply."""

    disposition: Disposition
    reply: Reply | None = None


Answer = Refusal | ErrorAnswer | None  # None: go on


@dataclass(slots=True)
class Spool:
    """One message's bytes as the MTA hands them over."""

    memory_limit: int
    size_limit: int
    file: tempfile.SpooledTemporaryFile[bytes] | None = None
    size: int = 0
    header_size: int = 0  # bytes up to and including the empty line
    oversize: bool = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.oversize or (self.size_limit and self.size > self.size_limit):
            self.oversize = True  # stop keeping it; end of message refuses 552 5.3.4
            return
        if self.file is None:
            # Mode 0600, in $TMPDIR; rolled over to disk past the memory limit.
            self.file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by close())
                max_size=self.memory_limit, prefix="trustmilter-"
            )
        self.file.write(data)

    def end_of_headers(self) -> None:
        self.write(b"\r\n")
        self.header_size = self.size

    def read(self, size: int = -1) -> bytes:
        """The spooled message from its start: `size` bytes, or all of it."""
        if self.file is None or self.oversize:
            return b""
        self.file.seek(0)
        return self.file.read(size)

    @property
    def large(self) -> bool:
        """Whether the message outgrew memory (and needs a large-message slot)."""
        return self.size > self.memory_limit

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class SmtpSession:
    """State for one SMTP connection; used from one thread at a time."""

    def __init__(
        self, apps: AppHolder, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._apps = apps
        self._metrics = metrics
        self._clock = clock
        self.ip: IPAddress | None = None
        self.hostname: str | None = None
        self.helo_name: str | None = None
        self.non_smtp = False
        self.tx: Transaction | None = None
        self.spool: Spool | None = None
        # A no-reply callback before MAIL FROM failed (connect, HELO): without
        # its facts no message on this connection can be judged.
        self.failed_stage: str | None = None
        # A no-reply callback of the current message failed (header, body).
        self.tx_failed_stage: str | None = None

    # --- connection -------------------------------------------------------

    def connect(self, hostname: str, address: str | None, port: int | None = None) -> None:
        """Record the client; an address that is not an IP is local submission, and
        so is port 0: Postfix's non_smtpd_milters get sendmail(1)'s mail that way."""
        try:
            self.ip = ipaddress.ip_address(address) if address else None
        except ValueError:
            self.ip = None
        self.non_smtp = self.ip is None or port == 0
        # Postfix passes "[ip]" or "unknown" when the name did not verify.
        verified = hostname and not hostname.startswith("[") and hostname != "unknown"
        self.hostname = hostname if verified else None

    def helo(self, name: str) -> None:
        self.helo_name = name.strip() or None

    def client(self) -> Client:
        return Client(ip=self.ip, hostname=self.hostname, helo=self.helo_name,
                      non_smtp=self.non_smtp)

    def error_answer(self, authenticated_as: str | None = None) -> ErrorAnswer:
        """The answer to give when trustmilter itself failed."""
        action, reply = self.on_error(authenticated_as).answer()
        return ErrorAnswer(Disposition.of(action), reply)

    def on_error(self, authenticated_as: str | None = None) -> OnErrorConfig:
        """The configured answer when trustmilter itself fails, for this client."""
        if self.tx is not None:
            return self.tx.on_error()
        config = self._apps.current().settings.milter
        return on_error(config, classify(config, self.client(), authenticated_as))

    # --- transaction ------------------------------------------------------

    def mail_from(
        self, address: str, params: dict[str, str | None], authenticated_as: str | None
    ) -> Answer:
        """Start a message; the engine checks the connection, HELO and sender now."""
        self.abort()
        app = self._apps.current()
        declared = params.get("SIZE")
        tx = Transaction(
            app,
            self.client(),
            address,
            authenticated_as,
            int(declared) if declared and declared.isdigit() else None,
            observer=self._observe,
            clock=self._clock,
        )
        self.tx = tx
        limits = app.settings.milter
        self.spool = Spool(limits.spool_memory_limit, limits.max_message_size)
        self._metrics.in_flight(+1)
        if self.failed_stage is not None:  # its cause was logged when it happened
            return ErrorAnswer(*tx.failed(self.failed_stage, "mail"))
        return tx.opening()

    def rcpt(self, address: str) -> Answer:
        return self._require_tx().recipient(address)

    def header(self, name: str, value: bytes) -> None:
        """Spool one header field as it will be hashed (leading space kept)."""
        self._require_spool().write(name.encode("ascii", "replace") + b":" + value + b"\r\n")

    def end_of_headers(self) -> None:
        self._require_spool().end_of_headers()

    def body(self, chunk: bytes) -> None:
        self._require_spool().write(chunk)

    def end_of_message(self, queue_id: str) -> MessageOutcome | ErrorAnswer:
        """Hand the spooled message to the engine and return its outcome."""
        tx = self._require_tx()
        spool = self._require_spool()
        try:
            if self.tx_failed_stage is not None:
                # Its cause was logged when it happened; now answer on_error.
                return ErrorAnswer(*tx.failed(self.tx_failed_stage, "eom", queue_id))
            if spool.oversize:
                return tx.refuse("too_big", queue_id)
            if not tx.checked:
                # Unchecked: only the header is needed, to remove forgeries.
                return tx.finish(Message(spool.read(spool.header_size)), queue_id)
            with self._memory_for(tx, spool) as granted:
                if not granted:
                    return tx.refuse("busy", queue_id)
                return tx.finish(Message(spool.read()), queue_id)
        finally:
            self.abort()

    @contextmanager
    def _memory_for(self, tx: Transaction, spool: Spool) -> Iterator[bool]:
        """A large-message slot for a message that spooled to disk (True), or False
        when none came free within the message's budget; small messages need none."""
        if not spool.large:
            yield True
            return
        slots = self._apps.large_messages
        with tx.budget.waiting() as left:
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
        if self.spool is not None:
            self.spool.close()
        self.tx = None
        self.spool = None
        self.tx_failed_stage = None
        self._metrics.in_flight(-1)

    def record_failure(self, stage: str) -> None:
        """A no-reply callback failed: remember it, so the next answer is on_error."""
        if self.tx is not None:
            self.tx_failed_stage = stage
        else:
            self.failed_stage = stage

    # --- helpers ----------------------------------------------------------

    def _require_tx(self) -> Transaction:
        if self.tx is None:
            raise RuntimeError("milter protocol: no MAIL FROM before this step")
        return self.tx

    def _require_spool(self) -> Spool:
        if self.spool is None:
            raise RuntimeError("milter protocol: no MAIL FROM before this step")
        return self.spool

    def _observe(self, record: VerdictRecord) -> None:
        """The verdict line and the metrics of one decision."""
        verdict_log.info(format_verdict_line(record.queue_id, record.pairs()))
        verdict = record.verdict
        self._metrics.message(verdict.action)
        for result in record.results.all():  # StrEnums: each is its value
            self._metrics.check_result(result.check, result.outcome)
        for hit in verdict.hits:
            self._metrics.rule_hit(hit.rule, hit.shadow)
