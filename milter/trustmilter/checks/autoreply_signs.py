"""Signs of an automatic reply, and of another help desk's own output.

Pure functions over header fields (name, value) and the raw Subject, for
the automation check (automation.py). Each sign is one a real sender
writes; where it comes from is noted beside it.

Automatic replies (RFC 3834):
- ``Auto-Submitted: auto-replied`` (RFC 3834 §5.2: "automatically
  generated as a direct response to another message"; Zimbra writes
  ``auto-replied (zimbra; vacation)``, Sieve vacation
  ``auto-replied; owner-email=...``);
- ``Precedence: auto_reply`` (osTicket's include/class.mailer.php);
- ``X-Autoreply``, ``X-Autorespond``, ``X-Autoresponder`` with a value
  other than no/false/0 (Gmail's vacation responder, Cyrus Sieve, Apple
  Mail, osTicket);
- ``X-Apple-Action: vacation`` (iCloud; Sisimai's rfc3834.rb reads it);
- Exchange's inbox-rule replies, out-of-office included:
  ``X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent``, or
  ``X-Auto-Response-Suppress: All`` together with
  ``X-MS-Exchange-Inbox-Rules-Loop`` (Zammad's out_of_office_check.rb;
  real samples in tests/corpus/autoreply). Neither field alone is one:
  Exchange puts Inbox-Rules-Loop on every message an inbox rule forwarded
  or redirected, and X-Auto-Response-Suppress is a *request* to
  responders ([MS-OXCMAIL] §2.1.3.2.20) that Outlook and Office 365 put on
  ordinary mail people write ("DR, RN, NRN, OOF, AutoReply", seen on
  patches and replies to public lists) and that GitHub, GitLab and Zendesk
  put on every notification ("All");
- an auto-reply Subject, matched at its start only (so a person's
  "Re: our absence policy" is not one): Outlook's "Automatic reply:" and
  its translations, Lotus Domino's "AUTO: ... is out of the office",
  "Out of Office AutoReply:" (old Exchange, GroupWise: ezmlm-weed's list),
  "Auto-Reply:", "Auto Response:", and the words Discourse's email
  receiver holds for auto-replies from its users' mail (German, French,
  Dutch, Swedish/Norwegian/Danish, Italian, Spanish), plus Japanese
  自動応答 / 自動返信 / 不在. The Subject is RFC 2047-decoded first
  (UTF-8, ISO-2022-JP, ISO-8859-1, Shift_JIS... B and Q) and NFKC-folded,
  so a full-width colon (U+FF1A) is ":".

Another help desk's or list robot's own output (its loop markers):
- ``X-Loop`` (procmail/formail recipes, SmartList and Debian's bug
  tracker, OTRS auto-responses "X-Loop: yes" (Kernel/System/Email.pm),
  Zammad notifications (app/models/channel/email_build.rb));
- ``X-OTRS-Loop`` / ``X-OTOBO-Loop`` other than false/no (OTRS, Znuny,
  OTOBO: their PostMaster treats any other value as a loop);
- ``X-RT-Loop-Prevention`` (Request Tracker, on all it sends:
  lib/RT/Action/SendEmail.pm);
- ``X-Zendesk-From-Account-Id`` (Zendesk, on all it sends; its own guard
  against loops between Zendesk accounts);
- ``X-ServiceNow-Generated`` (ServiceNow notifications; Zammad's
  service_now_check.rb keys on it);
- ``X-JIRA-FingerPrint`` (Jira and Jira Service Management: the
  instance's fingerprint on its mail, Atlassian's Email class).
These systems put their marker on everything they send, agents' answers
relayed by them too: mail from another help desk is held for a person to
look at, never answered by ours. Our own marker (``loops.loop_header``)
is the loops check's business and may not be one of these names
(ChecksConfig refuses it).

Everything here is linear in the input: the Subject is decoded from its
first `SUBJECT_HEAD` characters only and matched at its start, and the
header values are tokenised once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from types import MappingProxyType

from trustmilter.mail.encoded_words import decode_words
from trustmilter.mail.text import clip

HeaderFields = tuple[tuple[str, str], ...]

# The Subject's first characters are all that an anchored match needs.
SUBJECT_HEAD = 1000
_COMMENT = re.compile(r"\([^()]*\)")
_SPACE = re.compile(r"\s+")
_NOT_A_LETTER = r"(?![^\W\d_])"
_FALSE_WORDS = frozenset({"no", "false", "0"})

# Subject prefixes (case-folded), each followed by something that is no
# letter: "Automatic reply: ...", "Out of Office - back Monday".
_PREFIXES = (
    # English: Outlook/Exchange, older Exchange and GroupWise ("Out of
    # Office AutoReply:"), webmail and help-desk responders.
    r"automatic[ -]?reply", r"auto[ -]?reply", r"auto[ -]?response", r"automatic response",
    r"out[ -]of[ -](?:the[ -])?office",
    # German, French (Outlook and webmail).
    r"automatische antwort", r"abwesenheitsnotiz",
    r"r[ée]ponse automatique", r"absen(?:t|te|t\(e\)|ce) du bureau",
    # Dutch, Swedish/Norwegian/Danish, Italian (old Exchange), Spanish.
    r"automatisch antwoord", r"autosvar", r"automatisk svar", r"risposta non al computer",
    r"respuesta autom[aá]tica",
)
# Words that are an auto-reply Subject only alone (or before a colon):
# "Absence" alone, never "Absence policy" or "Re: absence".
_ALONE = (r"absence", r"abwesend", r"frånvaro", r"fuori sede")
_ALONE_OR_COLON = (r"abwesend", r"frånvaro", r"fuori sede")
# Japanese (after NFKC full-width brackets and colons are ASCII), optionally in brackets:
# 【自動返信】, [自動応答], 自動応答: ...; 不在 ("absent") alone or as
# 不在のお知らせ / 不在通知 / 【不在】.
_OPEN = r"[\[(<「『【\u3014]?\s*"  # U+3014: tortoise-shell bracket
_JAPANESE = (
    _OPEN + r"(?:自動応答|自動返信)",
    _OPEN + r"不在(?:\s*(?:[:\])>」』】\u3015]|\Z)|のお知らせ|通知)",
)
_SUBJECT = re.compile(
    "|".join((
        rf"(?:{'|'.join(_PREFIXES)}){_NOT_A_LETTER}",
        rf"(?:{'|'.join(_ALONE)})\Z",
        rf"(?:{'|'.join(_ALONE_OR_COLON)})\s*:",
        *_JAPANESE,
    ))
)
# Lotus Domino: "AUTO: Smith, John is out of the office. (returning ...)".
# Upper case only: "Auto: Reifenwechsel" is a German's car.
_DOMINO = re.compile(r"AUTO:\s")


def subject_text(raw: str) -> str:
    """The start of a Subject as a person reads it: decoded (RFC 2047), NFKC-folded,
    spaces collapsed. Cut at `SUBJECT_HEAD` characters, with "…" to show it was
    cut, so that nothing matches a cut Subject as a whole."""
    text = decode_words(raw[:SUBJECT_HEAD])
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    return text + " …" if len(raw) > SUBJECT_HEAD else text


def autoreply_subject(raw: str) -> str | None:
    """The auto-reply words a Subject starts with ('' never), or None."""
    text = subject_text(raw)
    folded = text.casefold()
    found = _SUBJECT.match(folded) or _DOMINO.match(text)
    if found is None:
        return None
    # Case folding can change the length ("ß" is "ss"): then show the folded words.
    shown = text if len(folded) == len(text) else folded
    return clip(shown[:found.end()].strip(), 40)


def token(value: str) -> str:
    """The first keyword of a structured field value: comments dropped, lower case."""
    return _COMMENT.sub(" ", value).split(";", 1)[0].strip().lower()


def _set(value: str) -> bool:
    """A yes/no style field is set unless it says no, false or 0."""
    return token(value) not in _FALSE_WORDS


def suppresses_all(value: str) -> bool:
    """X-Auto-Response-Suppress asks to suppress all responses ("All", or -1)."""
    words = {w.strip().lower() for w in value.split(",")}
    return "all" in words or "-1" in words


def autoreply_header_reasons(headers: HeaderFields) -> list[str]:
    """Why the header fields mark an automatic reply (empty: they do not)."""
    reasons: list[str] = []
    names = {name.lower() for name, _ in headers}
    for name, value in headers:
        lower = name.lower()
        if lower == "auto-submitted" and token(value) == "auto-replied":
            reasons.append("Auto-Submitted: auto-replied")
        elif lower == "precedence" and token(value) == "auto_reply":
            reasons.append("Precedence: auto_reply")
        elif lower in ("x-autoreply", "x-autorespond", "x-autoresponder") and _set(value):
            reasons.append(f"{name}: {clip(token(value), 20)}")
        elif lower == "x-apple-action" and token(value) == "vacation":
            reasons.append("X-Apple-Action: vacation")
        elif (lower == "x-ms-exchange-generated-message-source"
              and "mailbox rules agent" in value.lower()):
            reasons.append("Exchange Mailbox Rules Agent")
        elif (lower == "x-auto-response-suppress" and suppresses_all(value)
              and "x-ms-exchange-inbox-rules-loop" in names):
            reasons.append("Exchange inbox-rule reply (X-Auto-Response-Suppress: All)")
    return list(dict.fromkeys(reasons))


# Another system's loop marker -> whether its value marks a loop.
_HELPDESK_FIELDS: Mapping[str, bool] = MappingProxyType({
    "x-loop": False,  # any value
    "x-otrs-loop": True,  # unless false/no
    "x-otobo-loop": True,
    "x-rt-loop-prevention": False,
    "x-zendesk-from-account-id": False,
    "x-servicenow-generated": True,
    "x-jira-fingerprint": False,
})
HELPDESK_FIELDS = tuple(sorted(_HELPDESK_FIELDS))


def is_foreign_loop_field(name: str) -> bool:
    """True if `name` is another system's loop marker, read by `helpdesk_reasons`."""
    return name.strip().lower() in _HELPDESK_FIELDS


def helpdesk_reasons(headers: HeaderFields) -> list[str]:
    """Why the header fields mark another help desk's or list robot's output."""
    reasons: list[str] = []
    for name, value in headers:
        needs_yes = _HELPDESK_FIELDS.get(name.lower())
        if needs_yes is not None and (not needs_yes or _set(value)):
            reasons.append(f"{name} present")
    return list(dict.fromkeys(reasons))
