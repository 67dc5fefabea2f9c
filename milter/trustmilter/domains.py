"""Domain-name helpers built on the public suffix list.

DMARC itself no longer uses the list: RFC 9989 finds Organizational Domains
by a DNS Tree Walk (checks/dmarc_tree.py). The list stays for the questions
outside DMARC that need "the registered domain" of a name without spending
DNS queries on it, and for DMARC only under ``checks.dmarc.standard:
rfc7489`` (RFC 7489 §3.2). Its users (`DomainTools.org_domain`,
`same_org`, `has_known_tld`):

- iprev (checks/iprev.py): whether a PTR name belongs to the sender's
  organisation (``iprev.ptr_not_sender_domain``), and the host part of a
  PTR name in which generic words are looked for;
- HELO (checks/helo.py): whether the HELO name is in the sender's
  organisation or one of its MX hosts' organisations, and whether its TLD
  exists at all;
- URI blocklists (checks/uribl.py): the registered domain a link is
  looked up by, and links under unknown TLDs left out;
- ARC (checks/arc.py): whether a trusted sealer's recorded SPF/DKIM pass
  is relaxed-aligned with the current From domain (a local reading of a
  header, with no DNS);
- the DNS layer (lookup/fairshare.py): the domain whose fair share of
  slow lookups a question counts against;
- the doctor (doctor/rules.py): where to suggest publishing a DMARC
  record, and whether a HELO name is the sender's.

The list itself comes from the maintained `publicsuffixlist` package;
nothing here keeps its own copy.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from trustmilter.mail.addresses import envelope_address

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# An LDH label (RFC 1123 §2.1), underscores tolerated as real-world DNS has them.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
MAX_NAME_LENGTH = 253  # RFC 1035 §2.3.4, in text form without the final dot


def normalise(name: str) -> str:
    """Lower-case `name` and drop a trailing dot."""
    return name.strip().rstrip(".").lower()


class DomainTools:
    """Org-domain and suffix questions; immutable and thread-safe once built."""

    def __init__(self) -> None:
        # As RFC 7489 §3.2: an unknown TLD counts as a public suffix of one label.
        self._lenient = PublicSuffixList(accept_unknown=True)
        self._strict = PublicSuffixList(accept_unknown=False)
        self.org_domain = lru_cache(maxsize=4096)(self._org_domain)

    def _org_domain(self, name: str) -> str | None:
        """The registered (organisational) domain of `name` by the public suffix
        list, or None for a bare suffix. Not DMARC's Organizational Domain
        under RFC 9989, which the Tree Walk decides."""
        name = normalise(name)
        if not name or is_ip_literal(name):
            return None
        result: str | None = self._lenient.privatesuffix(name)
        return result

    def public_suffix(self, name: str) -> str | None:
        """The public suffix of `name` if its TLD is on the list, else None."""
        result: str | None = self._strict.publicsuffix(normalise(name))
        return result

    def has_known_tld(self, name: str) -> bool:
        """True when the last label of `name` is a TLD the public suffix list knows."""
        name = normalise(name)
        tld = name.rsplit(".", 1)[-1]
        return bool(tld) and self._strict.publicsuffix(tld) is not None

    def same_org(self, a: str, b: str) -> bool:
        """True when `a` and `b` share an organisational domain (relaxed alignment)."""
        org_a, org_b = self.org_domain(a), self.org_domain(b)
        return org_a is not None and org_a == org_b


def is_ip_literal(text: str) -> bool:
    """True for ``192.0.2.1``, ``[192.0.2.1]`` and ``[IPv6:2001:db8::1]``."""
    return parse_ip_literal(text) is not None


def parse_ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in an address literal (RFC 5321 §4.1.3), bracketed or bare, or None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text[:5].lower() == "ipv6:":
            text = text[5:]
    if ":" not in text and not text.replace(".", "").isdigit():
        return None  # a host name: spare ipaddress its two failed parses
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def domain_of(address: str) -> str:
    """The domain part of an address (``<a@b.example>`` too), lower-cased; '' if none."""
    address = envelope_address(address)
    if "@" not in address:
        return ""
    return normalise(address.rsplit("@", 1)[1])


def is_host_name(name: str) -> bool:
    """True for a multi-label host name a forward lookup makes sense for."""
    return 0 < len(name) <= MAX_NAME_LENGTH and _valid_labels(name)


def is_single_label(name: str) -> bool:
    """True for one valid DNS label with no dot (a name RFC 5321 §2.3.5 calls unqualified)."""
    return _LABEL.match(name) is not None


@functools.lru_cache(maxsize=4096)  # the same HELO and sender names come again and again
def _valid_labels(name: str) -> bool:
    labels = name.split(".")
    return len(labels) > 1 and all(_LABEL.match(label) for label in labels)


def ascii_name(name: str) -> str | None:
    """`name` in A-label form (IDNA for U-labels), or None if it cannot be encoded."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def client_address(ip: IPAddress) -> IPAddress:
    """The address lists know: IPv4 for an IPv4-mapped IPv6 client."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
