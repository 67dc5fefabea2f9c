"""The one DNS layer: every check, pyspf and dkimpy query through a `Resolver`."""

from trustmilter.config.dns import DnsConfig
from trustmilter.lookup.answer import DnsAnswer, DnsStatus, Resolver, reverse_name
from trustmilter.lookup.resolver import NetworkResolver, build_resolver

__all__ = [
    "DnsAnswer",
    "DnsConfig",
    "DnsStatus",
    "NetworkResolver",
    "Resolver",
    "build_resolver",
    "reverse_name",
]
