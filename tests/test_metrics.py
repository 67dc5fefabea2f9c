"""The Prometheus endpoint: events in, a real HTTP scrape over 127.0.0.1 out.

Each test starts its own endpoint on a free loopback port with
`start_metrics` (as the daemon does) and stops it in a finalizer. The
scrape is parsed with prometheus_client's own text parser, so a renamed or
mislabelled metric fails here, not on a dashboard. The resolver test sends
real lookups to the DNS test server: only network lookups are timed, cache
hits are not, and timeouts and SERVFAILs are counted by record type.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trustmilter.config.daemon import MetricsConfig
from trustmilter.daemon.metrics import Metrics, NullMetrics
from trustmilter.daemon.prometheus import PrometheusMetrics, split_listen, start_metrics
from trustmilter.lookup import DnsConfig, DnsStatus, NetworkResolver
from trustmilter.testing.daemon import free_port
from trustmilter.testing.dnsserver import DnsTestServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def endpoint() -> Iterator[tuple[PrometheusMetrics, str]]:
    """Metrics served on 127.0.0.1, and the URL to scrape them."""
    port = free_port()
    metrics = start_metrics(MetricsConfig(listen=f"127.0.0.1:{port}"))
    assert isinstance(metrics, PrometheusMetrics)
    yield metrics, f"http://127.0.0.1:{port}/metrics"
    metrics.close()


def scrape(url: str) -> Samples:
    """Every sample of the endpoint as {(name, labels): value}."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_events_are_exported_with_their_labels(endpoint: tuple[PrometheusMetrics, str]) -> None:
    metrics, url = endpoint
    for action in ("accept", "accept", "reject", "quarantine"):
        metrics.message(action)
    metrics.check_result("dmarc", "fail")
    metrics.check_result("spf", "pass")
    metrics.check_result("spf", "pass")
    metrics.rule_hit("dmarc-reject", shadow=False)
    metrics.rule_hit("no-ptr-tempfail", shadow=True)
    metrics.callback_error("eom")
    metrics.policy_reload(ok=True)
    metrics.policy_reload(ok=False)
    metrics.policy_reload(ok=False)
    metrics.in_flight(+1)
    metrics.in_flight(+1)
    metrics.in_flight(-1)

    got = scrape(url)
    assert value(got, "trustmilter_messages_total", action="accept") == 2
    assert value(got, "trustmilter_messages_total", action="reject") == 1
    assert value(got, "trustmilter_messages_total", action="quarantine") == 1
    assert value(got, "trustmilter_check_results_total", method="spf", result="pass") == 2
    assert value(got, "trustmilter_check_results_total", method="dmarc", result="fail") == 1
    assert value(got, "trustmilter_rule_hits_total", rule="dmarc-reject", mode="enforce") == 1
    # A shadow rule's hit is a "would have", kept apart from enforced ones.
    assert value(got, "trustmilter_rule_hits_total", rule="no-ptr-tempfail", mode="shadow") == 1
    assert value(got, "trustmilter_rule_hits_total", rule="no-ptr-tempfail", mode="enforce") is None
    assert value(got, "trustmilter_callback_errors_total", stage="eom") == 1
    assert value(got, "trustmilter_policy_reloads_total", outcome="ok") == 1
    assert value(got, "trustmilter_policy_reloads_total", outcome="failed") == 2
    assert value(got, "trustmilter_transactions_in_flight") == 1
    names = {name for name, _ in got}
    assert all(name.startswith("trustmilter_") for name in names), names


def test_reload_outcomes_exist_before_the_first_reload(endpoint: tuple[PrometheusMetrics, str]) -> None:
    """A dashboard can tell "no failed reload" from "not exported"."""
    got = scrape(endpoint[1])
    assert value(got, "trustmilter_policy_reloads_total", outcome="ok") == 0
    assert value(got, "trustmilter_policy_reloads_total", outcome="failed") == 0


def test_each_instance_has_its_own_registry() -> None:
    """No global default registry: a second instance (a reload, a test) starts at zero."""
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.message("accept")
    assert first.registry.get_sample_value("trustmilter_messages_total", {"action": "accept"}) == 1
    assert second.registry.get_sample_value("trustmilter_messages_total", {"action": "accept"}) is None


def test_empty_listen_means_no_endpoint() -> None:
    metrics: Metrics = start_metrics(MetricsConfig())
    assert isinstance(metrics, NullMetrics)


@pytest.mark.parametrize(
    "listen, expected",
    [("127.0.0.1:9425", ("127.0.0.1", 9425)), ("[::1]:9425", ("::1", 9425)),
     ("localhost:80", ("localhost", 80))],
)
def test_listen_address_split(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


def test_a_taken_port_fails_at_start_up() -> None:
    """The daemon must say so at start-up, not run silently without metrics."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            start_metrics(MetricsConfig(listen=f"127.0.0.1:{port}"))


def test_closed_endpoint_stops_answering(endpoint: tuple[PrometheusMetrics, str]) -> None:
    metrics, url = endpoint
    scrape(url)
    metrics.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_resolver_observer_times_network_lookups_only(
    dns_server: DnsTestServer, endpoint: tuple[PrometheusMetrics, str]
) -> None:
    """Real lookups against the test DNS server feed the latency histogram and failure counters."""
    dns_server.load("""
mail.example.com. 300 IN A 192.0.2.10
example.com.      300 IN TXT "v=spf1 -all"
$TIMEOUT slow.example.com. TXT
$SERVFAIL broken.example.com. TXT
$NXDOMAIN gone.example.net.
""")
    metrics, url = endpoint
    seen: list[tuple[str, str]] = []

    def observe(rdtype: str, seconds: float, status: str) -> None:
        assert seconds >= 0
        seen.append((rdtype, status))
        metrics.dns_query(rdtype, seconds, status)

    resolver = NetworkResolver(
        DnsConfig((dns_server.nameserver,), timeout=0.2, lifetime=0.4, cache_size=100),
        observer=observe,
    )
    assert resolver.query("mail.example.com", "A").status is DnsStatus.ANSWER
    assert resolver.query("mail.example.com", "A").status is DnsStatus.ANSWER  # cached
    assert resolver.query("example.com", "txt").ok
    assert resolver.query("gone.example.net", "MX").status is DnsStatus.NXDOMAIN
    assert resolver.query("gone.example.net", "MX").status is DnsStatus.NXDOMAIN  # cached negative
    assert resolver.query("slow.example.com", "TXT").status is DnsStatus.TEMPERROR
    assert resolver.query("broken.example.com", "TXT").status is DnsStatus.TEMPERROR
    assert resolver.query("bad..name", "A").status is DnsStatus.NXDOMAIN  # refused locally

    assert seen == [("A", "answer"), ("TXT", "answer"), ("MX", "nxdomain"),
                    ("TXT", "timeout"), ("TXT", "temperror")]
    got = scrape(url)
    assert value(got, "trustmilter_dns_query_seconds_count", rdtype="A") == 1
    assert value(got, "trustmilter_dns_query_seconds_count", rdtype="TXT") == 3
    assert value(got, "trustmilter_dns_query_seconds_count", rdtype="MX") == 1
    assert value(got, "trustmilter_dns_timeouts_total", rdtype="TXT") == 1
    assert value(got, "trustmilter_dns_errors_total", rdtype="TXT") == 1
    assert value(got, "trustmilter_dns_timeouts_total", rdtype="A") is None
    # The timed-out lookup waited at least dnspython's per-server timeout.
    assert (value(got, "trustmilter_dns_query_seconds_sum", rdtype="TXT") or 0) >= 0.2


def test_resolver_without_observer_is_unchanged(dns_server: DnsTestServer) -> None:
    dns_server.load("mail.example.com. 300 IN A 192.0.2.10\n")
    resolver = NetworkResolver(DnsConfig((dns_server.nameserver,), timeout=0.5, lifetime=1.0))
    assert resolver.query("mail.example.com", "A").addresses() == ["192.0.2.10"]
