"""Reading the hop before a forwarder from its Received field (RFC 5321 §4.4): pure."""

from __future__ import annotations

import ipaddress
import time

import pytest

from trustmilter.checks.forwarded import Hop, forwarder_hop, parse_forwarders, parse_received
from trustmilter.model import Message

IP = ipaddress.ip_address


@pytest.mark.parametrize(("value", "hop"), [
    # Postfix
    ("from mail.example.com (mail.example.com [192.0.2.10]) by mx.example.net (Postfix)"
     " with ESMTPS id 1; Mon, 01 Jan 2024 10:00:00 +0000",
     Hop(IP("192.0.2.10"), "mail.example.com", "mail.example.com", "mx.example.net")),
    # Postfix, client name not verified; IPv6 literal
    ("from helo.example.com (unknown [IPv6:2001:db8::5]) by mx.example.net",
     Hop(IP("2001:db8::5"), None, "helo.example.com", "mx.example.net")),
    # Sendmail, name it could not confirm
    ("from helo.example.com (host.example.com [192.0.2.7] (may be forged))"
     " by mx.example.net (8.17.1/8.17.1) with ESMTP id x",
     Hop(IP("192.0.2.7"), None, "helo.example.com", "mx.example.net")),
    # Exim: verified name first, HELO inside when it differs
    ("from host.example.com ([192.0.2.8] helo=other.example.org) by mx.example.net"
     " with esmtps (Exim 4.96)",
     Hop(IP("192.0.2.8"), "host.example.com", "other.example.org", "mx.example.net")),
    # Exim: no name at all
    ("from [192.0.2.9] (helo=box.example.org) by mx.example.net with esmtp",
     Hop(IP("192.0.2.9"), None, "box.example.org", "mx.example.net")),
])
def test_the_common_stamps_are_read(value, hop):
    assert parse_received(value) == hop


@pytest.mark.parametrize("value", [
    "", "by mx.example.net; Mon, 01 Jan 2024", "from mail.example.com by mx.example.net",
    "from x (y [not-an-ip]) by z", "from x (((((", "from " + "(" * 5000,
])
def test_stamps_without_a_hop_give_none(value):
    assert parse_received(value) is None


def test_hostile_fields_are_read_in_linear_time():
    for hostile in ("from a (" + "(" * 200_000, "from a (" + "[" * 200_000 + ")",
                    "from " + "a" * 200_000, "from a (b " + "helo=" * 50_000 + ")"):
        started = time.perf_counter()
        parse_received(hostile)
        assert time.perf_counter() - started < 0.5


def stamped(*fields: str) -> Message:
    return Message(("".join(f"Received: {f}\r\n" for f in fields)
                    + "From: a@example.com\r\n\r\nbody\r\n").encode())


FORWARDER = IP("198.51.100.25")
OURS = "from fwd.example.net (fwd.example.net [198.51.100.25]) by mx.example.org"
THEIRS = "from mail.example.com (mail.example.com [192.0.2.10]) by fwd.example.net"
FILTER = "from localhost (localhost [127.0.0.1]) by fwd.example.net"
FORGED = "from trusted.example.com (trusted.example.com [203.0.113.1]) by mail.example.com"


def test_the_forwarders_own_field_is_read_below_ours_and_never_older_ones():
    assert forwarder_hop(stamped(OURS, THEIRS, FORGED), FORWARDER).ip == IP("192.0.2.10")
    assert forwarder_hop(stamped(THEIRS, FORGED), FORWARDER).ip == IP("192.0.2.10")
    # The forwarder's content filter on localhost is its own hop.
    assert forwarder_hop(stamped(OURS, FILTER, THEIRS, FORGED), FORWARDER).ip == IP(
        "192.0.2.10")
    assert forwarder_hop(stamped(OURS), FORWARDER) is None
    assert forwarder_hop(stamped(OURS, "garbage", THEIRS), FORWARDER) is None
    assert forwarder_hop(stamped(OURS, *[FILTER] * 10, THEIRS), FORWARDER) is None


def test_forwarders_are_networks_names_and_domains():
    forwarders = parse_forwarders(("198.51.100.0/24", "mx.example.net", ".example.org"))
    assert forwarders.has_ip(IP("198.51.100.9")) and not forwarders.has_ip(IP("192.0.2.1"))
    assert forwarders.has_name("MX.example.net.") and forwarders.has_name("a.b.example.org")
    assert not forwarders.has_name("example.org") and not forwarders.has_name("xexample.org")
    with pytest.raises(ValueError) as error:
        parse_forwarders(("192.0.2.0/24", "not a name"))
    assert error.value.args == (1,)


def test_the_setting_is_validated_when_the_policy_loads():
    from trustmilter.config.load import ConfigError, parse_settings

    assert parse_settings("trusted_forwarders: [192.0.2.0/24, .example.net]\n",
                          "p.yaml").trusted_forwarders == ("192.0.2.0/24", ".example.net")
    with pytest.raises(ConfigError, match="trusted_forwarders"):
        parse_settings("trusted_forwarders: [192.0.2.0/24, 'no such thing!']\n", "p.yaml")
