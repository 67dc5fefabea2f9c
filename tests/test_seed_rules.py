"""docs/rules.md, row by row: every sender-trust example through the engine.

Each row of the table in docs/rules.md is one case here, under the same
id: the shipped policy.yaml (loaded as shipped; a row that needs an
operator's setting, such as a trusted forwarder or the suggested
blocklists, edits the shipped text the way the operator would), the DNS
test server answering a zone made for the row, and a whole transaction
(MAIL FROM, RCPT TO, end of message). The test asserts the verdict and the
stage the table gives, and the signals or rules that decide it.
`test_the_table_and_the_tests_agree` keeps the two from drifting apart.

The seed's names become test names where DNS must answer: domain.com is
example.com, otherdomain.com example.net, the server 1.2.3.4 is
192.0.2.10, isp.com isp.example.net. Names that need no DNS keep the
seed's spelling (`HELO invalid.tld`: the test server, like the root, has
no "tld.").
"""

from __future__ import annotations

import ipaddress
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml

from keys import key_zone, rsa_key, seal, sign
from trustmilter.config.load import parse_settings
from trustmilter.config.settings import Settings
from trustmilter.daemon.apps import build_app
from trustmilter.engine import Client, Transaction, VerdictRecord
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "policy.yaml"
TABLE = ROOT / "docs" / "rules.md"

# --- the people and their DNS ------------------------------------------------

# example.com ("domain.com"): its server mail.example.com, 192.0.2.10 ("1.2.3.4").
IP = "192.0.2.10"
PTR = "10.2.0.192.in-addr.arpa."
SPF = "v=spf1 ip4:192.0.2.10 -all"


def sender_zone(spf: str | None = SPF, dmarc: str | None = "v=DMARC1; p=reject",
                ptr: str | None = "mail.example.com") -> str:
    """example.com as the seed describes domain.com, with what a row changes."""
    lines = [
        "example.com.       300 IN MX  10 mail.example.com.",
        f"example.com.       300 IN A   {IP}",
        f"mail.example.com.  300 IN A   {IP}",
    ]
    if spf is not None:
        lines.append(f'example.com.       300 IN TXT "{spf}"')
    if dmarc is not None:
        lines.append(f'_dmarc.example.com. 300 IN TXT "{dmarc}"')
    if ptr is not None:
        lines.append(f"{PTR}  300 IN PTR {ptr}.")
    return "\n".join(lines) + "\n"


KEY = rsa_key(1024)
# The recipient's side, example.net ("otherdomain.com", which exists and publishes
# nothing: no SPF, no DMARC), and the DKIM keys.
OTHERS = f"""
example.org.               300 IN MX  10 mx.example.org.
example.org.               300 IN A   192.0.2.20
example.net.               300 IN MX  10 mx.example.net.
example.net.               300 IN A   198.51.100.1
mx.example.net.            300 IN A   198.51.100.1
mail.example.net.          300 IN A   {IP}
""" + key_zone(KEY, "sel", "example.com")
ZONE = sender_zone() + OTHERS

# sender.example.net: someone else's server, authenticated for its own domain
# (SPF pass, PTR and HELO in order): the forger of the "forged sender" rows.
OTHER_SERVER = """
sender.example.net.        300 IN MX  10 out.sender.example.net.
sender.example.net.        300 IN TXT "v=spf1 ip4:198.51.100.7 -all"
out.sender.example.net.    300 IN A   198.51.100.7
7.100.51.198.in-addr.arpa. 300 IN PTR out.sender.example.net.
"""
OTHER_CLIENT = Client(ipaddress.ip_address("198.51.100.7"), "out.sender.example.net",
                      "out.sender.example.net")
CLEAN = Client(ipaddress.ip_address(IP), "mail.example.com", "mail.example.com")
NO_PTR = Client(ipaddress.ip_address(IP), None, "mail.example.com")


def helo(name: str) -> Client:
    return replace(CLEAN, helo=name)


# --- forwarding: the customer's own server, forwarder.example.net --------------

FORWARDER = "forwarder.example.net"
FORWARDER_ZONE = f"""
{FORWARDER}.               300 IN A   198.51.100.25
{FORWARDER}.               300 IN MX  10 mx.{FORWARDER}.
{FORWARDER}.               300 IN TXT "v=spf1 ip4:198.51.100.25 -all"
mx.{FORWARDER}.            300 IN A   198.51.100.25
25.100.51.198.in-addr.arpa. 300 IN PTR mx.{FORWARDER}.
""" + key_zone(KEY, "arc", FORWARDER)
FORWARDING = Client(ipaddress.ip_address("198.51.100.25"), f"mx.{FORWARDER}",
                    f"mx.{FORWARDER}")
OUR_STAMP = (f"Received: from mx.{FORWARDER} (mx.{FORWARDER} [198.51.100.25])"
             " by mx.example.org (Postfix) with ESMTPS id 4Q1; Mon, 01 Jan 2024 10:00:02 +0000")
ORIGIN_STAMP = (f"Received: from mail.example.com (mail.example.com [{IP}])"
                f" by mx.{FORWARDER} (Postfix) with ESMTPS id 9Z8;"
                " Mon, 01 Jan 2024 10:00:01 +0000")
RECORDED = ("dkim=pass header.d=example.com; spf=pass smtp.mailfrom=alice@example.com;"
            " dmarc=pass header.from=example.com")
TRUST_FORWARDER = (("trusted_forwarders: []", f"trusted_forwarders: [.{FORWARDER}]"),)
TRUST_SEALER = (("    trusted_sealers: []\n", f"    trusted_sealers: [{FORWARDER}]\n"),)
FORM_FIELDS = (("\n    required: [subject, to]\n", "\n    required: [subject, to, reply_to]\n"),)

# --- the suggested blocklists, uncommented, their zones on the test server -----

IP_LIST = "zen.example.test"
URI_LIST = "dbl.example.test"
IP_LISTED = f"10.2.0.192.{IP_LIST}.  300 IN A 127.0.0.2\n"  # RFC 5782 §2.1
URI_LISTED = f"example.net.{URI_LIST}.  300 IN A 127.0.1.2\n"  # RFC 5782 §2.3


def uncomment_lists(text: str) -> str:
    """policy.yaml with its commented-out example lists in force, pointed at the test zones."""
    for section, zone in (("dnsbl", IP_LIST), ("uribl", URI_LIST)):
        start = text.index(f"\n  {section}:\n")
        block = text[start: text.index("\n    enabled:", start)]
        example = block[block.index("    # lists:\n"):]
        lists = yaml.safe_load("\n".join(line.removeprefix("    # ")
                                         for line in example.splitlines()))["lists"]
        lists = [{**entry, "zone": zone} for entry in lists]
        at = text.index("\n    lists: []\n", start)
        flow = yaml.safe_dump(lists, default_flow_style=True).strip()
        text = text[:at] + f"\n    lists: {flow}\n" + text[at + len("\n    lists: []\n"):]
    return text


# --- the message --------------------------------------------------------------

FIELDS = (
    ("From", "Alice <alice@example.com>"),
    ("To", "Support <support@example.org>"),
    ("Subject", "Question about my order"),
    ("Date", "Mon, 01 Jan 2024 10:00:00 +0000"),
    ("Message-ID", "<seed-1@example.com>"),
)


@dataclass(frozen=True)
class Mail:
    """A message as the row's sender writes it, and what happens to it on the way."""

    fields: tuple[tuple[str, str], ...] = ()  # replace a field of FIELDS, or add one
    drop: tuple[str, ...] = ()
    body: str = "Hello,\r\nwhere is my order?\r\n"
    signer: str | None = "example.com"  # DKIM d= (the key is published for example.com)
    changed: bool = False  # a footer added after signing (the signature breaks)
    sealed: bool = False  # ARC-sealed by the forwarder, which recorded RECORDED
    stamps: tuple[str, ...] = ()  # Received fields added after signing, topmost first

    def raw(self) -> bytes:
        fields = dict(FIELDS)
        fields.update(self.fields)
        lines = [f"{name}: {value}" for name, value in fields.items() if name not in self.drop]
        raw = "\r\n".join(lines).encode() + b"\r\n\r\n" + self.body.encode()
        if self.signer is not None:
            raw = sign(raw, KEY, self.signer)
        if self.changed:
            raw += b"--\r\nforwarded by the customer's server\r\n"
        if self.sealed:
            raw = seal(raw, KEY, FORWARDER, RECORDED)
        return "".join(f"{stamp}\r\n" for stamp in self.stamps).encode() + raw


# --- one row ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of docs/rules.md: the case and the verdict the table gives it."""

    verdict: str  # as the table writes it: "low trust", "reject at RCPT TO", ...
    # Signals or rule names that must be in the record: what decides the verdict.
    # Empty: nothing at all may count against the message.
    decided_by: tuple[str, ...]
    mail: Mail = Mail()
    zone: str = ZONE
    client: Client = CLEAN
    sender: str = "alice@example.com"
    rcpt: str = "support@example.org"
    policy: tuple[tuple[str, str], ...] = ()  # edits of the shipped text
    blocklists: bool = False
    # Held mail from the same sender released this many times first (what it
    # was held for is what the release teaches), `taught` being that mail.
    released: int = 0
    auth: str | None = None  # the SASL login of the client, if it authenticated
    taught: Mail = field(default_factory=Mail)
    # Then deleted as spam this many times (`quarantine delete --spam`),
    # `taught` again being the mail that was held.
    marked: int = 0
    # Our notification (NOTICE) sent to the sender first, through the outbound
    # path, with checks.replies' key set: the row's mail may answer it.
    notified: bool = False
    # Messages sent first, within the hour (the rate tiers): `before` times
    # `earlier` (None: the row's own mail) from `earlier_client` (None: the
    # row's), MAIL FROM `earlier_sender` with {i} their number ("": the row's).
    before: int = 0
    earlier: Mail | None = None
    earlier_client: Client | None = None
    earlier_sender: str = ""


BULK = Mail(fields=(("Precedence", "bulk"), ("List-Id", "<news.example.com>")))
# Our help desk's notification to alice, and alice's mail answering it.
NOTICE_ID = "<notice-4711@example.org>"
NOTICE = (f"From: Help Desk <support@example.org>\r\nTo: alice@example.com\r\n"
          f"Subject: [#4711] Updated\r\nDate: Mon, 01 Jan 2024 09:00:00 +0000\r\n"
          f"Message-ID: {NOTICE_ID}\r\n\r\nYour ticket was updated.\r\n").encode()
ANSWER = Mail(fields=(("In-Reply-To", NOTICE_ID), ("References", NOTICE_ID),
                      ("Subject", "Re: [#4711] Updated")))
FORGED = Mail(signer=None)  # From alice@example.com, sent by someone else unsigned
FORM = Mail(fields=(("From", "Web Form <form@example.com>"),
                    ("Reply-To", "Customer <customer@example.org>"),
                    ("Subject", "Contact form: question")))
NOREPLY = Mail(fields=(("From", "Alerts <noreply@example.com>"), ("Subject", "Disk full")))
ALLOWLIST_NOREPLY = (("    senders: []\n", "    senders: [noreply@example.com]\n"),)
# broken.example.net: its name servers fail every query (SERVFAIL).
BROKEN = "".join(f"$SERVFAIL {name}broken.example.net.\n" for name in ("", "_dmarc.", "sel._domainkey."))
NOSUCH = "nosuch.example.net"  # under example.net, which exists; this name does not
# The help desk's support addresses, as the operator lists them.
OUR_DESK = (("    support_addresses: []\n",
             "    support_addresses: [support@example.org, help@example.com]\n"),)
OUR_HOST = Client(ipaddress.ip_address("127.0.0.1"), None, "localhost")  # a trusted network
LAPTOP = Client(ipaddress.ip_address("203.0.113.5"), None, "laptop.example.net")  # SASL

ROWS: dict[str, Row] = {
    # §1 The sending IP: its PTR.
    "S1.1": Row("accept", ()),
    "S1.2": Row("low trust", ("iprev.ptr_missing",), zone=sender_zone(ptr=None) + OTHERS,
                client=NO_PTR),
    "S1.3": Row("low trust", ("iprev.ptr_generic",),
                zone=sender_zone(ptr="10-2-0-192-cable-subscribers.isp.example.net") + OTHERS
                + f"10-2-0-192-cable-subscribers.isp.example.net. 300 IN A {IP}\n",
                client=replace(CLEAN, hostname="10-2-0-192-cable-subscribers.isp.example.net")),
    "S1.4": Row("accept", ("iprev.ptr_not_sender_domain",),
                zone=sender_zone(ptr="smtp.provider.test") + OTHERS
                + f"smtp.provider.test. 300 IN A {IP}\n",
                client=replace(CLEAN, hostname="smtp.provider.test")),
    "S1.5": Row("low trust", ("iprev.forward_mismatch",),
                zone=sender_zone(ptr="relay.example.com") + OTHERS
                + "relay.example.com. 300 IN A 192.0.2.99\n",
                client=NO_PTR),
    "S1.6": Row("low trust", ("iprev.ptr_missing", "helo.nxdomain"),
                zone=sender_zone(ptr=None) + OTHERS,
                client=replace(NO_PTR, helo="not.existing.example.com")),
    # §1/§7 The spam threshold: the suggested lists, uncommented.
    "S1.7": Row("low trust", ("dnsbl.listed",), zone=ZONE + IP_LISTED, blocklists=True),
    "S1.8": Row("quarantine", ("dnsbl.listed", "iprev.ptr_missing"),
                zone=sender_zone(ptr=None) + OTHERS + IP_LISTED, client=NO_PTR,
                blocklists=True),
    "S1.9": Row("low trust", ("uribl.listed",), zone=ZONE + URI_LISTED, blocklists=True,
                mail=Mail(body="Best regards\r\n-- \r\nhttps://www.offers.example.net/x\r\n")),
    "S1.10": Row("quarantine", ("uribl.listed", "iprev.ptr_missing"),
                 zone=sender_zone(ptr=None) + OTHERS + URI_LISTED, client=NO_PTR,
                 blocklists=True,
                 mail=Mail(body="Best regards\r\n-- \r\nhttps://www.offers.example.net/x\r\n")),
    # §2 HELO/EHLO.
    "S2.1": Row("accept", (), client=helo("mail.example.com")),
    "S2.2": Row("low trust", ("helo.not_sender_domain",), client=helo("mail.example.net")),
    "S2.3": Row("low trust", ("helo.localhost",), client=helo("localhost")),
    "S2.4": Row("low trust", ("helo.ip_literal",), client=helo(IP)),
    "S2.5": Row("low trust", ("helo.unknown_tld",), client=helo("invalid.tld")),
    "S2.6": Row("low trust", ("helo.nxdomain",), client=helo("not.existing.example.com")),
    "S2.7": Row("low trust", ("helo.single_label", "helo.nxdomain"), client=helo("mailhost")),
    "S2.8": Row("accept", ("helo.not_sender_mx",), client=helo("relay.example.com"),
                zone=ZONE + f"relay.example.com. 300 IN A {IP}\n"),
    # §3 SPF: the two correct records (unsigned: SPF alone authenticates the mail).
    "S3.1": Row("accept", ("spf.mailfrom.pass", "dmarc.pass"), mail=FORGED,
                zone=sender_zone(spf="v=spf1 mx:example.com ~all") + OTHERS),
    "S3.2": Row("accept", ("spf.mailfrom.pass", "dmarc.pass"), mail=FORGED,
                zone=sender_zone(spf="v=spf1 ip4:192.0.2.10 ~all") + OTHERS),
    # §3 Not trusted.
    "S3.3": Row("quarantine", ("author.unauthenticated", "from-unauthenticated"),
                mail=Mail(fields=(("From", "Bob <bob@example.net>"),))),
    "S3.4": Row("quarantine", ("dmarc.fail", "dmarc-reject-held"), mail=FORGED,
                zone=ZONE + OTHER_SERVER, client=OTHER_CLIENT, sender="bob@sender.example.net"),
    "S3.5": Row("quarantine", ("dmarc.fail", "dmarc-quarantine"), mail=FORGED,
                zone=sender_zone(dmarc="v=DMARC1; p=quarantine") + OTHERS + OTHER_SERVER,
                client=OTHER_CLIENT, sender="bob@sender.example.net"),
    "S3.6": Row("low trust", ("dmarc.fail",), mail=FORGED,
                zone=sender_zone(dmarc="v=DMARC1; p=none") + OTHERS + OTHER_SERVER,
                client=OTHER_CLIENT, sender="bob@sender.example.net"),
    "S3.7": Row("quarantine", ("dkim.fail", "dkim-invalid"), mail=Mail(changed=True)),
    "S3.8": Row("quarantine", ("spf.mailfrom.fail", "spf-fail-unaligned"),
                mail=Mail(signer=None, fields=(("From", "Carol <carol@sender.example.net>"),)),
                zone=ZONE + OTHER_SERVER.replace("198.51.100.7 -all", "198.51.100.8 -all"),
                client=OTHER_CLIENT, sender="carol@sender.example.net"),
    "S3.9": Row("quarantine", ("spf.mailfrom.fail", "dmarc-reject-held"), mail=FORGED,
                zone=ZONE + OTHER_SERVER, client=OTHER_CLIENT),
    "S3.24": Row("reject", ("iprev.ptr_missing", "dmarc-reject"), mail=FORGED,
                 zone=ZONE + OTHER_SERVER,
                 client=Client(ipaddress.ip_address("203.0.113.9"), None, "out.sender.example.net"),
                 sender="bob@sender.example.net"),
    # §3 Names in the sender and recipient headers.
    "S3.10": Row("reject at RCPT TO", ("names.sender_nonexistent", "sender-domain-nonexistent"),
                 sender=f"alice@{NOSUCH}"),
    "S3.11": Row("quarantine", ("names.from_nonexistent", "from-domain-nonexistent"),
                 mail=Mail(fields=(("From", f"Alice <alice@{NOSUCH}>"),))),
    "S3.12": Row("quarantine", ("names.sender_field_nonexistent", "sender-fields-nonexistent"),
                 mail=Mail(fields=(("Sender", f"<secretary@{NOSUCH}>"),))),
    "S3.13": Row("quarantine", ("names.reply_to_nonexistent", "sender-fields-nonexistent"),
                 mail=Mail(fields=(("Reply-To", f"<alice@{NOSUCH}>"),))),
    "S3.14": Row("low trust", ("names.to_nonexistent",),
                 mail=Mail(fields=(("To", f"Support <support@{NOSUCH}>"),))),
    "S3.15": Row("low trust", ("names.cc_nonexistent",),
                 mail=Mail(fields=(("Cc", f"Colleague <bob@{NOSUCH}>"),))),
    "S3.16": Row("accept", (), rcpt=f"support@{NOSUCH}"),
    "S3.17": Row("quarantine", ("headers.from_unparseable", "names.from_nonexistent",
                                "from-domain-nonexistent"),
                 mail=Mail(fields=(("From", "Alice <alice@exa_mple..com>"),))),
    "S3.18": Row("tempfail", ("dmarc.temperror", "dmarc-temperror"),
                 mail=Mail(fields=(("From", "Alice <alice@broken.example.net>"),)),
                 zone=ZONE + BROKEN),
    # §3 Forwarding: the customer's own server forwards to us.
    "S3.19": Row("accept", ("forwarded.spf.mailfrom.pass",), client=FORWARDING,
                 mail=Mail(stamps=(OUR_STAMP, ORIGIN_STAMP)), zone=ZONE + FORWARDER_ZONE,
                 policy=TRUST_FORWARDER),
    "S3.20": Row("accept", ("arc.trusted_pass",), client=FORWARDING,
                 mail=Mail(changed=True, sealed=True), zone=ZONE + FORWARDER_ZONE,
                 policy=TRUST_SEALER),
    "S3.21": Row("low trust", ("spf.mailfrom.fail", "dmarc.dkim_aligned"), client=FORWARDING,
                 mail=Mail(stamps=(OUR_STAMP, ORIGIN_STAMP)), zone=ZONE + FORWARDER_ZONE),
    "S3.22": Row("quarantine", ("dkim.fail", "dmarc-reject-held"), client=FORWARDING,
                 mail=Mail(changed=True, stamps=(OUR_STAMP, ORIGIN_STAMP)),
                 zone=ZONE + FORWARDER_ZONE),
    "S3.23": Row("reject", ("forwarded.spf.mailfrom.fail", "dmarc-reject"), client=FORWARDING,
                 mail=Mail(signer=None, stamps=(OUR_STAMP, ORIGIN_STAMP.replace(
                     IP, "203.0.113.66"))),
                 zone=ZONE + FORWARDER_ZONE, policy=TRUST_FORWARDER),
    # §4 Web forms and scripts (the operator has added reply_to where it says so).
    "S4.1": Row("accept", (), mail=FORM, policy=FORM_FIELDS),
    "S4.2": Row("accept", ("headers.subject_missing",), mail=replace(FORM, drop=("Subject",))),
    "S4.3": Row("accept", ("headers.to_missing",), mail=replace(FORM, drop=("To",))),
    "S4.4": Row("accept", (), mail=replace(FORM, drop=("Reply-To",))),
    "S4.5": Row("low trust", ("headers.reply_to_missing",), mail=replace(FORM, drop=("Reply-To",)),
                policy=FORM_FIELDS),
    "S4.6": Row("low trust", ("headers.subject_missing", "headers.to_missing",
                              "headers.reply_to_missing"),
                mail=replace(FORM, drop=("Subject", "To", "Reply-To")), policy=FORM_FIELDS),
    "S4.7": Row("quarantine", ("headers.from_missing",), mail=replace(FORM, drop=("From",)),
                sender="form@example.com"),
    "S4.8": Row("low trust", ("headers.date_missing",), mail=replace(FORM, drop=("Date",))),
    "S4.9": Row("low trust", ("iprev.ptr_missing",), mail=FORM, client=NO_PTR,
                zone=sender_zone(ptr=None) + OTHERS),
    "S4.10": Row("low trust", ("helo.localhost",), mail=FORM, client=helo("localhost")),
    "S4.11": Row("accept", ("spf.mailfrom.pass", "dkim.none", "dmarc.none"),
                 mail=replace(FORM, signer=None), zone=sender_zone(dmarc=None) + OTHERS),
    "S4.12": Row("quarantine", ("author.unauthenticated", "from-unauthenticated"),
                 mail=replace(FORM, signer=None, fields=(
                     *FORM.fields, ("From", "Web Form <form@example.net>"))),
                 sender="form@example.net"),
    "S4.13": Row("quarantine", ("reputation.rejected", "reputation-rejected"), mail=FORM,
                 sender="form@example.com", marked=2, taught=replace(FORM, drop=("From",))),
    # §5 The rate limit: per user, per ticket, per hour; and the allow-list.
    "S5.20": Row("accept", ("rate.pass",), before=19),
    "S5.21": Row("quarantine", ("rate.tier.quarantine", "rate-quarantine"), before=20),
    "S5.22": Row("reject", ("rate.tier.reject", "rate-reject"), before=40),
    "S5.23": Row("accept", ("rate.pass",), before=41,
                 earlier=Mail(fields=(("Subject", "Printer broken"),))),
    "S5.24": Row("quarantine", ("rate.tier.quarantine", "rate-quarantine"), before=20,
                 sender="bounce+99-support=example.org@example.com",
                 earlier_sender="bounce+{i}-support=example.org@example.com"),
    "S5.25": Row("accept", ("rate.pass",), before=41, earlier=FORGED,
                 earlier_client=OTHER_CLIENT, zone=ZONE + OTHER_SERVER),
    "S5.26": Row("accept", ("auto.noreply_sender", "allowlist.sender"), mail=NOREPLY,
                 sender="noreply@example.com", policy=ALLOWLIST_NOREPLY),
    "S5.27": Row("quarantine", ("allowlist.sender", "rate.tier.quarantine", "rate-quarantine"),
                 mail=NOREPLY, sender="noreply@example.com", policy=ALLOWLIST_NOREPLY,
                 before=200),
    "S5.28": Row("reject", ("allowlist.sender", "rate.tier.reject", "rate-reject"),
                 mail=NOREPLY, sender="noreply@example.com", policy=ALLOWLIST_NOREPLY,
                 before=400),
    "S5.29": Row("quarantine", ("allowlist.unauthenticated", "auto-noreply", "dmarc-reject-held"),
                 mail=replace(NOREPLY, signer=None), sender="noreply@example.com",
                 client=OTHER_CLIENT, zone=ZONE + OTHER_SERVER, policy=ALLOWLIST_NOREPLY),
    # §5 Two machines answering each other: our notification, and what answers it.
    "S5.31": Row("quarantine", ("reply.ours", "auto.autoreply", "reply-automatic"),
                 mail=replace(ANSWER, fields=(*ANSWER.fields, ("Auto-Submitted", "auto-replied"),
                                              ("Subject", "Out of office: [#4711] Updated"))),
                 notified=True),
    "S5.32": Row("accept", ("reply.ours", "auto.bulk"),
                 mail=replace(ANSWER, fields=(*ANSWER.fields, ("Precedence", "list"))),
                 notified=True),
    "S5.33": Row("quarantine", ("auto.bulk", "auto-bulk"),
                 mail=replace(ANSWER, fields=(("In-Reply-To", "<notice-4712@example.org>"),
                                              ("Subject", "Re: [#4711] Updated"),
                                              ("Precedence", "list"))),
                 notified=True),
    # §5 Support addresses, both ways: the help desk's are support@example.org and
    # help@example.com (whose SPF lists the outside service 192.0.2.10).
    "S5.40": Row("reject at RCPT TO", ("loop.support_to_support", "loop-support-to-support"),
                 sender="help@example.com", policy=OUR_DESK),
    "S5.41": Row("reject at RCPT TO", ("loop.support_to_support", "loop-support-to-support"),
                 client=OUR_HOST, sender="support@example.org", policy=OUR_DESK),
    "S5.42": Row("reject at RCPT TO", ("loop.support_to_support", "loop-support-to-support"),
                 client=LAPTOP, auth="agent", sender="help@example.com",
                 rcpt="support+id4711@example.org", policy=OUR_DESK),
    "S5.43": Row("reject", ("loop.notification_to_support", "loop-notification-to-support"),
                 client=OUR_HOST, sender="colleague@example.org", policy=OUR_DESK,
                 mail=Mail(fields=(("From", "Colleague <colleague@example.org>"),
                                   ("Subject", "Out of office"),
                                   ("Auto-Submitted", "auto-replied")), signer=None)),
    "S5.44": Row("accept", (), client=OUR_HOST, sender="colleague@example.org", policy=OUR_DESK,
                 mail=Mail(fields=(("From", "Colleague <colleague@example.org>"),),
                           signer=None)),
    "S5.45": Row("accept", ("loop.support_sender",), sender="help@example.com",
                 rcpt="colleague@example.org", policy=OUR_DESK,
                 mail=Mail(fields=(("From", "Help <help@example.com>"),))),
    "S5.46": Row("quarantine", ("loop.support_sender", "auto.machine_generated",
                                "loop-support-sender"),
                 sender="help@example.com", rcpt="colleague@example.org", policy=OUR_DESK,
                 mail=Mail(fields=(("From", "Help <help@example.com>"),
                                   ("Auto-Submitted", "auto-generated")))),
    # §7 The suspended queue.
    "S7.1": Row("quarantine", ("auto.bulk", "auto-bulk"), mail=BULK),
    "S7.2": Row("quarantine", ("auto.autoreply", "auto-autoreply"),
                mail=Mail(fields=(("Auto-Submitted", "auto-replied"),
                                  ("Subject", "Out of office")))),
    "S7.3": Row("quarantine", ("auto.bulk", "reputation.none"), mail=BULK, released=1,
                taught=BULK),
    "S7.4": Row("accept", ("auto.bulk", "reputation.learned"), mail=BULK, released=2,
                taught=BULK),
    "S7.5": Row("quarantine", ("reputation.learned", "dkim-invalid"),
                mail=replace(BULK, changed=True), released=2, taught=BULK),
    "S7.6": Row("quarantine", ("reputation.learned", "dmarc-reject-held"),
                mail=replace(BULK, signer=None),
                client=OTHER_CLIENT, zone=ZONE + OTHER_SERVER, released=2, taught=BULK),
    "S7.7": Row("quarantine", ("auto.bulk", "auto-bulk", "reputation.none"), mail=BULK,
                released=2, marked=1, taught=BULK),
    # Mail loops: automatic replies and other help desks answering us.
    "S7.8": Row("quarantine", ("auto.autoreply", "auto-autoreply"), mail=Mail(fields=(
        ("Subject", "=?iso-8859-1?q?Automatische_Antwort:_Ihre_Bestellung_f=FCr_M=E4rz?="),))),
    "S7.9": Row("quarantine", ("auto.helpdesk", "auto-helpdesk"),
                mail=Mail(fields=(("X-OTRS-Loop", "yes"),
                                  ("Subject", "[Ticket#2025120110000017] Your request")))),
    "S7.10": Row("accept", (), mail=Mail(fields=(("Subject", "Re: absence"),))),
    "S7.11": Row("accept", (), mail=Mail(fields=(
        ("X-Auto-Response-Suppress", "DR, RN, NRN, OOF, AutoReply"),))),
}


# --- running a row ------------------------------------------------------------


def shipped_settings(nameserver: str, row: Row, key_file: Path | None = None) -> Settings:
    """The shipped policy.yaml with the row's edits, asking the test DNS server
    (and with `key_file` as checks.replies' key, when given)."""
    text = SHIPPED.read_text()
    edits = row.policy
    if key_file is not None:
        edits = (*edits, ('    key_file: ""\n', f"    key_file: {key_file}\n"))
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    if row.blocklists:
        text = uncomment_lists(text)
    settings = parse_settings(text, "policy.yaml")
    return replace(settings, authserv_id="mx.example.org", dns=replace(
        settings.dns, nameservers=(nameserver,), timeout=0.5, lifetime=1.0))


def deliver(app, row: Row, mail: Mail, raw: bytes | None = None) -> VerdictRecord:
    """One transaction; the record of its one decision."""
    records: list[VerdictRecord] = []
    tx = Transaction(app, row.client, row.sender, row.auth, observer=records.append)
    assert tx.opening() is None  # a refusal comes at RCPT TO, naming the recipient
    if tx.recipient(row.rcpt) is None:
        tx.finish(Message(raw if raw is not None else mail.raw()), "QID1")
    [record] = records
    return record


def notify(app, row: Row) -> None:
    """Our notification to the row's sender, out through the outbound path."""
    tx = Transaction(app, Client(None), "support@example.org", None)
    assert tx.opening() is None and tx.recipient(row.sender) is None
    sent = tx.finish(Message(NOTICE), "QID0")
    assert any(name == "X-Trustmilter-Token" for name, _ in sent.add_headers), sent


def verdict_text(record: VerdictRecord) -> str:
    """The verdict as the table writes it."""
    action = "low trust" if record.verdict.action is Action.LOW_TRUST else \
        record.verdict.action.value
    stages = {"eom": "", "rcpt": " at RCPT TO", "mail": " at MAIL FROM"}
    return action + stages[record.stage]


def what_counted(record: VerdictRecord) -> set[str]:
    results = record.results
    outcomes = {f"{r.check}.{r.outcome.value}" for r in results.all()}
    return set(results.signals()) | outcomes | {hit.rule for hit in record.verdict.hits}


@pytest.mark.parametrize("row_id", ROWS)
def test_each_row_gets_the_verdict_of_the_table(dns_server, row_id, tmp_path):
    row = ROWS[row_id]
    dns_server.load(row.zone)
    store = MemoryStore()
    key_file = None
    if row.notified:
        key_file = tmp_path / "token.key"
        key_file.write_bytes(b"k" * 32)
        key_file.chmod(0o600)
    with ThreadPoolExecutor(8) as pool:
        app = build_app(shipped_settings(dns_server.nameserver, row, key_file), pool,
                        state=store)
        if row.notified:
            notify(app, row)
        if row.released or row.marked:
            held = deliver(app, row, row.taught)
            assert held.verdict.action is Action.QUARANTINE, held.verdict
            for _ in range(row.released):
                store.add_release(row.sender, held.verdict.reasons, time.time())
            for _ in range(row.marked):
                store.add_spam_mark(row.sender, held.verdict.reasons, time.time())
        if row.before:
            earlier = row.earlier or row.mail
            raw = earlier.raw()  # signed once: the same message again and again
            for i in range(row.before):
                deliver(app, replace(row, client=row.earlier_client or row.client,
                                     sender=(row.earlier_sender or row.sender).format(i=i)),
                        earlier, raw)
        record = deliver(app, row, row.mail)
    counted = what_counted(record)
    why = (verdict_text(record), record.verdict.score, record.verdict.reasons,
           [hit.rule for hit in record.verdict.hits])
    assert verdict_text(record) == row.verdict, why
    assert set(row.decided_by) <= counted, (row_id, sorted(counted))
    if not row.decided_by:
        assert record.verdict.reasons == () and record.verdict.score == 0, record.verdict


# --- the table ----------------------------------------------------------------

ROW_LINE = re.compile(r"^\|\s*`?(S\d+\.\d+)`?\s*\|")


def table_rows() -> dict[str, str]:
    """Id -> the "Shipped policy" cell of every row of docs/rules.md's table."""
    lines = TABLE.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| Id"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    verdict_at = columns.index("Shipped policy")
    rows: dict[str, str] = {}
    for line in lines:
        match = ROW_LINE.match(line)
        if match:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            assert len(cells) == len(columns), line
            assert match.group(1) not in rows, f"{match.group(1)} twice"
            rows[match.group(1)] = cells[verdict_at].strip("*")
    return rows


def test_the_table_and_the_tests_agree():
    """Every row of docs/rules.md is tested here with its verdict, and nothing else is."""
    assert table_rows() == {row_id: row.verdict for row_id, row in ROWS.items()}
