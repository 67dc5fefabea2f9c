"""DMARC, ARC, the loop, names, automation and bounce checks see one author.

Before the one parser, DMARC and ARC read From with the stdlib's
getaddresses and the other checks with the linear parser, so a hostile From
could show DMARC one author domain and the loop and names checks another.
Each case here names the author RFC 5322 §3.4 gives and runs the real
checks (DNS through the test server) to see that every one of them finds it.
"""

from __future__ import annotations

import pytest

from helpers import make_ctx
from trustmilter.checks import arc, automation, dmarc, loops, names
from trustmilter.checks.bounce import may_be_bounce
from trustmilter.checks.dmarc import DmarcCheck, author_domains
from trustmilter.model import Message
from trustmilter.results import Outcome

ZONE = """
example.com.          300 IN A    192.0.2.4
example.net.          300 IN A    192.0.2.5
_dmarc.example.com.   300 IN TXT  "v=DMARC1; p=none"
_dmarc.example.net.   300 IN TXT  "v=DMARC1; p=none"
evil.example.         300 IN A    192.0.2.6
_dmarc.evil.example.  300 IN TXT  "v=DMARC1; p=reject"
"""
SUPPORT = "mailer-daemon@example.com"  # a no-reply and a bounce-sender local part

# (From value, the author domains RFC 5322 §3.4 gives, whether SUPPORT is an author)
HOSTILE_FROMS = [
    # Comments nest and carry no meaning (§3.2.2); the stdlib recursed per level.
    ("(" * 5000 + "x" + ")" * 5000 + f" <{SUPPORT}>", ["example.com"], True),
    # A group's mailboxes are authors (§3.4: group = display-name ":" [group-list] ";").
    (f"Help desk: {SUPPORT};", ["example.com"], True),
    # A quoted local part may hold "@" (§3.2.4); the domain follows the last "@".
    ('"someone@evil.example"@example.com', ["example.com"], False),
    # An encoded word (RFC 2047) is display text, never an address; the stdlib
    # read "evil.example?=" as a second author domain.
    (f"=?utf-8?q?{SUPPORT.replace('example.com', 'evil.example')}?= <{SUPPORT}>",
     ["example.com"], True),
    # Two mailboxes: two authors (RFC 7489 §6.6.1: each domain is evaluated).
    (f"{SUPPORT}, other@example.net", ["example.com", "example.net"], True),
    # No angle brackets: the addr-spec itself (§3.4).
    (SUPPORT, ["example.com"], True),
    # A display name that looks like an address is still a display name: the
    # address is what the angle brackets hold (§3.4 name-addr; RFC 7489 §12.4).
    (f"mailer-daemon@evil.example <{SUPPORT}>", ["example.com"], True),
    (f"{SUPPORT} <other@evil.example>", ["evil.example"], False),
    # Text after the angle-addr is not an address.
    (f"<{SUPPORT}> other@evil.example", ["example.com"], True),
    # Nothing that is a mailbox: no author at all.
    (f"Alice <{SUPPORT}", [], False),
    ("mailer-daemon@evil.example@example.com", [], False),
]


def _raw(value: str) -> bytes:
    return b"From: " + value.encode() + b"\r\nMessage-ID: <1@example.com>\r\n\r\nbody\r\n"


@pytest.mark.parametrize(("value", "authors", "support_is_author"), HOSTILE_FROMS,
                         ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_every_check_sees_the_same_author(dns_server, resolver, value, authors,
                                          support_is_author) -> None:
    dns_server.load(ZONE)
    raw = _raw(value)

    assert author_domains(Message(raw)) == (authors or "From field has no address with a domain")
    [dmarc_result] = DmarcCheck(dmarc.Config()).run(make_ctx(resolver, message=raw))
    if authors:
        assert dict(dmarc_result.props)["header.from"] in authors
    else:
        assert dmarc_result.outcome is Outcome.PERMERROR
    assert arc._author(Message(raw)) == (authors[0] if len(authors) == 1 else "")

    dns_server.reset()
    dns_server.load(ZONE)
    [names_result] = names.HeaderNamesCheck(names.Config()).run(
        make_ctx(resolver, mail_from="a@example.com", message=raw))
    looked_up = {name.rstrip(".") for name, rdtype in dns_server.queries if rdtype == "A"}
    assert looked_up == set(authors)
    assert (names_result.outcome is Outcome.SKIPPED) == (not authors)

    [loop_result] = loops.LoopMessageCheck(loops.Config(support_addresses=(SUPPORT,))).run(
        make_ctx(resolver, message=raw))
    assert ("loop.support_sender" in {f.name for f in loop_result.findings}) == support_is_author

    automated = automation.message_findings(Message(raw), automation.Config().compiled())
    assert ("auto.noreply_sender" in {f.name for f in automated}) == support_is_author
    assert may_be_bounce("a@example.com", Message(raw)) == support_is_author
