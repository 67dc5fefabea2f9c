"""Results built up with `plus` are the Results built at once from the same list."""

from __future__ import annotations

import math
import random
import time

from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, Outcome, Results

CHECKS = ("rate", "names", "loops", "dnsbl", "spf.mailfrom", "dkim", "reputation")
FINDINGS = (
    Finding("dnsbl.listed", "zen", 2.5), Finding("dnsbl.listed", "x", math.inf),
    Finding("uribl.listed", "y", -1.0), Finding("rate.tier.quarantine"),
    Finding("names.rcpt_nonexistent", "z"), Finding("dnsbl.listed", "n", math.nan),
    Finding("reputation.learned", "r"),
)


def random_result(rng: random.Random) -> CheckResult:
    findings = tuple(rng.choice(FINDINGS) for _ in range(rng.choice([0, 0, 1, 2])))
    return CheckResult(rng.choice(CHECKS), rng.choice(list(Outcome)), "", findings,
                       summary=rng.choice("ab"))


def test_plus_gives_what_building_at_once_gives() -> None:
    rng = random.Random(8601)
    policy = Policy()
    for _ in range(1500):
        items = [random_result(rng) for _ in range(rng.randrange(0, 16))]
        built = Results()
        done = 0
        while done < len(items):
            if rng.random() < 0.5:  # cached signals and weights carried over, or not
                built.signals()
                built.scored_findings()
            step = rng.randrange(0, 4)
            built = built.plus(items[done : done + step])
            done += step
        fresh = Results(items)
        assert built.all() == fresh.all()
        assert list(built.items()) == list(fresh.items())
        assert built.signals() == fresh.signals()
        assert built.scored_findings() == fresh.scored_findings()
        assert [built.first(c) for c in CHECKS] == [fresh.first(c) for c in CHECKS]
        assert evaluate(policy, built) == evaluate(policy, fresh)


def test_growing_results_are_never_rebuilt() -> None:
    """A transaction adds a few results per recipient and the policy is asked each
    time: rebuilding the results made that cost 23 s for 8000 steps. A guard
    against that regression, not a speed measurement. Each evaluation still
    reads every result (8000 steps: about 4 s of CPU here; a message has at
    most Postfix's smtpd_recipient_limit recipients, 1000 by default), so the
    bound is CPU time, which another process's load does not inflate."""
    policy = Policy()
    results = Results()
    started = time.process_time()
    for i in range(8000):
        results = results.plus([
            CheckResult("rate", Outcome.PASS, summary=f"k{i}"),
            CheckResult("names", Outcome.PASS, findings=(Finding("dnsbl.listed", "", 1.0),)),
        ])
        evaluate(policy, results)
    assert time.process_time() - started < 15
    assert len(results.scored_findings()) == 8000
