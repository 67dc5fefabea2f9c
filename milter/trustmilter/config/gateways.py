"""`trusted_authserv_ids`: the upstream gateways whose Authentication-Results we believe.

Anyone can write an Authentication-Results field with a gateway's
authserv-id into a message and send it to us directly; the gateway removes
such forgeries only from mail that passes through it (RFC 8601 §5). So a
gateway's field is believed only on mail that arrives *from* the gateway
(RFC 8601 §7.1: only from within the trust boundary), named in one of two
ways:

    trusted_authserv_ids:
      - id: gw.example.net                 # believed from these networks only
        networks: [192.0.2.0/24, 2001:db8:1::/48]
      - gw2.example.net                    # believed only from the client that the
                                           # MTA verified as gw2.example.net

A plain id (the form before networks existed) ties the id to the client's
name as the MTA verified it (Postfix's client_name; Sendmail likewise hands
milters "[address]" unless the reverse name resolves back), which only the
owner of the id's DNS can arrange. An authserv-id is usually the gateway's
host name (RFC 8601 §2.5), so such a gateway keeps being believed; one whose
id is not the name it connects with needs its networks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustmilter.config.errors import InvalidField
from trustmilter.config.networks import IPNetwork, check_networks, parsed_networks

# RFC 8601 §2.2: authserv-id is a value (token); in practice a host name. Labels
# are not empty (authres and others read the id as a dot-atom); a root dot is
# allowed here and left out of our header (App.build).
AUTHSERV_ID = re.compile(r"(?=[A-Za-z0-9._-]{1,253}\Z)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?\Z")



@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One trusted gateway: its authserv-id and the networks it connects from."""

    id: str
    # The addresses the gateway connects to us from; its fields are believed
    # on mail from nowhere else.
    networks: tuple[str, ...]

    def __post_init__(self) -> None:
        if AUTHSERV_ID.match(self.id) is None:
            raise InvalidField(("id",), "a host name like gw.example.net", self.id)
        if not self.networks:
            raise InvalidField(("networks",), "at least one network like 192.0.2.0/24", [])
        check_networks("networks", self.networks)

    def parsed_networks(self) -> tuple[IPNetwork, ...]:
        return parsed_networks(self.networks)
