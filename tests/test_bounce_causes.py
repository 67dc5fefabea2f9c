"""Causes named from the receiving server's words: the refusals real servers word
their own way, each read as a person reads it.

The replies are written here after the wording of real servers' replies (the
corpus in tests/data/bounces holds the real bounces and their figures)."""

from __future__ import annotations

import pytest

from trustmilter.bounce import Cause
from trustmilter.bounce.causes import cause_from_words, cause_of

POLICY_REFUSALS = [
    # Exchange: the recipient takes mail from senders that log in only.
    "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required",
    "530 5.7.0 Authentication required",
    # A rule on the sending host, not a list or a sender check.
    "571 No PTR Record found. Reverse DNS required: 203.0.113.22",
    "550 5.7.1 Client host rejected: cannot find your hostname, no reverse DNS",
    "550 5.7.0 <alice@example.com>... Please use the smtp server of your ISP.",
    "550 5.7.1 Message rejected by the local policy of example.net",
    "554 5.7.9 Message not accepted for policy reasons.",
]


@pytest.mark.parametrize("reply", POLICY_REFUSALS)
def test_refusals_by_rule_are_policy(reply: str) -> None:
    assert cause_from_words(reply) is Cause.POLICY


@pytest.mark.parametrize("reply", [
    "550 5.7.26 This message fails to pass SPF or DKIM authentication checks",
    "550 5.7.1 Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
    "550 5.7.1 Email rejected: sender authentication failed",
])
def test_failed_sender_checks_are_authentication(reply: str) -> None:
    """Authentication failure is SPF/DKIM/DMARC; a login the receiver wants is policy."""
    assert cause_from_words(reply) is Cause.AUTHENTICATION


@pytest.mark.parametrize(("reply", "cause"), [
    ("554 5.7.0 Header error (state 18).", Cause.SPAM_OR_CONTENT),
    ("554 email rejected due to security policies - MCSpamSignature.sa.2.2",
     Cause.SPAM_OR_CONTENT),
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.1].", Cause.BLOCKLISTED),
    ("550 SC-004 Unfortunately, messages from 192.0.2.1 weren't sent. The problem is that "
     "too many unwanted messages have been sent from the following IP address above.",
     Cause.BLOCKLISTED),
    ("554 The mail could not be delivered to the recipient because the domain is not "
     "reachable. Please check the domain and try again", Cause.HOST_UNKNOWN),
    ("The address to which your message was addressed, bob@example.gov, did not exactly "
     "match an LLNL email address.", Cause.USER_UNKNOWN),
    # au (KDDI): its fixed English line for an address it does not know.
    ("The user(s) account is disabled.", Cause.USER_UNKNOWN),
    ("550 5.2.1 The email account that you tried to reach is disabled.",
     Cause.MAILBOX_DISABLED),
])
def test_the_words_real_servers_use(reply: str, cause: Cause) -> None:
    assert cause_from_words(reply) is cause


def test_a_multi_line_reply_is_read_as_one_sentence() -> None:
    """The code that starts each line of a multi-line reply (RFC 5321 §4.2.1) is
    not a word of it: "not permitted to 550 relay" says "not permitted to relay"."""
    reply = ("550-Please turn on SMTP Authentication in your mail client. 550-mx.example.net "
             "[192.0.2.1]:25 is not permitted to 550 relay through this server without "
             "authentication.")
    assert cause_from_words(reply) is Cause.RELAYING_DENIED
    # The code is still what decides where the words say nothing.
    assert cause_of("5.2.2", "552-5.2.2 552 5.2.2 see the help page") is Cause.MAILBOX_FULL
