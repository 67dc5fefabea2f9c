"""The built-in score table and rules: docs/rules.md §1-4 turned into policy.

These are the defaults of `Policy.scores` and `Policy.rules`, and the
shipped policy.yaml spells out exactly the same values with a comment on
each (a test keeps the two equal). The reasoning for each number lives in
policy.yaml, where the admin reads it.

The scale: thresholds are 3 (low trust) and 8 (quarantine). One clear
weakness is worth 3, so on its own it marks the message; supporting or
ambiguous signals are worth 1 or 2; three weaknesses together quarantine.
"""

from __future__ import annotations

from types import MappingProxyType

from trustmilter.policy.rules import ReplyConfig, Rule
from trustmilter.verdict import Action

_CONNECTION_SCORES: dict[str, float] = {
        # The sending IP (docs/rules.md §1)
        "iprev.ptr_missing": 3.0,
        "iprev.ptr_generic": 3.0,
        "iprev.forward_mismatch": 3.0,
        "iprev.ptr_not_sender_domain": 1.0,
        # HELO/EHLO (docs/rules.md §2, RFC 5321 §2.3.5, §4.1.4)
        "helo.missing": 3.0,
        "helo.ip_literal": 3.0,
        "helo.ip_literal_mismatch": 2.0,
        "helo.localhost": 3.0,
        "helo.single_label": 1.0,
        "helo.unknown_tld": 3.0,
        "helo.nxdomain": 3.0,
        "helo.no_address": 3.0,
        "helo.not_client_ip": 1.0,
        "helo.not_sender_domain": 3.0,
        "helo.not_sender_mx": 0.5,
        # Sender authentication (docs/rules.md §3)
        "spf.mailfrom.fail": 3.0,
        "spf.mailfrom.softfail": 2.0,
        "spf.mailfrom.neutral": 1.0,
        "spf.mailfrom.none": 1.0,
        "spf.mailfrom.permerror": 2.0,
        "spf.helo.fail": 1.0,
}

DEFAULT_SCORES: MappingProxyType[str, float] = MappingProxyType(
    {
        **_CONNECTION_SCORES,
        # The hop before a trusted forwarder is judged as the forwarder would be.
        **{f"forwarded.{name}": value for name, value in _CONNECTION_SCORES.items()},
        "dkim.fail": 3.0,
        "dkim.permerror": 2.0,
        "dkim.none": 1.0,
        "dmarc.fail": 3.0,
        "dmarc.none": 1.0,
        "dmarc.permerror": 1.0,
        "author.unauthenticated": 3.0,
        "arc.fail": 1.0,
        # Blocklists (docs/rules.md §1, §7); each listing adds its list's weight on top
        "dnsbl.listed": 2.0,
        "uribl.listed": 2.0,
        # Names that do not exist or cannot receive mail (docs/rules.md §3)
        "names.sender_nonexistent": 3.0,
        "names.sender_no_address": 3.0,
        "names.from_nonexistent": 3.0,
        "names.from_no_address": 3.0,
        "names.rcpt_nonexistent": 3.0,
        "names.sender_field_nonexistent": 3.0,
        "names.sender_field_no_address": 3.0,
        "names.reply_to_nonexistent": 3.0,
        "names.reply_to_no_address": 3.0,
        "names.to_nonexistent": 3.0,
        "names.to_no_address": 1.0,
        "names.cc_nonexistent": 3.0,
        "names.cc_no_address": 1.0,
        # Header sanity (docs/rules.md §4, RFC 5322)
        "headers.from_missing": 8.0,
        "headers.from_multiple": 3.0,
        "headers.from_unparseable": 3.0,
        "headers.date_missing": 3.0,
        "headers.date_invalid": 2.0,
        "headers.subject_malformed": 3.0,
        "headers.to_malformed": 3.0,
        "headers.reply_to_malformed": 3.0,
        "headers.subject_missing": 1.0,
        "headers.to_missing": 1.0,
        "headers.reply_to_missing": 3.0,
        "headers.message_id_missing": 1.0,
        "headers.nul_bytes": 3.0,
        "headers.line_too_long": 1.0,
        "headers.8bit_unencoded": 1.0,
        "headers.mime_too_deep": 3.0,
        "headers.mime_too_many_parts": 3.0,
        # Learned reputation (docs/rules.md §7): cancels the points that would
        # re-quarantine a sender whose held mail was released often enough.
        "reputation.learned": -10.0,
    }
)

# Gateways we trust may already have decided; so may a trusted ARC sealer.
_VOUCHED_DMARC = ("arc.trusted_pass", "upstream.dmarc.pass")
# Signs that the sending host is no mail server in good standing: a forged
# p=reject message from such a host is refused (RFC 9989 §7.4 asks for more
# than the policy alone). A forwarder or a list has a PTR and a real HELO.
_HOST_SIGNS = (
    "iprev.ptr_missing", "iprev.ptr_generic", "iprev.forward_mismatch",
    "helo.missing", "helo.ip_literal", "helo.localhost", "helo.single_label",
    "helo.nxdomain", "helo.unknown_tld", "helo.no_address",
)
# ... and the same of the hop before a trusted forwarder, the real sender there.
_NOT_A_MAIL_SERVER = (*_HOST_SIGNS, "dnsbl.listed", *(f"forwarded.{s}" for s in _HOST_SIGNS))
_DNS_RETRY = "Temporary DNS failure checking the sender, please try again later"
# docs/rules.md §7: releasing held mail teaches the filter; such a sender is
# exempt from the quarantine rules below, never from a reject rule.
_LEARNED = "reputation.learned"
# In-Reply-To/References names a message we sent (checks/replies.py): a
# customer answering us. No proof of anything (every recipient of our mail
# sees its Message-ID), so it lifts automation quarantine rules only.
_REPLY_OURS = "reply.ours"
# The seed's remedy for a no-reply sender known to be safe: an allow-listed
# sender, authenticated as itself, is exempt from the automation quarantine
# rules below (never from a reject, a DMARC forgery or a loop).
_ALLOWLISTED = "allowlist.sender"
# RFC 3463 5.7.1: delivery not authorized, message refused (a loop stopped
# before it starts).
_NOTIFICATION = "Mail loop refused: notifications are not sent to "
# RFC 3463 X.4.6: routing loop detected.
_ROUTING_LOOP = "Routing loop detected"

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        name="sender-domain-nonexistent",
        when=("names.sender_nonexistent",),
        action=Action.REJECT,
        reply=ReplyConfig(550, "5.1.8", "Sender address rejected: domain does not exist"),
        reason="nonexistent sender domains are not trusted; RFC 3463 5.1.8",
    ),
    # RFC 9989 §7.4: "p=reject" alone is no reason to reject: indirect flows
    # (forwarders, role aliases, mailing lists; RFC 7960) break DMARC for
    # legitimate mail. Rejected only with other evidence that the sending host
    # is no mail server in good standing; otherwise held for review.
    Rule(
        name="dmarc-reject",
        when=("dmarc.fail", "dmarc.policy.reject"),
        any=_NOT_A_MAIL_SERVER,
        unless=_VOUCHED_DMARC,
        action=Action.REJECT,
        reply=ReplyConfig(550, "5.7.1", "Rejected by the DMARC policy of the From domain"),
        reason="RFC 9989 §7.4: p=reject and other evidence of forgery (the sending host)",
    ),
    Rule(
        name="dmarc-reject-held",
        when=("dmarc.fail", "dmarc.policy.reject"),
        unless=_VOUCHED_DMARC,
        action=Action.QUARANTINE,
        reason="RFC 9989 §7.4: p=reject alone is not rejected (indirect flows, RFC 7960)",
    ),
    Rule(
        name="dmarc-quarantine",
        when=("dmarc.fail", "dmarc.policy.quarantine"),
        unless=(*_VOUCHED_DMARC, _LEARNED),
        action=Action.QUARANTINE,
        reason="RFC 7489 §6.3 p=quarantine, honoured as the domain owner asks",
    ),
    Rule(
        name="spf-fail-unaligned",
        when=("spf.mailfrom.fail",),
        unless=("dmarc.dkim_aligned", *_VOUCHED_DMARC, "upstream.spf.pass", _LEARNED),
        action=Action.QUARANTINE,
        reason="failed SPF not rescued by an aligned DKIM signature",
    ),
    Rule(
        name="forwarded-spf-fail-unaligned",
        when=("forwarded.spf.mailfrom.fail",),
        unless=("dmarc.dkim_aligned", *_VOUCHED_DMARC, "upstream.spf.pass", _LEARNED),
        action=Action.QUARANTINE,
        reason="sender trust: the original sender's server fails SPF behind a trusted forwarder",
    ),
    Rule(
        name="dkim-invalid",
        when=("dkim.fail",),
        unless=("dmarc.dkim_aligned", _LEARNED),
        action=Action.QUARANTINE,
        reason="sender trust: an invalid DKIM signature is not trusted (RFC 6376 §6.3)",
    ),
    Rule(
        name="from-domain-nonexistent",
        when=("names.from_nonexistent",),
        action=Action.QUARANTINE,
        reason="nonexistent domain names in sender headers",
    ),
    Rule(
        name="sender-fields-nonexistent",
        any=("names.sender_field_nonexistent", "names.reply_to_nonexistent"),
        action=Action.QUARANTINE,
        reason="nonexistent domain names in the sender headers are not trusted",
    ),
    Rule(
        name="recipient-domain-nonexistent",
        when=("names.rcpt_nonexistent",),
        action=Action.REJECT,
        reply=ReplyConfig(550, "5.1.2", "Recipient address rejected: domain does not exist"),
        reason="nonexistent recipient domains are not trusted; RFC 3463 5.1.2",
    ),
    Rule(
        name="from-unauthenticated",
        when=("author.unauthenticated",),
        unless=(*_VOUCHED_DMARC, _LEARNED),
        action=Action.QUARANTINE,
        reason="mail from a domain that publishes no SPF and is not otherwise authenticated",
    ),
    Rule(
        name="dmarc-temperror",
        when=("dmarc.temperror",),
        action=Action.TEMPFAIL,
        reply=ReplyConfig(451, "4.4.3", _DNS_RETRY),
        reason="RFC 7489 §6.6.3 leaves DNS errors to us; 451 4.4.3 as RFC 7208 §8.6",
    ),
    Rule(
        name="spf-temperror",
        when=("spf.mailfrom.temperror",),
        unless=("dmarc.pass",),
        action=Action.TEMPFAIL,
        reply=ReplyConfig(451, "4.4.3", _DNS_RETRY),
        reason="RFC 7208 §8.6: SPF temperror, reply 451 4.4.3; moot once DMARC passed",
    ),
    Rule(
        name="forwarded-spf-temperror",
        when=("forwarded.spf.mailfrom.temperror",),
        unless=("dmarc.pass",),
        action=Action.TEMPFAIL,
        reply=ReplyConfig(451, "4.4.3", _DNS_RETRY),
        reason="RFC 7208 §8.6 for the hop before a trusted forwarder",
    ),
    # --- Negative feedback: "mark as spam" damages a sender's standing. Held
    # whatever the score, never exempted; held rather than refused, since the
    # envelope sender a mark is kept under is anyone's to write.
    Rule(
        name="reputation-rejected",
        when=("reputation.rejected",),
        action=Action.QUARANTINE,
        reason="mark as spam damages a sender's standing: held whatever its score",
    ),
    # --- Mail loops (docs/rules.md §5) ---
    # Our support address claimed from outside is no loop by itself (a help
    # desk may relay its notifications through an outside service); automated,
    # it is held as a suspected one, and a release confirms it.
    Rule(
        name="loop-support-sender",
        when=("loop.support_sender",),
        any=("auto.*",),
        unless=(_LEARNED,),
        action=Action.QUARANTINE,
        reason="a support address is never a user address: automated mail in its name "
               "from outside is our own coming back, or a machine speaking as our help desk",
    ),
    Rule(
        name="loop-support-to-support",
        when=("loop.support_to_support",),
        action=Action.REJECT,
        reply=ReplyConfig(550, "5.7.1", "Mail loop refused: support address to support address"),
        reason="two support addresses would answer each other for ever",
    ),
    # The purpose of the support-address rule: no notification is ever sent
    # to a support address (nor to another help desk), refused before it leaves.
    Rule(
        name="loop-notification-to-support",
        when=("loop.notification_to_support",),
        action=Action.REJECT,
        reply=ReplyConfig(550, "5.7.1", _NOTIFICATION + "a support address"),
        reason="a notification to a support address comes back as a new ticket, without end",
    ),
    Rule(
        name="loop-notification-to-helpdesk",
        when=("loop.notification_to_helpdesk",),
        action=Action.REJECT,
        reply=ReplyConfig(550, "5.7.1", _NOTIFICATION + "another help desk"),
        reason="two help desks notifying each other answer each other for ever",
    ),
    Rule(
        name="loop-too-many-hops",
        when=("loop.too_many_received",),
        action=Action.REJECT,
        reply=ReplyConfig(554, "5.4.6", _ROUTING_LOOP + ": too many hops"),
        reason="RFC 5321 §6.3 hop count; RFC 3463 5.4.6 routing loop detected",
    ),
    Rule(
        name="loop-marker-seen",
        when=("loop.marker_seen",),
        action=Action.REJECT,
        reply=ReplyConfig(554, "5.4.6", _ROUTING_LOOP + ": this message was here before"),
        reason="our own loop marker came back; RFC 3463 5.4.6 routing loop detected",
    ),
    # --- Rate tiers (docs/rules.md §5: 20 pass, the next 20 held, beyond 40 refused) ---
    Rule(
        name="rate-reject",
        when=("rate.tier.reject",),
        action=Action.REJECT,
        reply=ReplyConfig(550, "5.7.1", "Too many messages from this sender in the last hour"),
        reason="beyond 40 in the hour, rejected outright",
    ),
    Rule(
        name="rate-quarantine",
        when=("rate.tier.quarantine",),
        action=Action.QUARANTINE,
        reason="messages 21 to 40 in the hour are held",
    ),
    Rule(
        name="rate-state-unavailable",
        when=("rate.state_unavailable",),
        action=Action.TEMPFAIL,
        reply=ReplyConfig(451, "4.3.0", "Temporary local problem, please try again later"),
        reason="the rate store is down (state.on_error: tempfail); RFC 3463 4.3.0",
    ),
    # --- Automated mail (docs/rules.md §5, §7: no ticket, suspended) ---
    # An automatic answer to mail we sent: two machines answering each other,
    # the loop at its first turn. Held at once, and lifted by nothing (not a
    # learned reputation: it would be the loop's own releases).
    Rule(
        name="reply-automatic",
        when=(_REPLY_OURS,),
        any=("auto.autoreply", "auto.helpdesk", "auto.machine_generated", "auto.noreply_sender"),
        action=Action.QUARANTINE,
        reason="an automatic reply to our own mail: two machines answering each other",
    ),
    Rule(
        name="auto-noreply",
        when=("auto.noreply_sender",),
        unless=(_LEARNED, _ALLOWLISTED),
        action=Action.QUARANTINE,
        reason="no-reply senders create no ticket",
    ),
    Rule(
        name="auto-bulk",
        when=("auto.bulk",),
        # A customer's answer to our own mail is no bulk mail, whatever list
        # relayed it (reply.ours lifts only this kind of rule).
        unless=(_LEARNED, _ALLOWLISTED, _REPLY_OURS),
        action=Action.QUARANTINE,
        reason="bulk mail creates no ticket by default",
    ),
    Rule(
        name="auto-machine-generated",
        when=("auto.machine_generated",),
        unless=(_LEARNED, _ALLOWLISTED),
        action=Action.QUARANTINE,
        reason="machine-generated mail creates no ticket (RFC 3834)",
    ),
    # An automatic reply, or another help desk's own output, creates no
    # ticket: answering it is how two machines answer each other for ever.
    Rule(
        name="auto-autoreply",
        when=("auto.autoreply",),
        unless=(_LEARNED, _ALLOWLISTED),
        action=Action.QUARANTINE,
        reason="mail loops: an automatic reply creates no ticket (RFC 3834 §2)",
    ),
    Rule(
        name="auto-helpdesk",
        when=("auto.helpdesk",),
        unless=(_LEARNED, _ALLOWLISTED),
        action=Action.QUARANTINE,
        reason="mail loops: another help desk's own output creates no ticket",
    ),
    Rule(
        name="auto-bounce",
        when=("auto.bounce",),
        unless=(_LEARNED,),
        action=Action.QUARANTINE,
        reason="bounces from outside are held for review",
    ),
)
