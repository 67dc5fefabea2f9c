"""One sender, however its address is dressed: SRS, BATV, VERP and sub-addresses.

Forwarders and mailing systems rewrite the envelope sender so that bounces
come back to them: a forwarder's SRS (`SRS0=hash=tt=example.com=alice@fwd`),
a signing MTA's BATV (`prvs=tag=alice@example.com`), a bulk sender's VERP
(`bounce+4711-bob=example.net@example.com`) and a user's own sub-address
(`alice+news@example.com`). Each message then seems to come from another
address, and a robot that loops while its return path changes would never
reach a rate limit counted per address. `Identities.of` takes the dressing
off, so that all of them count as the one address they stand for.

Only what the formats define is undone; nothing is guessed. A random
local part (a provider's per-message bounce id) stays as it is: the
header From identity, counted beside it, names such a sender.

Formats:
- SRS (Shevek's Sender Rewriting Scheme, as libsrs2 and postsrsd write it):
  ``SRS0<sep>HHH=TT=domain=local@forwarder`` and
  ``SRS1<sep>HHH=first-forwarder=<sep>HHH=TT=domain=local@forwarder``, with
  `<sep>` one of ``=``, ``+``, ``-``; the prefix is matched case-insensitively.
- BATV (draft-levine-smtp-batv-01 §4): ``prvs=tag-val=local@domain``;
  also Microsoft's ``msprvs1=tag=local`` and the older ``btv1==tag==local``.
- Sub-addresses and VERP: everything from the first separator of the
  local part on (Postfix's `recipient_delimiter`; ``+`` and ``-`` by
  default), which also removes the recipient a VERP return path encodes
  (``list-bounces+bob=example.net@``).

Every step is linear in the address; the steps repeat while one applies
(SRS of a BATV-signed sub-address), at most `MAX_LAYERS` times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustmilter.mail.addresses import normalise_address

# Postfix's recipient_delimiter default in many distributions, and the
# two separators sub-addresses and VERP use in practice.
DEFAULT_SEPARATORS = "+-"
# Dressings undone one after the other; more than this is not a real address.
MAX_LAYERS = 4
_SRS0 = re.compile(r"srs0[=+-]([^=]*)=([^=]*)=([^=]+)=(.+)\Z", re.IGNORECASE | re.DOTALL)
_SRS1 = re.compile(r"srs1[=+-][^=]*=[^=]+=[=+-]([^=]*)=([^=]*)=([^=]+)=(.+)\Z",
                   re.IGNORECASE | re.DOTALL)
_BATV = re.compile(r"(?:prvs|msprvs1)=[^=]+=(.+)\Z|btv1==[^=]+==(.+)\Z",
                   re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class SenderIdentity:
    """The address a sender's address stands for, and what was taken off.

    `address` is lower case, without angle brackets ('' for the null
    sender); `dressing` names each layer undone, outermost first
    ("srs", "batv", "subaddress"), empty when the address was plain.
    """

    address: str
    dressing: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Identities:
    """Undoes address dressings with the policy's sub-address separators."""

    separators: str = DEFAULT_SEPARATORS

    def of(self, address: str) -> SenderIdentity:
        """The identity behind an envelope or header address (as written)."""
        current = normalise_address(address)
        local, at, domain = current.rpartition("@")
        if not at or not local:
            return SenderIdentity(current)
        dressing: list[str] = []
        for _ in range(MAX_LAYERS):
            undone = _undress(local, domain, self.separators)
            if undone is None:
                break
            kind, local, domain = undone
            dressing.append(kind)
        return SenderIdentity(f"{local}@{domain}", tuple(dressing))

    def base(self, address: str) -> str:
        """`address` without its sub-address: how support and allow-list
        entries are compared (``support+4711@example.org`` is support@)."""
        current = normalise_address(address)
        local, at, domain = current.rpartition("@")
        if not at:
            return current
        return f"{strip_subaddress(local, self.separators)}@{domain}"


# With the default separators; for callers that have no policy at hand.
PLAIN_IDENTITIES = Identities()


def strip_subaddress(local: str, separators: str) -> str:
    """`local` up to its first separator; unchanged when that would leave
    nothing (``+tag``, ``-x``) or when there is no separator."""
    cut = min((i for i in (local.find(s) for s in separators) if i > 0), default=-1)
    return local[:cut] if cut > 0 else local


def _undress(local: str, domain: str, separators: str) -> tuple[str, str, str] | None:
    """One layer off: (kind, local, domain), or None when the address is plain."""
    if local.startswith(("srs0", "srs1")):
        found = _SRS0.match(local) or _SRS1.match(local)
        if found is not None:
            original_domain, original_local = found.group(3), found.group(4)
            if original_local and "@" not in original_local:
                return "srs", original_local, original_domain
    if local.startswith(("prvs=", "msprvs1=", "btv1==")):
        found = _BATV.match(local)
        if found is not None:
            original = found.group(1) or found.group(2)
            if original and "@" not in original:
                return "batv", original, domain
    stripped = strip_subaddress(local, separators)
    if stripped != local:
        return "subaddress", stripped, domain
    return None
