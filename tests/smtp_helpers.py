"""SMTP client helpers for the Postfix tests, and a null milter to test the rig.

`smtp_session()` opens a real SMTP session to the private Postfix and uses
XCLIENT (Postfix XCLIENT_README) to present the client address and HELO a
test wants; `send()` runs one transaction and records the reply at each
stage, so a test can say *where* a message was refused.

`python tests/smtp_helpers.py null-milter SPEC EVENTS_FILE` runs a tiny
pymilter that takes no trust decisions: it records what Postfix told it
(one JSON object per line) and obeys a few triggers, so the rig's own tests
show that delivery, the hold queue, replies and XCLIENT work before
trustmilter is involved.
"""

from __future__ import annotations

import contextlib
import json
import smtplib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

SMTP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: code and text (multi-line text joined by newlines)."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass
class Outcome:
    """The replies to one transaction; `stage` is where it ended."""

    mail: Reply
    rcpts: list[Reply] = field(default_factory=list)
    data: Reply | None = None

    @property
    def stage(self) -> str:
        """mail, rcpt (no recipient accepted), or data."""
        if self.mail.code >= 400:
            return "mail"
        if self.data is None:
            return "rcpt"
        return "data"

    @property
    def final(self) -> Reply:
        """The reply that decided the transaction."""
        if self.data is not None:
            return self.data
        failed = [r for r in self.rcpts if r.code >= 400]
        return failed[0] if failed else self.mail


def _reply(pair: tuple[int, bytes]) -> Reply:
    return Reply(pair[0], pair[1].decode(errors="replace"))


@contextlib.contextmanager
def smtp_session(
    port: int,
    client_ip: str = "192.0.2.10",
    helo: str = "mail.example.com",
    client_name: str = "[UNAVAILABLE]",
    xclient: bool = True,
    login: str | None = None,
) -> Iterator[smtplib.SMTP]:
    """An SMTP session from `client_ip` saying EHLO `helo` (via XCLIENT), SASL-
    authenticated as `login` if given (XCLIENT LOGIN: Postfix's {auth_authen})."""
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=SMTP_TIMEOUT)
    try:
        smtp.ehlo()
        if xclient:
            sasl = f" LOGIN={login}" if login else ""
            code, text = smtp.docmd(
                "XCLIENT", f"ADDR={client_ip} NAME={client_name} HELO={helo}{sasl}"
            )
            # XCLIENT answers with a fresh greeting; the session starts over.
            assert code == 220, f"XCLIENT refused: {code} {text!r}"
        smtp.ehlo(helo)
        yield smtp
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()


def send(
    smtp: smtplib.SMTP, mail_from: str, rcpts: Sequence[str], message: bytes
) -> Outcome:
    """One transaction, stopping where the server refuses; RSET afterwards if it did."""
    outcome = Outcome(_reply(smtp.mail(mail_from)))
    if outcome.mail.code >= 400:
        smtp.rset()
        return outcome
    for rcpt in rcpts:
        outcome.rcpts.append(_reply(smtp.rcpt(rcpt)))
    if not any(r.code < 400 for r in outcome.rcpts):
        smtp.rset()
        return outcome
    try:
        outcome.data = _reply(smtp.data(message))
    except smtplib.SMTPDataError as error:
        # DATA itself refused (354 never came).
        outcome.data = Reply(error.smtp_code, error.smtp_error.decode(errors="replace"))
    if outcome.data.code >= 400:
        with contextlib.suppress(smtplib.SMTPException):
            smtp.rset()
    return outcome


def send_one(
    port: int,
    message: bytes,
    mail_from: str = "alice@example.com",
    rcpts: Sequence[str] = ("support@example.org",),
    client_ip: str = "192.0.2.10",
    helo: str = "mail.example.com",
) -> Outcome:
    """A whole session with a single transaction."""
    with smtp_session(port, client_ip, helo) as smtp:
        return send(smtp, mail_from, rcpts, message)


# ---- the null milter ------------------------------------------------------


def run_null_milter(spec: str, events_path: str) -> None:
    """Serve `spec` until SIGTERM; log each callback to `events_path` (JSON lines).

    Triggers: a recipient whose local part is ``reject`` gets ``550 5.7.1``
    at RCPT TO; a Subject containing ``hold`` is quarantined; every message
    that reaches end of data gets ``X-Null-Milter: seen`` at the top.
    """
    import threading

    import Milter  # only here: importing pymilter is the subprocess's business

    lock = threading.Lock()

    def record(**event: Any) -> None:
        with lock, open(events_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")

    class NullMilter(Milter.Base):  # type: ignore[misc]
        def __init__(self) -> None:
            self.subject = ""

        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            record(event="connect", hostname=hostname, addr=str(hostaddr[0]))
            return Milter.CONTINUE

        def hello(self, name: str) -> int:
            record(event="helo", helo=name)
            return Milter.CONTINUE

        def envfrom(self, sender: str, *args: str) -> int:
            self.subject = ""
            record(event="mail", sender=sender, i=self.getsymval("i"),
                   auth_authen=self.getsymval("{auth_authen}"))
            return Milter.CONTINUE

        def envrcpt(self, rcpt: str, *args: str) -> int:
            record(event="rcpt", rcpt=rcpt)
            if rcpt.strip("<>").split("@")[0] == "reject":
                self.setreply("550", "5.7.1", "null milter refuses this recipient")
                return Milter.REJECT
            return Milter.CONTINUE

        def header(self, name: str, value: str) -> int:
            if name.lower() == "subject":
                self.subject = value
            return Milter.CONTINUE

        def eom(self) -> int:
            queue_id = self.getsymval("i")
            record(event="eom", i=queue_id, subject=self.subject)
            self.addheader("X-Null-Milter", "seen", 1)
            if "hold" in self.subject:
                self.quarantine("null milter hold")
            return Milter.ACCEPT

    Milter.factory = NullMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.QUARANTINE)
    record(event="ready")
    Milter.runmilter("null-milter", spec, timeout=30)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "null-milter":
        sys.exit("usage: smtp_helpers.py null-milter SPEC EVENTS_FILE")
    run_null_milter(sys.argv[2], sys.argv[3])
