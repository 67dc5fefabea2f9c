"""Sender identities: SRS, BATV, VERP and sub-addresses name one sender."""

from __future__ import annotations

import time

import pytest

from trustmilter.mail.identity import Identities, SenderIdentity, strip_subaddress

IDS = Identities()


@pytest.mark.parametrize(("written", "address", "dressing"), [
    ("alice@example.com", "alice@example.com", ()),
    ("<Alice@Example.COM>", "alice@example.com", ()),
    ("", "", ()),
    ("alice+news@example.com", "alice@example.com", ("subaddress",)),
    ("alice-news@example.com", "alice@example.com", ("subaddress",)),
    # VERP as Mailman and many bulk senders write it: the recipient is encoded.
    ("list-bounces+bob=example.net@lists.example.com", "list@lists.example.com",
     ("subaddress",)),
    ("bounce+4711-bob=example.net@example.com", "bounce@example.com", ("subaddress",)),
    # SRS as postsrsd and libsrs2 write it (all three separators).
    ("SRS0=HHH3=TT=example.com=alice@forwarder.example.net", "alice@example.com", ("srs",)),
    ("srs0+hHh3=tt=example.com=alice@forwarder.example.net", "alice@example.com", ("srs",)),
    ("SRS0-HHH3=TT=example.com=alice@forwarder.example.net", "alice@example.com", ("srs",)),
    ("SRS1=XXXX=fwd1.example.org==HHH3=TT=example.com=alice@fwd2.example.net",
     "alice@example.com", ("srs",)),
    # An original local part may itself contain "=".
    ("SRS0=HHH3=TT=example.com=a=b@fwd.example.net", "a=b@example.com", ("srs",)),
    # BATV (draft-levine-smtp-batv-01 §4) and its variants.
    ("prvs=1234567890=alice@example.com", "alice@example.com", ("batv",)),
    ("msprvs1=19263UhYmIT3b=alice@example.com", "alice@example.com", ("batv",)),
    ("btv1==1234567890==alice@example.com", "alice@example.com", ("batv",)),
    # Layers: SRS of a BATV-signed sub-address.
    ("SRS0=HHH3=TT=example.com=prvs=1234567890=alice+x@fwd.example.net",
     "alice@example.com", ("srs", "batv", "subaddress")),
    # Not a dressing: nothing is guessed.
    ("0100018c3e5b4a7d@amazonses.example.com", "0100018c3e5b4a7d@amazonses.example.com", ()),
    ("srs0@example.com", "srs0@example.com", ()),
    ("SRS0=broken@example.com", "srs0=broken@example.com", ()),
    ("+tag@example.com", "+tag@example.com", ()),
    ("postmaster", "postmaster", ()),
])
def test_identity(written: str, address: str, dressing: tuple[str, ...]) -> None:
    assert IDS.of(written) == SenderIdentity(address, dressing)


def test_separators_are_the_policy_s() -> None:
    plus_only = Identities("+")
    assert plus_only.of("mary-ann@example.com").address == "mary-ann@example.com"
    assert plus_only.of("mary+x@example.com").address == "mary@example.com"
    assert Identities("").of("mary+x@example.com").address == "mary+x@example.com"


def test_base_keeps_srs_but_drops_subaddress() -> None:
    assert IDS.base("Support+id4711@Example.org") == "support@example.org"
    assert IDS.base("support@example.org") == "support@example.org"
    assert IDS.base("") == ""


def test_strip_subaddress() -> None:
    assert strip_subaddress("a+b-c", "+-") == "a"
    assert strip_subaddress("-a+b", "+-") == "-a"
    assert strip_subaddress("abc", "+-") == "abc"


def test_hostile_addresses_stay_linear() -> None:
    for local in ("SRS0=" + "=" * 200_000, "srs1=" + "a=" * 100_000, "prvs=" * 50_000,
                  "btv1==" * 40_000, "a+" * 100_000):
        started = time.process_time()
        IDS.of(local + "@example.com")
        assert time.process_time() - started < 0.5, local[:10]


def test_policy_separators_reach_the_checks() -> None:
    from trustmilter.app import App
    from trustmilter.config.load import ConfigError, parse_settings

    settings = parse_settings('address_separators: "+"\nauthserv_id: mx.example.com\n', "p.yaml")
    app = App.build(settings, state=None)
    assert app.identities.of("mary-ann+x@example.com").address == "mary-ann@example.com"
    with pytest.raises(ConfigError, match="address_separators"):
        parse_settings('address_separators: "a"\n', "p.yaml")
