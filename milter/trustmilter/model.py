"""The facts a check works from: connection, envelope and message.

These are plain values collected by the milter adapter (or by
``trustmilter check`` from the command line). They hold no logic beyond
tolerant parsing: a message with broken headers still yields a Message,
and the `headers` check reports what is wrong with it. What several
checks read is parsed here once and shared: the envelope's addresses are
normalised when an Envelope is made, a message's address fields the
first time a check asks (`Message.address_lists`, `from_mailboxes`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property

from trustmilter.mail.addresses import AddressList, Mailbox, envelope_address, parse_address_list
from trustmilter.mail.fields import HeaderFields, split_fields
from trustmilter.mail.mime import MimeStructure
from trustmilter.mail.mime import walk as walk_mime

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HEADER_END = re.compile(rb"\r?\n\r?\n")
# RFC 5322 §3.6.8: field-name = 1*ftext (printable ASCII except ':'); 76 keeps
# "Name: value" folding possible within the 78-character line of §2.1.1.
_FIELD_NAME_TEXT = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}\Z")


def is_field_name(text: str) -> bool:
    """Whether `text` can be the name of a header field we add (policy settings)."""
    return _FIELD_NAME_TEXT.match(text) is not None


@dataclass(frozen=True, slots=True)
class Connection:
    """The SMTP client as the MTA saw it."""

    ip: IPAddress
    # The name the MTA verified for the client, if any (Postfix's client_name).
    hostname: str | None = None
    helo: str | None = None
    authenticated_as: str | None = None  # SASL login ({auth_authen})


@dataclass(frozen=True, slots=True)
class Envelope:
    """MAIL FROM and RCPT TO without angle brackets; `mail_from` is '' for the
    null sender (bounces).

    The addresses stay strings: the MTA has checked their RFC 5321 syntax,
    and policy, rate keys and the verdict line use them whole. They are
    normalised here, once, whoever builds the envelope (the engine, the
    `check` command, a test), so no check strips "<>" again.
    """

    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The engine hands over normalised addresses already (one per RCPT):
        # rewrite only what still needs it.
        mail_from = envelope_address(self.mail_from)
        if mail_from != self.mail_from:
            object.__setattr__(self, "mail_from", mail_from)
        rcpt_to = tuple(map(envelope_address, self.rcpt_to))
        if rcpt_to != self.rcpt_to:
            object.__setattr__(self, "rcpt_to", rcpt_to)

    @property
    def null_sender(self) -> bool:
        """MAIL FROM:<> (RFC 5321 §4.5.5): a notification, such as a bounce."""
        return not self.mail_from


class Message:
    """A message as raw bytes, with headers split out tolerantly.

    `raw` is kept byte-exact because DKIM and ARC hash it. Header values
    are decoded as UTF-8 with surrogate escapes so no input can raise.
    """

    __slots__ = ("__dict__", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @cached_property
    def header_block(self) -> bytes:
        """The bytes before the first empty line (the whole message if none)."""
        match = _HEADER_END.search(self.raw)
        return self.raw[: match.start()] if match else self.raw

    @cached_property
    def body(self) -> bytes:
        """The bytes after the first empty line."""
        match = _HEADER_END.search(self.raw)
        return self.raw[match.end() :] if match else b""

    @cached_property
    def headers(self) -> HeaderFields:
        """(name, unfolded value) pairs in order; lines that are not fields are skipped."""
        return split_fields(self.header_block.splitlines())

    @cached_property
    def _values_by_name(self) -> dict[str, list[str]]:
        """Each lower-case field name's values, in order: a dozen checks ask for
        fields by name, and a scan of every field per question added up."""
        by_name: dict[str, list[str]] = {}
        for key, value in self.headers:
            by_name.setdefault(key.lower(), []).append(value)
        return by_name

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        return list(self._values_by_name.get(name.lower(), ()))

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        values = self.header_values(name)
        return values[0] if values else None

    @cached_property
    def _address_lists(self) -> dict[str, tuple[AddressList, ...]]:
        return {}

    def address_lists(self, name: str) -> tuple[AddressList, ...]:
        """Each `name` field (From, Sender, Reply-To, To, Cc...) parsed as an
        RFC 5322 §3.4 address-list, in order; parsed once per message, so every
        check reads the same mailboxes from the same field."""
        key = name.lower()
        cache = self._address_lists
        parsed = cache.get(key)
        if parsed is None:
            parsed = tuple(parse_address_list(value) for value in self.header_values(key))
            cache[key] = parsed  # a concurrent reader at worst parses it again
        return parsed

    @property
    def from_lists(self) -> tuple[AddressList, ...]:
        """Each From field, parsed (RFC 5322 §3.6.2 wants exactly one)."""
        return self.address_lists("From")

    @cached_property
    def from_mailboxes(self) -> tuple[Mailbox, ...]:
        """The mailboxes of every From field, in order (possibly none)."""
        return tuple(mailbox for parsed in self.from_lists for mailbox in parsed.mailboxes)

    @cached_property
    def mime(self) -> MimeStructure:
        """The MIME structure (RFC 2046): every leaf part with its decoded text,
        walked once per message without recursion however deep the nesting
        (`mail.mime`); every check that reads the body's parts reads it here."""
        return walk_mime(self.raw)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything known about one transaction, as the checks receive it."""

    connection: Connection
    envelope: Envelope = field(default_factory=Envelope)
    message: Message | None = None
