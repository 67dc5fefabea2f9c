"""Domain-name helpers built on the public suffix list.

Organisational domains (RFC 7489 §3.2) decide DMARC's relaxed alignment,
whether a PTR or HELO name belongs to the sender, and which registered
domain a URI blocklist is asked about. The list itself comes from the
maintained `publicsuffixlist` package; nothing here keeps its own copy.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from publicsuffixlist import PublicSuffixList


def normalise(name: str) -> str:
    """Lower-case `name` and drop a trailing dot."""
    return name.strip().rstrip(".").lower()


class DomainTools:
    """Org-domain and suffix questions; immutable and thread-safe once built."""

    def __init__(self) -> None:
        # RFC 7489 §3.2: an unknown TLD counts as a public suffix of one label.
        self._lenient = PublicSuffixList(accept_unknown=True)
        self._strict = PublicSuffixList(accept_unknown=False)
        self.org_domain = lru_cache(maxsize=4096)(self._org_domain)

    def _org_domain(self, name: str) -> str | None:
        """The registered (organisational) domain of `name`, or None for a bare suffix."""
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
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def domain_of(address: str) -> str:
    """The domain part of an address (``<a@b.example>`` too), lower-cased; '' if none."""
    address = address.strip().strip("<>")
    if "@" not in address:
        return ""
    return normalise(address.rsplit("@", 1)[1])
