"""The `dns:` section of policy.yaml."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from trustmilter.config.errors import InvalidField

DNS_PORT = 53


@dataclass(frozen=True, slots=True)
class DnsConfig:
    # "host" or "host:port" ("[::1]:5353" for IPv6 with a port); empty means
    # the system resolver from /etc/resolv.conf.
    nameservers: tuple[str, ...] = ()
    # Seconds to wait for one server's answer to one query.
    timeout: float = field(default=2.0, metadata={"min": 0.05, "max": 60})
    # Seconds one lookup may take in all (retries and servers included).
    lifetime: float = field(default=5.0, metadata={"min": 0.05, "max": 120})
    # Answers kept in the shared cache (TTL honoured, negative answers too).
    cache_size: int = field(default=20000, metadata={"min": 0, "max": 10_000_000})

    def __post_init__(self) -> None:
        for index, spec in enumerate(self.nameservers):
            try:
                parse_nameserver(spec)
            except ValueError:
                raise InvalidField(
                    ("nameservers", index), "an IP address, IP:port or [IPv6]:port", spec
                ) from None


def parse_nameserver(text: str) -> tuple[str, int]:
    """Split "host", "host:port", "[v6]:port" or bare v6 into (address, port)."""
    spec = text.strip()
    port_text = ""
    if spec.startswith("["):
        host, closed, rest = spec[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"nameserver {text!r}: expected [IPv6] or [IPv6]:port")
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise ValueError(f"nameserver {text!r}: empty port")
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        if not port_text:
            raise ValueError(f"nameserver {text!r}: empty port")
    else:
        host = spec  # an IPv4 address or a bare IPv6 address
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: not an IP address") from None
    port = DNS_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"nameserver {text!r}: port must be 1-65535")
        port = int(port_text)
    return str(address), port
