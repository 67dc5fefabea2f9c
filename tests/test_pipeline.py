"""The pipeline: dependency order, concurrency, and failure isolation.

These use small stand-in checks (the pipeline is infrastructure; the real
checks are tested through the DNS test server in their own files).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from trustmilter.checks.base import BaseCheck, CheckContext, CheckSpec, Stage
from trustmilter.domains import DomainTools
from trustmilter.lookup import DnsAnswer, DnsStatus
from trustmilter.model import Connection, Facts
from trustmilter.pipeline import Pipeline, PipelineError
from trustmilter.results import AuthMethod, CheckResult, Outcome


class NoDns:
    def query(self, name: str, rdtype: str) -> DnsAnswer:
        return DnsAnswer(name, rdtype, DnsStatus.NXDOMAIN)


def make_check(name, requires=(), stage=Stage.DATA, sleep=0.0, fail=False, seen=None,
               method=None):
    class Fake(BaseCheck[None]):
        spec: ClassVar = CheckSpec(name, result=name, stage=stage, requires=tuple(requires),
                                   method=method)

        def run(self, ctx: CheckContext) -> list[CheckResult]:
            if seen is not None:
                seen[name] = sorted(ctx.results)
            time.sleep(sleep)
            if fail:
                raise RuntimeError("boom")
            return [CheckResult(name, Outcome.PASS)]

    return Fake(None)


FACTS = Facts(Connection(ip=ipaddress.ip_address("192.0.2.1")))


def run(pipeline: Pipeline, **kwargs):
    with ThreadPoolExecutor(16) as pool:
        return pipeline.run(FACTS, NoDns(), DomainTools(), pool, **kwargs)


def test_requirements_run_first_and_their_results_are_visible():
    seen: dict[str, list[str]] = {}
    checks = [
        make_check("dmarc", requires=("spf", "dkim"), seen=seen),
        make_check("spf", sleep=0.05, seen=seen),
        make_check("dkim", sleep=0.02, seen=seen),
    ]
    results = run(Pipeline.build(checks))
    assert seen["dmarc"] == ["dkim", "spf"]
    assert [r.check for r in results.all()][-1] == "dmarc"


def test_independent_checks_run_concurrently():
    """Wall time is bounded by the slowest chain, not the sum of all checks."""
    checks = [make_check(f"c{i}", sleep=0.3) for i in range(6)]
    started = time.monotonic()
    results = run(Pipeline.build(checks))
    assert len(results.all()) == 6
    assert time.monotonic() - started < 1.2  # the sum would be 1.8 s


def test_an_exception_is_a_temperror_for_that_check_alone():
    """It keeps its spec's RFC 8601 method, so the header still shows spf=temperror."""
    failing = make_check("spf", fail=True, method=AuthMethod.SPF)
    results = run(Pipeline.build([failing, make_check("iprev")]))
    assert results.first("spf").outcome is Outcome.TEMPERROR
    assert results.first("spf").method == "spf"
    assert results.first("iprev").outcome is Outcome.PASS


def test_a_check_past_the_deadline_is_a_temperror():
    checks = [make_check("dkim", sleep=2.0), make_check("iprev"), make_check("dmarc", requires=("dkim",))]
    results = run(Pipeline.build(checks), timeout=0.3)
    assert results.first("dkim").outcome is Outcome.TEMPERROR
    assert results.first("dmarc").outcome is Outcome.TEMPERROR
    assert results.first("iprev").outcome is Outcome.PASS


def test_only_the_asked_stages_run():
    checks = [make_check("dnsbl", stage=Stage.CONNECT), make_check("dkim", stage=Stage.DATA)]
    results = run(Pipeline.build(checks), stages=[Stage.CONNECT])
    assert list(results) == ["dnsbl"]


@pytest.mark.parametrize(
    "checks, message",
    [
        ([make_check("a", requires=("b",)), make_check("b", requires=("a",))], "cycle"),
        ([make_check("dmarc", requires=("spf",))], "unknown check spf"),
    ],
)
def test_impossible_orders_stop_start_up(checks, message):
    with pytest.raises(PipelineError, match=message):
        Pipeline.build(checks)


def test_shared_pipeline_is_safe_across_threads():
    pipeline = Pipeline.build([make_check("a"), make_check("b", requires=("a",))])
    outputs: list[int] = []

    def worker() -> None:
        outputs.append(len(run(pipeline).all()))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outputs == [2] * 8


def test_a_disabled_requirement_is_not_an_error():
    """DMARC still runs when the policy disables DKIM; a typo in `requires` still stops start-up."""
    pipeline = Pipeline.build([make_check("dmarc", requires=("dkim",))], known=["dkim", "dmarc"])
    assert list(run(pipeline)) == ["dmarc"]


class HalfCached:
    """A resolver whose cache holds only `cached` names; records which thread asked."""

    def __init__(self, cached: set[str]) -> None:
        self.cached = cached
        self.threads: dict[str, str] = {}

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.threads[name] = threading.current_thread().name
        return DnsAnswer(name, rdtype, DnsStatus.NXDOMAIN)

    def answers_at_once(self, name: str, rdtype: str) -> bool:
        return name in self.cached

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        return self.query(name, rdtype) if name in self.cached else None


def dns_check(name: str, lookups: tuple[str, ...], swallow: bool = False):
    class Lookups(BaseCheck[None]):
        spec: ClassVar = CheckSpec(name, result=name, stage=Stage.DATA, waits_on="dns")

        def __init__(self) -> None:
            super().__init__(None)
            self.runs: list[str] = []

        def run(self, ctx: CheckContext) -> list[CheckResult]:
            self.runs.append(threading.current_thread().name)
            for lookup in lookups:
                try:
                    ctx.dns.query(lookup, "A")
                except:  # noqa: E722 (as pyspf's exp= lookup does)
                    if not swallow:
                        raise
            return [CheckResult(name, Outcome.PASS)]

    return Lookups()


def test_a_dns_only_check_on_cache_hits_runs_in_the_calling_thread():
    check = dns_check("names", ("a.example", "b.example"))
    resolver = HalfCached({"a.example", "b.example"})
    with ThreadPoolExecutor(4, "pool") as pool:
        results = Pipeline.build([check]).run(FACTS, resolver, DomainTools(), pool)
    assert results.first("names").outcome is Outcome.PASS
    assert check.runs == [threading.current_thread().name]


@pytest.mark.parametrize("swallow", [False, True])
def test_a_cache_miss_sends_the_check_to_the_pool_to_start_again(swallow):
    """Even when the check (or a library in it) swallows the refusal, its run is discarded."""
    check = dns_check("names", ("a.example", "b.example"), swallow=swallow)
    resolver = HalfCached({"a.example"})
    with ThreadPoolExecutor(4, "pool") as pool:
        results = Pipeline.build([check]).run(FACTS, resolver, DomainTools(), pool)
    assert results.first("names").outcome is Outcome.PASS
    assert len(results.all()) == 1
    assert check.runs[0] == threading.current_thread().name
    assert check.runs[1].startswith("pool")
    assert resolver.threads["b.example"].startswith("pool")


def state_check(sleep: float = 0.0):
    class Counts(BaseCheck[None]):
        spec: ClassVar = CheckSpec("rate.rcpt", result="rate.rcpt", stage=Stage.RCPT,
                                   waits_on="state")

        def __init__(self) -> None:
            super().__init__(None)
            self.runs: list[str] = []

        def run(self, ctx: CheckContext) -> list[CheckResult]:
            self.runs.append(threading.current_thread().name)
            time.sleep(sleep)
            return [CheckResult(self.name, Outcome.PASS)]

    return Counts()


def test_a_state_check_runs_here_only_when_its_longest_wait_fits_the_deadline():
    here, there, late = state_check(), state_check(), state_check(sleep=2.0)
    with ThreadPoolExecutor(4, "pool") as pool:
        Pipeline.build([here]).run(FACTS, NoDns(), DomainTools(), pool, state_wait=1.0)
        Pipeline.build([there]).run(FACTS, NoDns(), DomainTools(), pool, timeout=0.5,
                                    state_wait=1.0)
        results = Pipeline.build([late]).run(FACTS, NoDns(), DomainTools(), pool,
                                             timeout=0.3, state_wait=5.0)
    assert here.runs == [threading.current_thread().name]
    assert there.runs[0].startswith("pool")
    # The deadline still holds: the store could have waited past it.
    assert results.first("rate.rcpt").outcome is Outcome.TEMPERROR


def test_checks_that_need_a_thread_start_before_the_inline_ones():
    """An inline check runs in the calling thread: the pooled checks of the same
    batch must already be on their way, or they would wait for it."""
    pooled_started = threading.Event()

    class Pooled(BaseCheck[None]):  # waits on "cpu" (the default): always a thread
        spec: ClassVar = CheckSpec("pooled", result="pooled", stage=Stage.DATA)

        def run(self, ctx: CheckContext) -> list[CheckResult]:
            pooled_started.set()
            return [CheckResult(self.name, Outcome.PASS)]

    class Inline(BaseCheck[None]):
        spec: ClassVar = CheckSpec("inline", result="inline", stage=Stage.DATA, waits_on="dns")

        def run(self, ctx: CheckContext) -> list[CheckResult]:
            ran_alongside = pooled_started.wait(timeout=2.0)
            return [CheckResult(self.name, Outcome.PASS if ran_alongside else Outcome.FAIL)]

    results = run(Pipeline.build([Inline(None), Pooled(None)]))  # listed inline first
    assert results.first("inline").outcome is Outcome.PASS
