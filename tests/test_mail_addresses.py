"""The one address parser, the envelope's normalisation and the Message's views."""

from __future__ import annotations

import time

from trustmilter.checks import arc, automation, loops
from trustmilter.checks.dmarc import author_domains
from trustmilter.mail.addresses import (
    Mailbox,
    envelope_address,
    normalise_address,
    parse_address_list,
)
from trustmilter.mail.text import clip
from trustmilter.model import Envelope, Message


def test_envelope_address_strips_the_brackets_once() -> None:
    assert envelope_address("<a@example.com>") == "a@example.com"
    assert envelope_address(" <a@example.com> ") == "a@example.com"
    assert envelope_address("a@example.com") == "a@example.com"
    assert envelope_address("<>") == "" and envelope_address("") == ""
    assert normalise_address(" <Support@Example.COM> ") == "support@example.com"


def test_the_envelope_is_normalised_whoever_builds_it() -> None:
    """RFC 5321 §4.5.5: MAIL FROM:<> stays the null sender, told apart from any address."""
    envelope = Envelope("<Alice@example.com>", ("<b@example.net>", "c@example.org"))
    assert envelope.mail_from == "Alice@example.com"
    assert envelope.rcpt_to == ("b@example.net", "c@example.org")
    assert not envelope.null_sender
    assert Envelope("<>").null_sender and Envelope("").null_sender
    assert Envelope("<>").mail_from == ""


def test_mailbox_keeps_what_was_written_and_a_comparable_domain() -> None:
    [mailbox] = parse_address_list("Alice <Alice@Mail.Example.COM>").mailboxes
    assert mailbox == Mailbox("Alice", "Mail.Example.COM", "Alice")
    assert mailbox.address == "Alice@Mail.Example.COM"
    assert mailbox.domain_name == "mail.example.com"


def test_encoded_words_and_display_names_are_never_addresses() -> None:
    """RFC 2047 §5: an encoded word is display text; RFC 5322 §3.4: in a
    name-addr the address is what the angle brackets hold."""
    for value in ("=?utf-8?q?a@evil.example?= <b@example.com>",
                  "a@evil.example <b@example.com>",
                  '"a@evil.example" <b@example.com>'):
        parsed = parse_address_list(value)
        assert [m.address for m in parsed.mailboxes] == ["b@example.com"], value


def test_clip_hides_control_characters_and_shortens() -> None:
    assert clip("a\r\nb") == "a??b"
    assert clip("x" * 200, 10) == "x" * 10 + "..."


def test_a_message_parses_each_address_field_once() -> None:
    message = Message(b"From: a@example.com\r\nFrom: b@example.net\r\nTo: c@example.org\r\n\r\n")
    assert message.address_lists("from") is message.address_lists("From")
    assert [m.address for m in message.from_mailboxes] == ["a@example.com", "b@example.net"]
    assert len(message.from_lists) == 2
    assert [m.address for m in message.address_lists("To")[0].mailboxes] == ["c@example.org"]
    assert message.address_lists("Cc") == ()


def test_from_views_stay_linear_on_hostile_input() -> None:
    """Every reader of From on megabyte-sized hostile values: one pass each. A
    guard against a recursive or quadratic parser coming back, not a speed
    measurement: the bound is several times what all of them take (about 5 s)."""
    cases = [
        b"(" * 500_000 + b"x" + b")" * 500_000 + b" <a@example.com>",
        b",".join(b"Name <a@d%d.example>" % i for i in range(50_000)),
        b"<" * 1_000_000,
        b'"\\' * 500_000,
        b"G:" * 300_000 + b"a@example.com;",
        b"a" + b"@a" * 500_000,
        b"=?utf-8?q?" + b"a@b." * 250_000 + b"?= <a@example.com>",
    ]
    patterns = automation.Config().compiled()
    started = time.monotonic()
    for value in cases:
        raw = b"From: " + value + b"\r\n\r\nbody"
        message = Message(raw)
        assert message.from_mailboxes is not None
        author_domains(message)
        arc._author(message)
        loops.from_addresses(message)
        automation.message_findings(message, patterns)
    assert time.monotonic() - started < 30


def test_a_bad_domain_is_kept_apart_as_text_not_as_a_mailbox() -> None:
    """An address dropped for its domain leaves the domain's text, for the names check."""
    parsed = parse_address_list("Bad <b@c..example>, ok@f.example, a@exa mple.example, nodomain")
    assert [m.address for m in parsed.mailboxes] == ["ok@f.example"]
    assert parsed.bad_domains == ("c..example", "exa mple.example")
    assert parse_address_list("a@").bad_domains == ("",)
    assert parse_address_list("ok@f.example").bad_domains == ()
    long_domain = "x." * 5000 + ".example"
    assert len(parse_address_list(f"a@{long_domain}").bad_domains[0]) <= len(clip(long_domain))
