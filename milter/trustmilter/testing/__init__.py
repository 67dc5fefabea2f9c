"""Tools for testing and benchmarking trustmilter against real parts.

Needs the `test` extra (dnslib). Nothing in the milter itself imports this.
"""
