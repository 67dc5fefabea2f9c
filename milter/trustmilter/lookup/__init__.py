"""The one DNS layer: every check, pyspf and dkimpy query through a `Resolver`."""

from trustmilter.lookup.answer import DnsAnswer, DnsStatus, Resolver, reverse_name

__all__ = ["DnsAnswer", "DnsStatus", "Resolver", "reverse_name"]
