"""The record of one decision: what the verdict line, the metrics and `check` report.

One is made for every decision the engine gives: the end of a message,
a recipient refused at RCPT TO, a message refused early (once, at its
first recipient), and a refusal no policy rule made (too big, busy).
`pairs()` is the verdict line's content, in the order of
daemon/verdictlog.py's keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trustmilter.results import Results
from trustmilter.verdict import Verdict

if TYPE_CHECKING:
    from trustmilter.engine.client import Client, ClientKind


# Every line carries these keys, in this order; check results follow
# (``iprev=pass spf.mailfrom=fail dkim=pass,fail ...``), then any check's summary
# (``bounce_summary="own; 5.1.1 <a@example.net> user unknown"``), before `findings`.
# A result named like one of these keys is written with "_check" after it
# (``helo=mail.example.com ... helo_check=pass``).
LEADING_KEYS = ("action", "reply", "client", "client_name", "helo", "from", "rcpt")
TRAILING_KEYS = ("findings", "score", "rules", "stage", "ms")


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """One decision about one message (or one recipient of it)."""

    queue_id: str
    verdict: Verdict
    results: Results
    stage: str  # "mail", "rcpt" or "eom": where the MTA got the answer
    client: Client
    kind: ClientKind
    mail_from: str
    rcpts: tuple[str, ...]
    elapsed_ms: int

    def pairs(self) -> Iterator[tuple[str, str]]:
        """The verdict line's keys and values, in order."""
        yield "action", self.verdict.action.value
        yield "reply", str(self.verdict.reply) if self.verdict.reply else ""
        yield "client", str(self.client.ip) if self.client.ip else "local"
        yield "client_name", self.client.hostname or ""
        yield "helo", self.client.helo or ""
        yield "from", f"<{self.mail_from}>"
        yield "rcpt", ",".join(f"<{r}>" for r in self.rcpts)
        yield "client_kind", self.kind.value
        outcomes: dict[str, list[str]] = {}
        for result in self.results.all():
            outcomes.setdefault(result.check, []).append(result.outcome)  # a StrEnum is its value
        # A result named like a connection field (the `helo` check) gets a suffix.
        yield from (
            (f"{check}_check" if check in LEADING_KEYS else check, ",".join(values))
            for check, values in outcomes.items()
        )
        # A check's one-line summary (the bounce check's), after all outcomes.
        for result in self.results.all():
            if result.summary:
                yield f"{result.check}_summary", result.summary
        if self.verdict.explained:
            # Signals a trusted party's pass explained (neither scored nor ruled on).
            yield "explained", ",".join(self.verdict.explained)
        yield "findings", ",".join(f.name for r in self.results.all() for f in r.findings)
        yield "score", f"{self.verdict.score:g}"
        yield "rules", ",".join(
            f"{hit.rule}(shadow)" if hit.shadow else hit.rule for hit in self.verdict.hits
        )
        yield "stage", self.stage
        yield "ms", str(self.elapsed_ms)
