"""Networks in the settings (trusted networks, a gateway's addresses): checked once
when the policy loads, parsed into ipaddress networks for the lookups."""

from __future__ import annotations

import functools
import ipaddress

from trustmilter.config.errors import InvalidField

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_networks(key: str, networks: tuple[str, ...]) -> None:
    """Raise InvalidField at (`key`, index) for the first entry that is no network."""
    for index, network in enumerate(networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise InvalidField((key, index), "a network like 192.0.2.0/24", network) from None


@functools.lru_cache(maxsize=8)  # asked at every connection; a policy has few lists
def parsed_networks(networks: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """`networks` as ipaddress networks (host bits allowed, as written)."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)
