"""Policy rules and SMTP replies: the parts of the policy that name signals.

A `Rule` matches when all its `when` signals are present, at least one of
its `any` signals (if it lists any), and none of its `unless` signals. It
then forces an action, adds points, or both; in ``shadow`` mode it is only
reported. A `ReplyConfig` is an SMTP reply the policy may send with a
reject or tempfail. Both validate themselves in `__post_init__` (raising
`InvalidField`), so a policy built in code is checked like a loaded one.
Nothing here evaluates anything; see evaluate.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from trustmilter.config.errors import InvalidField
from trustmilter.verdict import Action, Reply

Mode = Literal["enforce", "shadow"]

# RFC 3463 §2: class "." subject "." detail, subject and detail 1*3digit.
_DSN = re.compile(r"([245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\Z")
# libmilter's smfi_setreply: printable characters only, no CR/LF, and a
# lone '%' makes the MTA drop the text; so no '%' at all.
_REPLY_TEXT = re.compile(r"[\x20-\x24\x26-\x7e]+\Z")
MAX_REPLY_TEXT = 400
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_NO_CONTROLS = re.compile(r"[^\x00-\x1f\x7f]*\Z")


@dataclass(frozen=True, slots=True)
class ReplyConfig:
    """An SMTP reply: basic code (RFC 5321 §4.2), enhanced code (RFC 3463), text."""

    code: int = field(metadata={"min": 400, "max": 599})
    dsn: str
    text: str

    def __post_init__(self) -> None:
        if not 400 <= self.code <= 599:
            raise InvalidField(("code",), "an integer between 400 and 599", self.code)
        match = _DSN.match(self.dsn)
        if match is None:
            raise InvalidField(("dsn",), "an RFC 3463 enhanced status code like 5.7.1", self.dsn)
        # RFC 3463 §3 / RFC 2034 §4: the class must agree with the basic code.
        if match.group(1) != str(self.code)[0]:
            raise InvalidField(
                ("dsn",),
                f"an enhanced code of class {str(self.code)[0]} to match {self.code}",
                self.dsn,
            )
        if len(self.text) > MAX_REPLY_TEXT or _REPLY_TEXT.match(self.text) is None:
            raise InvalidField(
                ("text",),
                f"1 to {MAX_REPLY_TEXT} printable ASCII characters without '%'",
                self.text,
            )

    def reply(self) -> Reply:
        """The verdict's form of this reply."""
        return Reply(self.code, self.dsn, self.text)


def check_reply_class(reply: ReplyConfig, action: Action, path: tuple[str | int, ...]) -> None:
    """Raise InvalidField unless `reply` fits `action` (5xx reject, 4xx tempfail)."""
    wanted = {Action.REJECT: 5, Action.TEMPFAIL: 4}.get(action)
    if wanted is None:
        raise InvalidField(path, "no reply (only reject and tempfail send one)", reply)
    if reply.code // 100 != wanted:
        raise InvalidField(
            (*path, "code"), f"a {wanted}xx code for action {action.value}", reply.code
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """A named condition on signals, and what it does when it holds."""

    name: str
    when: tuple[str, ...] = ()  # all of these must be present
    any: tuple[str, ...] = ()  # at least one of these, if any are listed
    unless: tuple[str, ...] = ()  # none of these may be present
    action: Action | None = None  # the least this message gets when the rule matches
    reply: ReplyConfig | None = None  # overrides the action's default reply
    score: float = field(default=0.0, metadata={"min": -1000, "max": 1000})
    mode: Mode = "enforce"  # "shadow": report what would have happened, change nothing
    reason: str = ""  # for the admin and the logs: why this rule exists

    def __post_init__(self) -> None:
        if _RULE_NAME.match(self.name) is None:
            raise InvalidField(("name",), "1 to 64 letters, digits, '.', '_' or '-'", self.name)
        if not self.when and not self.any:
            raise InvalidField(("when",), "at least one signal in `when` or `any`", [])
        if self.action is None and self.score == 0:
            raise InvalidField(("action",), "an action, or a non-zero score", None)
        if self.reply is not None:
            if self.action is None:
                raise InvalidField(("reply",), "no reply for a rule without action", self.reply)
            check_reply_class(self.reply, self.action, ("reply",))
        if _NO_CONTROLS.match(self.reason) is None:
            raise InvalidField(("reason",), "text without control characters", self.reason)

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"
