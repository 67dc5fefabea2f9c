"""The pymilter adapter: the only module that imports `Milter`.

It turns libmilter callbacks into `SmtpSession` calls and the engine's
answers into milter replies and header edits. It decides nothing itself;
the engine's one vocabulary (`Disposition`) becomes Milter codes here and
nowhere else.

Protocol economy: connect, HELO, header, end-of-headers and body are
`@noreply` (the MTA does not wait for us), DATA and unknown commands are
not asked for at all, header values arrive as raw bytes with their
leading space (P_HDR_LEADSPC) because DKIM and ARC hash them exactly.

Never lose mail: every callback is guarded; an exception is logged once
with its traceback and answered with the policy's `on_error` reply
(default 451 4.3.0). A failure in a no-reply callback is remembered and
answered at end of message.

Input that is not UTF-8: SMTP without SMTPUTF8 is ASCII (RFC 5321 §2.4,
RFC 6531 §3.2), but MTAs pass 8-bit bytes on (Postfix with
``smtputf8_enable = no``). The envelope addresses and parameters arrive
as bytes (`envfrom_raw`, `envrcpt_raw`) and header values stay bytes; we
decode with ``surrogateescape``, so the session sees `str` and the sender's
bytes survive (logged and stored as ``\\xNN``). An 8-bit address is judged
like any other: its domain is still checked, and what is wrong with the
rest is for the checks and the policy to weigh. pymilter's C layer decodes
the HELO name, the client's host name and header field *names* itself,
strictly, before any of our code runs; when that fails it never calls us,
and `callbacks.py` hands the raw bytes to `undecodable` instead.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import Milter

from trustmilter.daemon.metrics import Metrics
from trustmilter.daemon.session import Answer, ErrorAnswer, SmtpSession
from trustmilter.engine import Disposition, MessageOutcome
from trustmilter.verdict import Reply

log = logging.getLogger(__name__)

# The actions we use: add/insert A-R and verdict headers, delete forged
# A-R (chgheader), and quarantine (Postfix HOLD).
ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.QUARANTINE

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(stage: str, replies: bool = True) -> Callable[[F], F]:
    """Catch everything a callback raises: log it once, answer on_error."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def wrapper(self: TrustMilter, *args: Any) -> Any:
            self.stage = stage
            try:
                return func(self, *args)
            except Exception:
                log.exception("%s callback failed for client %s", stage, self.session.ip)
                self.metrics.callback_error(stage)
                if not replies:
                    self.session.record_failure(stage)
                    return Milter.CONTINUE
                try:
                    answer = self.session.error_answer(self.getsymval("{auth_authen}"))
                except Exception:  # even the fallback failed: the safe answer
                    log.exception("on_error lookup failed")
                    self.setreply("451", "4.3.0", "Temporary local problem")
                    return Milter.TEMPFAIL
                return self.answer(answer)

        return wrapper  # type: ignore[return-value]

    return wrap


@Milter.header_leading_space
class TrustMilter(Milter.Base):  # type: ignore[misc]
    """One instance per SMTP connection (pymilter calls the factory per connection)."""

    def __init__(self, session: SmtpSession, metrics: Metrics) -> None:
        super().__init__()
        self.session = session
        self.metrics = metrics
        # The last callback libmilter made: tells `undecodable` which argument it was.
        self.stage: str | None = None

    @Milter.noreply
    @_guarded("connect", replies=False)
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        # (ip, port) for inet, (ip, port, flow, scope) for inet6; a path or
        # nothing for local submission, which the session treats as trusted.
        # Postfix's non_smtpd_milters see sendmail(1)'s mail from port 0.
        address = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else hostaddr
        address = address if isinstance(address, str) else None
        port = hostaddr[1] if isinstance(hostaddr, tuple) and len(hostaddr) > 1 else None
        self.session.connect(hostname, address, port if isinstance(port, int) else None)
        return Milter.CONTINUE

    @Milter.noreply
    @_guarded("helo", replies=False)
    def hello(self, hostname: str) -> int:
        self.session.helo(hostname)
        return Milter.CONTINUE

    @_guarded("mail")
    def envfrom(self, sender: str, *params: str) -> int:
        args = Milter.param2dict(list(params))
        return self.answer(
            self.session.mail_from(sender, args, self.getsymval("{auth_authen}") or None)
        )

    @_guarded("rcpt")
    def envrcpt(self, recipient: str, *params: str) -> int:
        return self.answer(self.session.rcpt(recipient))

    def envfrom_raw(self, sender: bytes, *params: bytes) -> int:
        """MAIL FROM as libmilter passes it: bytes, decoded here (see the module docstring)."""
        return self.envfrom(_text(sender), *map(_text, params))

    def envrcpt_raw(self, recipient: bytes, *params: bytes) -> int:
        """RCPT TO as libmilter passes it: bytes, decoded here."""
        return self.envrcpt(_text(recipient), *map(_text, params))

    def undecodable(self, raw: bytes) -> None:
        """pymilter could not decode a callback's argument and did not call us.

        Which callback it was follows from the last one we saw (libmilter
        calls them in protocol order):
        - none yet: connect's host name. Without the client's address no
          message can be judged: on_error, as for any failed connect.
        - connect, HELO, or a message ended: a HELO/EHLO name. Judged as the
          bytes the client sent (surrogate escapes): the HELO checks weigh a
          name that is not even UTF-8, instead of a silent "no HELO".
        - MAIL, RCPT or a header: a header field name (RFC 5322 §3.6.8 allows
          only printable ASCII; Postfix never passes one, Sendmail might).
          Its value never reached us either, so the message cannot be judged
          as sent: on_error at end of message.
        """
        text = _text(raw)
        if self.stage in ("connect", "helo", "eom", "abort"):
            self.hello(text)
            return
        missed = "connect" if self.stage is None else "header"
        log.warning("%s: %s that is not UTF-8 from client %s: %r; answering on_error",
                    missed, "host name" if missed == "connect" else "header field name",
                    self.session.ip, raw)
        self.metrics.callback_error(missed)
        self.session.record_failure(missed)

    @Milter.noreply
    @Milter.decode("bytes")
    @_guarded("header", replies=False)
    def header(self, name: str, value: bytes) -> int:
        self.session.header(name, value)
        return Milter.CONTINUE

    @Milter.noreply
    @_guarded("eoh", replies=False)
    def eoh(self) -> int:
        self.session.end_of_headers()
        return Milter.CONTINUE

    @Milter.noreply
    @_guarded("body", replies=False)
    def body(self, chunk: bytes) -> int:
        self.session.body(chunk)
        return Milter.CONTINUE

    @_guarded("eom")
    def eom(self) -> int:
        outcome = self.session.end_of_message(self.getsymval("i") or "")
        if isinstance(outcome, ErrorAnswer):
            return self.answer(outcome)
        return self.finish(outcome)

    def abort(self) -> int:
        self.stage = "abort"
        self.session.abort()
        return Milter.CONTINUE

    def close(self) -> int:
        self.session.abort()
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def unknown(self, cmd: str) -> int:
        return Milter.CONTINUE

    # --- replies ------------------------------------------------------------

    def finish(self, outcome: MessageOutcome) -> int:
        """End of message: header edits in an order that keeps indexes valid, then
        quarantine, then the reply. Delivered mail answers CONTINUE (at end of
        message the same as ACCEPT)."""
        # chgheader counts occurrences of the name: delete from the last one.
        for forged in sorted(outcome.remove_headers, key=lambda f: f.index, reverse=True):
            self.chgheader(forged.name, forged.index, "")
        # insheader at 0, 1, ...: ours end up first, in order (RFC 8601 §5: at the top).
        # With P_HDR_LEADSPC negotiated the MTA writes values byte for byte,
        # so the space after the colon is ours to send.
        for position, (name, value) in enumerate(outcome.add_headers):
            self.addheader(name, " " + value, position)
        if outcome.quarantine_reason:
            self.quarantine(outcome.quarantine_reason)
        if outcome.disposition in (Disposition.ACCEPT, Disposition.QUARANTINE):
            return Milter.CONTINUE
        return self.reply(outcome.disposition, outcome.reply)

    def answer(self, answer: Answer) -> int:
        """The Milter code for an answer at MAIL, RCPT or on error (None: go on)."""
        if answer is None:
            return Milter.CONTINUE
        return self.reply(answer.disposition, answer.reply)

    def reply(self, disposition: Disposition, reply: Reply | None) -> int:
        """Set the SMTP reply of a refusal; the Milter code of `disposition`."""
        if reply is not None and disposition in _REPLIED:
            self.setreply(str(reply.code), reply.dsn, reply.text)
        return _MILTER_CODES[disposition]


_REPLIED = (Disposition.REJECT, Disposition.TEMPFAIL)
_MILTER_CODES = {
    Disposition.ACCEPT: Milter.ACCEPT,
    Disposition.QUARANTINE: Milter.CONTINUE,  # the hold is an action at end of message
    Disposition.DISCARD: Milter.DISCARD,
    Disposition.TEMPFAIL: Milter.TEMPFAIL,
    Disposition.REJECT: Milter.REJECT,
}


def _text(raw: bytes) -> str:
    """What the client sent, as text: bytes that are not UTF-8 become surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")

