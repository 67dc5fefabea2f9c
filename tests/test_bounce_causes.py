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
    # A receiver that takes mail only from sending servers someone confirmed.
    "550 Your server requires confirmation. Visit http://www.example.net/Whitelist.aspx?"
    "IP=192.0.2.1 to confirm this mail server.",
    # A sender verification callout; its guess "may be blacklisted" names no cause.
    "550-Verification failed for <bounces@example.com> 550-The mail server could not "
    "deliver mail to bounces@example.com. The account or domain may not exist, they may "
    "be blacklisted, or missing the proper dns entries. 550 Sender verify failed",
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
    # qmail's quota words; a two-line reply run together ("550-... 550 username").
    ("Mailbox quota usage exceeded. Espacio en casilla de mail agotado.", Cause.MAILBOX_FULL),
    ("550-bob@example.net is not an active address at this host (invalid Example 550 "
     "username)", Cause.USER_UNKNOWN),
    ("421 4.4.0 [internal] no MXs for this domain could be reached at this time",
     Cause.UNREACHABLE),
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


@pytest.mark.parametrize(("reply", "cause"), [
    # Unknown users and hosts as MTAs word them.
    ("550 <bob@example.net>, Recipient unknown", Cause.USER_UNKNOWN),
    ("550 Recipient Rejected: No account by that name here", Cause.USER_UNKNOWN),
    ("553 5.3.0 <bob@example.net>... Unknown E-Mail Address", Cause.USER_UNKNOWN),
    ("Sorry, I couldn't find any host by that name. (#5.1.2)", Cause.HOST_UNKNOWN),
    ("Sorry, I couldn't find any host named example.invalid. (#5.1.2)", Cause.HOST_UNKNOWN),
    ("[mx.example.net]: Name or service not known", Cause.HOST_UNKNOWN),
    ("Host or domain name not found. Name service error for name=example.net type=A: "
     "Host not found", Cause.HOST_UNKNOWN),
    # The count of stored messages is a full mailbox, not a sending rate.
    ("550 <bob@example.net> Benutzer hat zuviele Mails auf dem Server. / User has too many "
     "messages on the server.", Cause.MAILBOX_FULL),
    ("552 User has exceeded the number of messages allowed in the mailbox", Cause.MAILBOX_FULL),
    ("You have exceeded the allowable number of posts without solving a captcha.",
     Cause.RATE_LIMITED),
    # Sender ID (RFC 4406) is a sender check like SPF.
    ("550 5.7.1 can't determine Purported Responsible Address", Cause.AUTHENTICATION),
    ("550 5.7.1 Sender ID (PRA) Not Permitted", Cause.AUTHENTICATION),
    # The envelope sender refused: not the recipient's domain.
    ("550 Unroutable sender address", Cause.POLICY),
    ("553 5.1.8 <alice@example.com>: Sender address rejected: Domain not found",
     Cause.POLICY),
    ("<bob@example.net> has restricted SMS e-mail", Cause.POLICY),
    # Time ran out, and hosts that fail for long.
    ("Cannot send message for 5 days", Cause.EXPIRED),
    ("Message could not be delivered for 5 days\nMessage will be deleted from queue",
     Cause.EXPIRED),
    ("all hosts for 'example.net' have been failing for a long time (and retry time not "
     "reached)", Cause.UNREACHABLE),
    ("all hosts have been failing for a long time and were last tried after this message "
     "arrived", Cause.UNREACHABLE),
])
def test_more_words_real_servers_use(reply: str, cause: Cause) -> None:
    assert cause_from_words(reply) is cause


@pytest.mark.parametrize("reply", [
    "host mx.example.net[192.0.2.1] said: 550 5.7.1 Blocked by SpamAssassin (in reply to "
    "end of DATA command)",
    "host mx.example.net [192.0.2.1]: 550 5.7.1 Blocked by SpamAssassin",
])
def test_the_answering_host_is_not_the_blocked_one(reply: str) -> None:
    """Postfix's and Exim's "host X[ip] said:" names who answered; the reply says
    what was blocked (the message, by a spam filter)."""
    assert cause_from_words(reply) is Cause.SPAM_OR_CONTENT


def test_a_blocked_host_is_still_blocklisted() -> None:
    assert cause_from_words("554 5.7.1 Client host [192.0.2.1] blocked using "
                            "zen.example.org") is Cause.BLOCKLISTED
    assert cause_from_words("550 Your IP address 192.0.2.1 is blocked") is Cause.BLOCKLISTED


def test_the_intermail_subject_names_no_cause() -> None:
    """"Mail System Error - Returned Mail" heads every InterMail and au bounce."""
    assert cause_from_words("Mail System Error - Returned Mail") is None
    assert cause_from_words("451 4.3.0 System error, try again") is Cause.SYSTEM_ERROR


# ---- the order of evidence: specific words, specific code, generic words, generic code ----


@pytest.mark.parametrize(("status", "reply", "cause"), [
    # Words that name a cause beat the catch-all refusal code X.7.1.
    ("5.7.1", "553 sorry, badrcptto(user mail-box not found) (#5.7.1)", Cause.USER_UNKNOWN),
    ("5.7.1", "550 5.7.1 <bob@example.net>: Recipient address rejected: no such user",
     Cause.USER_UNKNOWN),
    ("5.7.1", "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
     Cause.RELAYING_DENIED),
    ("5.7.1", "550 5.7.1 Your email breaches local URIBL policy.", Cause.SPAM_OR_CONTENT),
    # Words that name one cause beat a code that names another: X.1.6 "moved,
    # no forwarding address", worded as an address that is gone.
    ("5.1.6", "550 5.1.6 recipient no longer on server: bob@example.net", Cause.USER_UNKNOWN),
    # A specific code beats words that name no reason.
    ("5.1.1", "550 5.1.1 Access denied", Cause.USER_UNKNOWN),
    ("5.2.2", "552 5.2.2 Refused by local policy", Cause.MAILBOX_FULL),
    # Generic words beat a generic code; with neither words nor code, the code.
    ("5.7.1", "550 5.7.1 Internal error", Cause.SYSTEM_ERROR),
    ("5.7.1", "550 5.7.1 Message refused", Cause.POLICY),
    ("5.7.1", None, Cause.POLICY),
    ("5.1.6", None, Cause.ADDRESS_MOVED),
])
def test_the_evidence_is_weighed_in_order(status: str, reply: str | None, cause: Cause) -> None:
    assert cause_of(status, reply) is cause


def test_a_virus_scanners_pass_notice_is_no_reason() -> None:
    """A gateway's footer on what it relayed is no refusal: the code decides."""
    footer = ("bob@example.net ____ **** This email has come from the internet and has been "
              "scanned for all viruses and potentially offensive content by a gateway ****")
    assert cause_of("5.1.1", footer) is Cause.USER_UNKNOWN
    assert cause_of("5.1.1", "This message has been scanned for viruses and dangerous "
                    "content by MailScanner, and is believed to be clean.") is Cause.USER_UNKNOWN
    assert cause_from_words("554 5.7.1 Virus found in message") is Cause.SPAM_OR_CONTENT


@pytest.mark.parametrize(("reply", "cause"), [
    # URI blocklists list the links in the body: content, not the sender's server.
    ("554 5.7.1 Message rejected: body contains a URL listed in SURBL", Cause.SPAM_OR_CONTENT),
    ("550 5.7.1 Rejected: message contains blacklisted URL example.test",
     Cause.SPAM_OR_CONTENT),
    ("550 Blocked: the links in your message are listed at multi.uribl.example",
     Cause.SPAM_OR_CONTENT),
    ("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
     Cause.BLOCKLISTED),
    # Attachments and images refused for what they are.
    ("Your mail to the following recipients could not be delivered because they are not "
     "accepting mail with attachments or embedded images: bob", Cause.SPAM_OR_CONTENT),
    ("550 This message contains an unwanted binary attachment.", Cause.SPAM_OR_CONTENT),
    ("552 5.7.0 Our system detected an illegal attachment on your message.",
     Cause.SPAM_OR_CONTENT),
    ("554 5.7.1 Attachment type not allowed", Cause.SPAM_OR_CONTENT),
    ("552-5.7.0 This message was blocked because its content presents a potential "
     "552-5.7.0 security issue.", Cause.SPAM_OR_CONTENT),
    ("552 5.3.4 Message size exceeds fixed limit: attachment too large",
     Cause.MESSAGE_TOO_LARGE),
    # Relaying, in qmail's and Exchange's words.
    ("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
     Cause.RELAYING_DENIED),
    ("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
     Cause.RELAYING_DENIED),
    ("554 <bob@example.net>: Relay access denied", Cause.RELAYING_DENIED),
    # Unknown addresses written with a hyphen or a space, or gone from the server.
    ("550 ** No mail box available for this user **", Cause.USER_UNKNOWN),
    ("550 Mail-box not found", Cause.USER_UNKNOWN),
    ("550 This address no longer accepts mail [bob@example.net]", Cause.USER_UNKNOWN),
    # Full mailboxes in IMail's and Gmail's words.
    ("User mailbox exceeds allowed size: bob@example.net", Cause.MAILBOX_FULL),
    ("452 4.2.2 The recipient's inbox is out of storage space.", Cause.MAILBOX_FULL),
])
def test_mta_vocabulary(reply: str, cause: Cause) -> None:
    assert cause_from_words(reply) is cause
