"""Why a recipient failed, in plain words: a fixed set of causes.

A bounce says why in two ways: an RFC 3463 code and the receiving server's
own words. Real servers often send a vague or even wrong code with clear
words ("550 5.7.1 ... Nonexistent user", "5.2.1 ... User Unknown"), and a
clear code with vague words ("5.1.1" beside "refused by policy"). The
evidence is therefore weighed in four steps, the first that names a cause
deciding (`cause_of`):

1. specific words: a phrase that names one cause ("mailbox full", "relay
   access denied", "URIBL");
2. a specific code: the code's subject and detail (RFC 3463 §3), where they
   name one cause (X.1.1 bad mailbox, X.2.2 mailbox full, X.7.26 ...);
3. generic words: a refusal that names no reason ("policy", "access denied",
   "not accepting mail", "internal error");
4. a generic code: X.7.1 "delivery not authorized, message refused", which
   servers send for any refusal, and a bare subject (X.7.x, X.3.0, X.5.0).

So 5.7.1 with "no such user" is user unknown, and 5.1.1 with only "access
denied" stays user unknown too. Each cause has a short name (its value, also the msgid of the
translated name) and an explanation for the help desk (EXPLANATIONS); both
are translated in the readable report (i18n.py) and stay English in
``--json``.

Every pattern here is a literal alternation or a bounded gap (``.{0,40}``):
searching a reply of any length stays linear.
"""

from __future__ import annotations

import re
from enum import StrEnum

from trustmilter.bounce.status import describe
from trustmilter.i18n import N_


class Cause(StrEnum):
    """The fixed set of causes; the values are msgids of the translated names."""

    USER_UNKNOWN = "user unknown"
    HOST_UNKNOWN = "host unknown"
    MAILBOX_FULL = "mailbox full"
    MESSAGE_TOO_LARGE = "message too large"
    SPAM_OR_CONTENT = "spam or content"
    BLOCKLISTED = "blocklisted"
    AUTHENTICATION = "authentication failed"
    RELAYING_DENIED = "relaying denied"
    POLICY = "policy"
    EXPIRED = "expired"
    UNREACHABLE = "unreachable"
    SYSTEM_ERROR = "system error"
    MAILBOX_DISABLED = "mailbox disabled"
    ADDRESS_MOVED = "address moved"
    RATE_LIMITED = "rate limited"
    SYNTAX_ERROR = "syntax error"
    UNKNOWN = "unknown"


# The Cause values as msgids for the catalogs (a StrEnum's values cannot be wrapped).
CAUSE_MSGIDS = (
    N_("user unknown"), N_("host unknown"), N_("mailbox full"), N_("message too large"),
    N_("spam or content"), N_("blocklisted"), N_("authentication failed"),
    N_("relaying denied"), N_("policy"), N_("expired"), N_("unreachable"),
    N_("system error"), N_("mailbox disabled"), N_("address moved"), N_("rate limited"),
    N_("syntax error"), N_("unknown"),
)

# What each cause means and what to do about it, for the readable report.
EXPLANATIONS: dict[Cause, str] = {
    Cause.USER_UNKNOWN: N_(
        "The address does not exist at the receiving domain: a typo, an address that "
        "was made up, or one that was deleted. Check it with the person."),
    Cause.HOST_UNKNOWN: N_(
        "The domain of the address does not exist or accepts no mail (no mail server "
        "is published for it). Usually a typo in the part after the @."),
    Cause.MAILBOX_FULL: N_(
        "The recipient's mailbox is full. The address is valid; sending again later "
        "may work."),
    Cause.MESSAGE_TOO_LARGE: N_(
        "The message is larger than the receiving server accepts. Send it with "
        "smaller or fewer attachments."),
    Cause.SPAM_OR_CONTENT: N_(
        "The receiving server judged the message to be spam or refused its content "
        "(a filter, a virus scanner, an attachment rule)."),
    Cause.BLOCKLISTED: N_(
        "The sending server or its network is on a blocklist or has a poor "
        "reputation with the receiver. The sending side's administrators must act."),
    Cause.AUTHENTICATION: N_(
        "The message failed the sender checks of the receiver (SPF, DKIM or DMARC). "
        "The sending domain's DNS records or signatures need fixing."),
    Cause.RELAYING_DENIED: N_(
        "The server that was asked to pass the message on does not relay for this "
        "sender or domain: a configuration problem on the way."),
    Cause.POLICY: N_(
        "The receiving server refused the message by a local rule or security "
        "policy that it did not explain further."),
    Cause.EXPIRED: N_(
        "Delivery did not succeed before the message's time in the queue ran out; "
        "the server gave up trying."),
    Cause.UNREACHABLE: N_(
        "The receiving server could not be reached or did not answer (network "
        "problem, server down). This is often temporary."),
    Cause.SYSTEM_ERROR: N_(
        "An error inside a mail system on the way (a misconfiguration, a mail loop, "
        "a crashed filter). Not the recipient's fault."),
    Cause.MAILBOX_DISABLED: N_(
        "The mailbox exists but is disabled, suspended or closed and takes no mail."),
    Cause.ADDRESS_MOVED: N_(
        "The recipient has moved to another address; the bounce may name the new one."),
    Cause.RATE_LIMITED: N_(
        "The receiving server refused because too much mail or too many connections "
        "came from the sender; it may accept later."),
    Cause.SYNTAX_ERROR: N_(
        "The address or a command was not written correctly (invalid syntax)."),
    Cause.UNKNOWN: N_(
        "The bounce does not say why, or says it in words this reader does not know."),
}


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(phrases), re.IGNORECASE)


# Reply words that name one cause -> cause, most specific first: the first that
# matches decides. Kept to phrases MTAs print; the gaps are bounded (linear time).
_SPECIFIC_WORDS: tuple[tuple[re.Pattern[str], Cause], ...] = (
    # Fixed sentences whose words would mislead the general patterns below: au
    # (KDDI) says "account is disabled" of every address it does not know (its
    # Japanese text beside it says "not found").
    (_words(r"the user\(s\) account is disabled"), Cause.USER_UNKNOWN),
    # The receiver's rules on the sending host or on who may send, not the
    # SPF/DKIM/DMARC checks: the recipient takes mail only from senders that
    # log in (Exchange's RESOLVER.RST.AuthRequired, SMTP AUTH required), only
    # from hosts with reverse DNS, only through the sender's provider's relay.
    (_words(r"authrequired", r"authentication required", r"not authenticated to send",
            r"no ptr record", r"reverse dns (?:required|lookup failed|failed)",
            r"(?:no|missing|without) reverse dns", r"ptr record (?:required|not found)",
            r"smtp server of your (?:isp|provider)",
            r"use (?:the|your) (?:isp'?s?|provider'?s?) (?:smtp|mail) server",
            # The envelope sender refused, not the recipient (Exim's "Unroutable
            # sender address", Postfix's "Sender address rejected"): the words of
            # an unknown domain or user below would name the wrong address.
            r"(?:unroutable|unverifiable|unknown|invalid) sender (?:address|domain)",
            r"sender (?:address|domain) (?:rejected|unroutable|not verified)",
            # A sender verification callout failed (Exim's "Sender verify failed",
            # "Verification failed for <sender>"): its words go on to guess why
            # ("may not exist ... may be blacklisted"), which names no cause here.
            r"sender (?:address )?verif(?:y|ication) (?:failed|failure)",
            r"verification failed for"), Cause.POLICY),
    # Sender ID (RFC 4406), SPF's sibling on the header's Purported Responsible
    # Address (Courier: "can't determine Purported Responsible Address").
    (_words(r"\bspf\b", r"\bdkim\b", r"\bdmarc\b", r"sender policy framework",
            r"purported responsible (?:address|domain)",
            r"\bsender[- ]id (?:\(pra\)|check|fail|not permitted|policy|record)",
            r"authentication (?:check )?(?:failed|failure)",
            r"not authenticated", r"unauthenticated"), Cause.AUTHENTICATION),
    # A URI blocklist (URIBL, SURBL) lists the domains of the links found in a
    # message's body, not the sending server: a refusal for content, read
    # before the blocklist words below.
    (_words(r"\buribl\b", r"\bsurbl\b", r"\buri ?(?:bl|dnsbl|black ?list|block ?list)\b",
            r"(?:blacklisted|blocklisted|blocked|listed|forbidden|prohibited) "
            r"(?:url|uri|link|web ?site)s?\b",
            r"(?:url|uri|link)s? (?:in|within) (?:the |your )?(?:message|body|e-?mail)"),
     Cause.SPAM_OR_CONTENT),
    (_words(r"blacklist", r"black list", r"blocklist", r"block list", r"\brbl\b",
            r"dnsbl", r"spamhaus", r"spamcop", r"\bsorbs\b", r"barracudacentral",
            r"listed (?:at|on|by) ", r"reputation",
            r"(?:host|network|client|your ip|ip address)[^\n]{0,40}"
            r"(?:not allowed|blocked|banned|refused)",
            # Microsoft's "5.7.606 Access denied, banned sending IP [...]", and
            # Hotmail's "SC-004 ... too many unwanted messages have been sent
            # from the following IP address".
            r"(?:banned|blocked|blacklisted|blocklisted) (?:sending |source |client )?ip\b",
            r"unwanted messages have been sent from"),
     Cause.BLOCKLISTED),
    (_words(r"spam", r"unsolicited", r"\bube\b", r"junk mail", r"content rejected",
            r"message content", r"content filter", r"virus", r"malware",
            r"bulk (?:e-?mail|mail) filter", r"phish", r"suspicious",
            # The message's header broke a rule of the receiver (Gmail's "Header error").
            r"header error", r"(?:bad|invalid|malformed) (?:message )?header",
            # Gmail's 5.7.0 "its content presents a potential security issue".
            r"content presents a potential"),
     Cause.SPAM_OR_CONTENT),
    (_words(r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited)",
            r"unable to relay", r"not permitted to relay", r"we do not relay",
            r"relaying denied",
            # qmail-smtpd takes mail only for the domains in its rcpthosts file:
            # "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)";
            # Exchange: "5.7.54 ... Unable to relay recipient in non-accepted domain".
            r"rcpthosts", r"(?:isn't|is not) in my list of allowed",
            r"non-accepted domain"), Cause.RELAYING_DENIED),
    (_words(r"(?:mailbox|mail box|inbox) (?:is )?full", r"full mailbox", r"over ?quota",
            r"quota (?:exceeded|violation)",
            # qmail's "Mailbox quota usage exceeded".
            r"quota (?:usage|limit) (?:exceeded|reached)",
            r"exceed(?:ed|s|ing)? (?:\w+ ){0,3}quota", r"disk ?(?:space )?quota",
            r"insufficient (?:storage|disk)", r"not enough (?:storage|disk|space)",
            r"does not have enough space", r"mail ?folder is full", r"account is full",
            r"mail ?box space", r"too much mail", r"storage space", r"mailbox size",
            r"box is full", r"over (?:the )?(?:storage|disk) (?:limit|quota)",
            # The count of stored messages, not of messages sent: web.de's "User
            # has too many messages on the server" ("Benutzer hat zuviele Mails").
            r"(?:too many|number of) messages (?:stored |allowed )?(?:in|on) "
            r"(?:the |his |her |their |your |this )?(?:mail ?box|server|inbox|account)",
            r"zu ?viele (?:mails|nachrichten)",
            # IMail's "User mailbox exceeds allowed size"; Gmail's "The recipient's
            # inbox is out of storage space".
            r"(?:mail ?box|inbox) exceeds", r"out of (?:storage|disk) space",
            "容量(?:が|を)?(?:超|オーバー|不足|いっぱい)"),
     Cause.MAILBOX_FULL),
    (_words(r"too (?:large|big)", r"size limit", r"message size",
            r"maximum (?:incoming |allowed )?message size", r"message length exceeds",
            r"exceeds? (?:the )?(?:maximum|max)[^\n]{0,30}size"), Cause.MESSAGE_TOO_LARGE),
    # What the message carries, refused by a rule on attachments or images (AOL's
    # "not accepting mail with attachments or embedded images", Exim's "unwanted
    # binary attachment", Gmail's "illegal attachment"): after the size words, so
    # an attachment refused for its size is too large.
    (_words(r"(?:not accepting|(?:does|do) not accept|refuses?|blocks?|prohibits?) "
            r"(?:\w+ ){0,4}(?:attachments?|embedded images?)",
            r"(?:attachments?|file (?:type|extension)s?) (?:\w+ ){0,3}(?:is |are )?"
            r"(?:not (?:allowed|accepted|permitted)|prohibited|blocked|forbidden|banned)",
            r"(?:illegal|unwanted|forbidden|prohibited|blocked|dangerous|unsafe) "
            r"(?:binary |file )?attachment"), Cause.SPAM_OR_CONTENT),
    (_words(r"disabled", r"discontinued", r"suspended", r"deactivated",
            r"inactive (?:account|mailbox|user)", r"account (?:has been )?(?:closed|locked)",
            r"mailbox (?:has been )?(?:closed|locked)"), Cause.MAILBOX_DISABLED),
    (_words(r"has moved", r"address (?:has )?changed", r"new (?:e-?mail )?address is"),
     Cause.ADDRESS_MOVED),
    (_words(r"host unknown", r"unknown host", r"host (?:or domain name )?not found",
            r"domain (?:name )?(?:not found|does not exist|unknown)", r"no such domain",
            r"unrouteable", r"unroutable", r"name service error", r"nxdomain",
            r"\bno mx\b", r"mx (?:record )?not found", r"null mx",
            # A domain, not a host, that cannot be reached has no mail server to
            # reach (Outlook.com: "the domain is not reachable. Please check the domain").
            r"domain (?:is )?(?:not reachable|unreachable)",
            # qmail's "Sorry, I couldn't find any host by that name" (or "named
            # x"), and the resolver's own words for a name that does not resolve
            # (getaddrinfo: "Name or service not known", "No address associated
            # with hostname"), as Postfix passes them on.
            r"(?:couldn't|could not|can't|cannot) find any host",
            r"name or service not known", r"no address associated with (?:host ?name|name)"),
     Cause.HOST_UNKNOWN),
    (_words(r"user unknown", r"unknown user",
            r"unknown (?:or illegal )?(?:e-?mail )?(?:user|recipient|"
            r"account|local[- ]?part|address|mailbox|addressee)", r"addressee unknown",
            r"(?:recipient|mailbox) unknown", r"no (?:such )?account (?:by|with) that name",
            r"no such (?:user|mailbox|recipient|address|account|person|local user)",
            r"(?:does not|doesn't|do not) exist", r"doesn't have an? [^\n]{0,40}account",
            r"does not have an? [^\n]{0,40}account", r"recipient not found",
            r"recipnotfound", r"address (?:not found|unknown)",
            r"not listed in", r"invalid (?:recipient|mailbox|address|user|final delivery)",
            # "not an active address at this host (invalid FreeUK username)".
            r"invalid (?:\w{1,30} )?user ?name",
            r"mailbox unavailable", r"(?:user|recipient|mailbox) not found",
            r"no mail[- ]?box", r"not (?:a )?(?:valid|known) (?:user|recipient|address)",
            # The mailbox written with a hyphen or a space (qmail's badrcptto
            # patch: "badrcptto(user mail-box not found)"; "No mail box available
            # for this user"), and qmail's badrcptto list itself, of addresses
            # that take no mail.
            r"mail[- ]box (?:not found|unavailable|does not exist|unknown)",
            r"\bbadrcptto\b",
            # An address that existed once and is gone (RFC 3463 X.1.6 with these
            # words, "recipient no longer on server"; "This address no longer
            # accepts mail"): nothing names a new one, so it is unknown now.
            r"no longer (?:on|at) (?:this |the |our )?(?:server|host|site|domain)",
            r"address no longer accepts",
            r"name is not recognized", r"nonexistent", r"non-existent",
            r"(?:couldn't|could not|can't|cannot) be found", r"wasn't found",
            r"was not found", r"no matches to nameserver", r"final (?:e-?mail )?delivery point",
            r"user not known", r"user(?:'s)? account (?:does not|doesn't) exist",
            r"did not (?:exactly )?match (?:an? |any )[^\n]{0,30}address",
            r"n'existe pas", r"wrong or no longer valid", r"not our customer",
            r"unknown local", r"bad destination (?:mailbox|address)",
            # Japanese carriers and providers: "address not found", "no such address".
            "見つかりませんでした", "見つかりません", "存在しません", "宛先不明"),
     Cause.USER_UNKNOWN),
    (_words(r"message (?:has )?(?:timed out|expired)", r"maximum-time-expired",
            r"delivery time expired", r"not (?:been )?delivered (?:with)?in \d",
            r"in the queue too long", r"queue too long", r"has not been collected",
            r"exceeded maximum delivery attempts", r"failed \d+ attempts",
            r"retry (?:time|timeout) (?:exceeded|expired)", r"could not be delivered for \d",
            r"time limit exceeded",
            # Sendmail's queue timeout: "Cannot send message for 5 days" (older),
            # "Message could not be delivered for 5 days" and "Message will be
            # deleted from queue".
            r"(?:cannot|can't|could not) send (?:the )?message for \d",
            r"will be deleted from (?:the )?queue"), Cause.EXPIRED),
    (_words(r"command output", r"command died", r"loops? back to myself", r"too many hops",
            r"mail loop", r"message looping", r"routing loop"), Cause.SYSTEM_ERROR),
    (_words(r"connection (?:timed out|refused|dropped|reset|lost)",
            r"could not (?:connect|initiate (?:an )?smtp conversation)", r"can't connect",
            r"cannot connect", r"unable to connect", r"connection to mail exchanger failed",
            r"not responding", r"did not respond", r"no route to host",
            r"(?:network|host) (?:is )?unreachable", r"server (?:is )?unavailable",
            r"could not find a gateway", r"dropped by remote host",
            r"did not accept our requests to connect", r"no answer from host",
            r"establish an smtp connection", r"unavailable or busy",
            # Exim: "all hosts for 'example.com' have been failing for a long time".
            r"all hosts (?:[^\n]{0,80} )?have been failing",
            # "no MXs for this domain could be reached at this time".
            r"(?:could|can)(?: ?not|n't) be reached",
            r"no (?:mxs?|mail ?servers?|hosts?)\b[^\n]{0,40}(?:could|can) be reached"),
     Cause.UNREACHABLE),
    (_words(r"too many (?:connections|messages|recipients|concurrent|sessions)",
            r"rate limit", r"rate-limit", r"throttl", r"sending rate",
            # A cap on what one sender may send (Google Groups: "You have exceeded
            # the allowable number of posts without solving a captcha").
            r"(?:allowable|allowed|permitted|maximum) number of (?:posts|messages|e-?mails)"),
     Cause.RATE_LIMITED),
    (_words(r"syntax error", r"invalid (?:address )?syntax", r"bad address syntax",
            r"malformed address", r"illegal address"), Cause.SYNTAX_ERROR),
)

# Words of a refusal that give no reason of their own: read after a specific
# code (step 3 of the module's order), before a generic one.
_GENERIC_WORDS: tuple[tuple[re.Pattern[str], Cause], ...] = (
    (_words(r"policy", r"not accepted here", r"not (?:allowed|authorized|permitted) to",
            r"administrative prohibition", r"access denied", r"not accepting mail",
            r"are not accepted", r"refused by", r"\brestricted\b", "受信拒否",
            # Mail only from senders or servers someone has confirmed ("Your server
            # requires confirmation. Visit ... to confirm this mail server").
            r"requires? confirmation", r"not (?:on|in) (?:the |my |our )?(?:white|allow) ?list",
            r"\bwhite ?list"), Cause.POLICY),
    # Not "Mail System Error - Returned Mail", the subject InterMail and au put
    # on every bounce whatever its cause.
    (_words(r"loop", r"too many hops", r"internal error", r"(?<!mail )system error",
            r"processing error", r"local error", r"command died", r"command output",
            r"configuration error", r"misconfigur"), Cause.SYSTEM_ERROR),
)

# RFC 3463 subject.detail -> cause, where the code names one cause (step 2).
_CODE_CAUSES: dict[tuple[int, int], Cause] = {
    (1, 0): Cause.USER_UNKNOWN, (1, 1): Cause.USER_UNKNOWN, (1, 2): Cause.HOST_UNKNOWN,
    (1, 3): Cause.SYNTAX_ERROR,
    (1, 6): Cause.ADDRESS_MOVED, (1, 10): Cause.HOST_UNKNOWN,
    (2, 1): Cause.MAILBOX_DISABLED, (2, 2): Cause.MAILBOX_FULL,
    (2, 3): Cause.MESSAGE_TOO_LARGE, (3, 4): Cause.MESSAGE_TOO_LARGE,
    (3, 1): Cause.SYSTEM_ERROR, (3, 5): Cause.SYSTEM_ERROR,
    (4, 1): Cause.UNREACHABLE, (4, 2): Cause.UNREACHABLE, (4, 4): Cause.UNREACHABLE,
    (4, 5): Cause.RATE_LIMITED, (4, 6): Cause.SYSTEM_ERROR, (4, 7): Cause.EXPIRED,
    (5, 2): Cause.SYNTAX_ERROR, (5, 3): Cause.RATE_LIMITED,
    (7, 13): Cause.MAILBOX_DISABLED, (7, 17): Cause.ADDRESS_MOVED,
    **{(7, d): Cause.AUTHENTICATION for d in (20, 21, 22, 23, 24, 25, 26, 29)},
}
# Codes any refusal is sent with, weaker than words (step 4): X.7.1 "Delivery
# not authorized, message refused" (RFC 3463 §3.8) says only that it was refused.
_GENERIC_CODE_CAUSES: dict[tuple[int, int], Cause] = {(7, 1): Cause.POLICY}
# Whole subjects, where the detail is not in the table (RFC 3463 §3.2).
_SUBJECT_CAUSES: dict[int, Cause] = {
    3: Cause.SYSTEM_ERROR, 5: Cause.SYSTEM_ERROR, 7: Cause.POLICY,
}

# The code a cause stands for, to infer one where the bounce gives none
# (subject.detail; the class comes from the reply or the permanence).
_CAUSE_CODES: dict[Cause, str] = {
    Cause.USER_UNKNOWN: "1.1", Cause.HOST_UNKNOWN: "1.2", Cause.MAILBOX_FULL: "2.2",
    Cause.MESSAGE_TOO_LARGE: "3.4", Cause.SPAM_OR_CONTENT: "7.1", Cause.BLOCKLISTED: "7.1",
    Cause.AUTHENTICATION: "7.26", Cause.RELAYING_DENIED: "7.1", Cause.POLICY: "7.1",
    Cause.EXPIRED: "4.7", Cause.UNREACHABLE: "4.1", Cause.SYSTEM_ERROR: "3.0",
    Cause.MAILBOX_DISABLED: "2.1", Cause.ADDRESS_MOVED: "1.6", Cause.RATE_LIMITED: "4.5",
    Cause.SYNTAX_ERROR: "1.3", Cause.UNKNOWN: "0.0",
}


# A server says why in its first sentences; a longer "reply" is not read further.
WORDS_LIMIT = 2000
# The reply code that starts each line of a multi-line reply (RFC 5321 §4.2.1,
# "550-first line", "550 last line"), left inside the words once the reply is
# unfolded: "is not permitted to 550 relay through this server".
_CONTINUATION = re.compile(r"(?<!\S)[245]\d\d[- ](?=\S)")
# Who answered, as Postfix and Exim put it before the reply ("host
# mx.example.com[192.0.2.1] said:", "host mx.example.com [192.0.2.1]:"): the
# word "host" there is no subject of the reply's words ("... said: 550 5.7.1
# Blocked by SpamAssassin" is not a blocked host). Each part is bounded.
_ANSWERING_HOST = re.compile(
    r"\bhost [A-Za-z0-9.-]{1,255} ?\[[0-9A-Fa-f.:]{1,64}\](?: said)?:")
# A virus scanner's notice that it passed the message, as gateways append it
# to what they relay ("has been scanned for all viruses", MailScanner's "and is
# believed to be clean"): no refusal, and its "virus" names no cause.
_SCAN_NOTICE = re.compile(
    r"(?:scanned|checked) for (?:all |known )?viruses|believed to be clean|virus[- ]free",
    re.IGNORECASE)


def _reply_words(text: str) -> str:
    """The reply's words, without what is not the server's reason."""
    words = _CONTINUATION.sub("", text[:WORDS_LIMIT])
    return _SCAN_NOTICE.sub(" ", _ANSWERING_HOST.sub(" ", words))


def _first_cause(words: str, table: tuple[tuple[re.Pattern[str], Cause], ...]) -> Cause | None:
    for pattern, cause in table:
        if pattern.search(words):
            return cause
    return None


def cause_from_words(text: str | None) -> Cause | None:
    """The cause the reply's words name, specific words before generic ones;
    None when they name none we know."""
    if not text:
        return None
    words = _reply_words(text)
    return _first_cause(words, _SPECIFIC_WORDS) or _first_cause(words, _GENERIC_WORDS)


def _code_parts(status: str | None) -> tuple[int, int] | None:
    meaning = describe(status)
    if not meaning.valid:
        return None
    _, subject, detail = (int(part) for part in meaning.code.split("."))
    return subject, detail


def _specific_code_cause(status: str | None) -> Cause | None:
    parts = _code_parts(status)
    return None if parts is None else _CODE_CAUSES.get(parts)


def _generic_code_cause(status: str | None) -> Cause | None:
    parts = _code_parts(status)
    if parts is None:
        return None
    subject, detail = parts
    cause = _GENERIC_CODE_CAUSES.get(parts)
    if cause is None and detail != 0:
        cause = _SUBJECT_CAUSES.get(subject)
    if cause is None and subject in (3, 5) and detail == 0:
        cause = Cause.SYSTEM_ERROR
    return cause


def cause_from_code(status: str | None) -> Cause:
    """The cause an RFC 3463 code stands for; UNKNOWN for X.0.0 or no code."""
    return _specific_code_cause(status) or _generic_code_cause(status) or Cause.UNKNOWN


def cause_of(status: str | None, diagnostic: str | None) -> Cause:
    """The cause of one recipient's failure, the evidence in the module's order:
    specific words, a specific code, generic words, a generic code."""
    words = _reply_words(diagnostic) if diagnostic else ""
    return (_first_cause(words, _SPECIFIC_WORDS) or _specific_code_cause(status)
            or _first_cause(words, _GENERIC_WORDS) or _generic_code_cause(status)
            or Cause.UNKNOWN)


def inferred_code(cause: Cause, permanent: bool, basic: str | None) -> str | None:
    """The RFC 3463 code a cause stands for, in the class of the basic reply
    code (else of the permanence); None when nothing at all is known."""
    if cause is Cause.UNKNOWN and basic is None:
        return None
    klass = basic[0] if basic and basic[0] in "45" else ("5" if permanent else "4")
    return f"{klass}.{_CAUSE_CODES[cause]}"
