"""Shared pytest fixtures. Keep each group small and say what it is for."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.lookup.config import DnsConfig
from trustmilter.lookup.resolver import NetworkResolver

# ---- DNS: a real server on 127.0.0.1 and a resolver pointed at it ---------


@pytest.fixture(scope="session")
def _dns_test_server() -> Iterator[DnsTestServer]:
    """One server for the whole session: binding per test would be slow."""
    server = DnsTestServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def dns_server(_dns_test_server: DnsTestServer) -> Iterator[DnsTestServer]:
    """The test DNS server with an empty zone and an empty query log."""
    _dns_test_server.reset()
    yield _dns_test_server
    _dns_test_server.reset()


@pytest.fixture
def resolver(dns_server: DnsTestServer) -> NetworkResolver:
    """A NetworkResolver that asks only the test server, without a cache."""
    nameservers = (dns_server.nameserver,)
    return NetworkResolver(DnsConfig(nameservers, timeout=0.5, lifetime=1.0, cache_size=0))
