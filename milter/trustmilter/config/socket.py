"""Milter socket specifications as Postfix and Sendmail write them.

``unix:/path`` (or ``local:/path``), ``inet:PORT@HOST`` and
``inet6:PORT@HOST``. libmilter takes the string itself; this module only
validates it, so a typo stops start-up with a message instead of a
libmilter error.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class SocketSpec:
    family: Literal["unix", "inet", "inet6"]
    path: str = ""  # unix
    host: str = ""  # inet/inet6
    port: int = 0

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        return f"{self.family}:{self.port}@{self.host}"


class SocketSpecError(ValueError):
    """A socket spec that cannot be used; `expected` says what would do.

    str() is ``expected <what>``, for a command line's ``--socket``; the
    policy loader adds the value itself (``expected ..., got '...'``).
    """

    def __init__(self, expected: str) -> None:
        self.expected = expected
        super().__init__(f"expected {expected}")


def parse_socket(text: str) -> SocketSpec:
    """Parse a socket spec; raises SocketSpecError saying what was expected."""
    family, sep, rest = text.partition(":")
    if not sep:
        raise SocketSpecError("unix:/path, inet:PORT@HOST or inet6:PORT@HOST")
    if family in ("unix", "local"):
        if not rest.startswith("/"):
            raise SocketSpecError("an absolute path after unix: (unix:/run/x.sock)")
        return SocketSpec("unix", path=rest)
    if family not in ("inet", "inet6"):
        raise SocketSpecError(f"the socket family unix, inet or inet6, not {family!r}")
    port_text, at, host = rest.partition("@")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SocketSpecError("a port 1-65535 before '@'")
    if not at or not host:
        raise SocketSpecError("@HOST after the port (inet:8894@127.0.0.1)")
    if family == "inet6":
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise SocketSpecError(f"an IPv6 address after inet6:PORT@, not {host!r}") from None
    return SocketSpec(family, host=host, port=int(port_text))  # type: ignore[arg-type]
