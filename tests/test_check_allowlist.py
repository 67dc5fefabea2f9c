"""The allow-list: a sender known to be safe, counted only when authenticated as itself.

The SPF, DKIM and DMARC results are made by hand, as those checks report
them; the policy part is the default policy evaluated on hand-made results.
"""

from __future__ import annotations

import pytest

from helpers import make_ctx
from trustmilter.checks import allowlist
from trustmilter.checks.allowlist import AllowlistEnvelopeCheck, AllowlistMessageCheck
from trustmilter.checks.base import Stage
from trustmilter.checks.dkim import DkimEvidence
from trustmilter.checks.dmarc import DmarcEvidence
from trustmilter.checks.spf import SpfEvidence
from trustmilter.config.errors import InvalidField
from trustmilter.config.load import parse_settings
from trustmilter.mail.identity import PLAIN_IDENTITIES, Identities
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.verdict import Action

CONFIG = allowlist.Config(senders=("alerts@example.com", "@partner.example.net",
                                   "*@*.example.org", "No-Reply+tag@Example.NET"))


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"allowlist asked DNS for {name} {rdtype}")


def spf(outcome: Outcome, domain: str) -> CheckResult:
    return CheckResult("spf.mailfrom", outcome, evidence=SpfEvidence(domain, "mailfrom"))


def dkim(domain: str) -> CheckResult:
    return CheckResult("dkim", Outcome.PASS, evidence=DkimEvidence(domain, "sel"))


def dmarc(author: str, outcome: Outcome = Outcome.PASS) -> CheckResult:
    return CheckResult("dmarc", outcome, evidence=DmarcEvidence(author))


def message(from_: str) -> bytes:
    return (f"From: {from_}\r\nTo: support@example.org\r\nSubject: alert\r\n\r\nbody\r\n").encode()


def findings(results: list[CheckResult]) -> list[str]:
    return [f.name for r in results for f in r.findings]


# ---- the entries --------------------------------------------------------------


@pytest.mark.parametrize(("address", "listed"), [
    ("alerts@example.com", True),
    ("ALERTS@Example.COM", True),
    ("bob@partner.example.net", True),
    ("bob@mail.partner.example.net", False),  # @domain is that domain exactly
    ("x@mail.example.org", True),
    ("x@example.org", False),
    ("no-reply@example.net", True),
    ("bob@example.com", False),
    ("", False),
])
def test_entries(address, listed):
    identities = Identities("+")  # "no-reply" stays itself
    assert CONFIG.lists(identities.of(address).address, identities) is listed


def test_entries_are_compared_with_the_identity():
    """Sub-addresses, VERP and SRS return paths of a listed sender are that sender."""
    for dressed in ("alerts+4711@example.com", "alerts-bounce-4711@example.com",
                    "SRS0=abc=TT=example.com=alerts@forwarder.example.net",
                    "prvs=1234abcd=alerts@example.com"):
        assert CONFIG.lists(PLAIN_IDENTITIES.of(dressed).address, PLAIN_IDENTITIES), dressed


@pytest.mark.parametrize("entry", ["", "example.com", "a b@example.com"])
def test_bad_entries(entry):
    with pytest.raises(InvalidField):
        allowlist.Config(senders=(entry,))


def test_policy_yaml_section():
    settings = parse_settings("checks:\n  allowlist:\n    senders: ['@example.com']\n")
    assert settings.checks.allowlist == allowlist.Config(senders=("@example.com",))
    assert allowlist.Config().senders == (), "shipped empty: nobody is listed"


# ---- at MAIL FROM: the envelope sender and SPF --------------------------------------


def mail_ctx(sender, prior):
    return make_ctx(NoDns(), mail_from=sender, results=prior)


def test_envelope_listed_and_passing_spf():
    [result] = AllowlistEnvelopeCheck(CONFIG).run(
        mail_ctx("alerts+x@example.com", [spf(Outcome.PASS, "example.com")]))
    assert (result.outcome, findings([result])) == (Outcome.PASS, ["allowlist.sender"])
    assert result.evidence == allowlist.AllowlistEvidence("envelope:alerts@example.com")
    assert allowlist.listed(Results([result])) and allowlist.may_be_listed(Results([result]))


@pytest.mark.parametrize("prior", [[spf(Outcome.FAIL, "example.com")],
                                   [spf(Outcome.PASS, "forwarder.example.net")], []])
def test_envelope_not_authenticated_by_spf_is_pending(prior):
    [result] = AllowlistEnvelopeCheck(CONFIG).run(mail_ctx("alerts@example.com", prior))
    assert (result.outcome, result.findings) == (Outcome.NONE, ())
    results = Results([result])
    assert not allowlist.listed(results) and allowlist.may_be_listed(results)


def test_an_empty_list_reports_nothing():
    ctx = mail_ctx("alerts@example.com", [spf(Outcome.PASS, "example.com")])
    assert AllowlistEnvelopeCheck(allowlist.Config()).run(ctx) == []
    assert not allowlist.may_be_listed(Results())
    assert (AllowlistEnvelopeCheck.spec.stage, AllowlistMessageCheck.spec.stage) == (
        Stage.MAIL, Stage.DATA)


# ---- at end of message: envelope and From with everything that passed --------------


def eom(sender, from_, prior):
    return AllowlistMessageCheck(CONFIG).run(
        make_ctx(NoDns(), mail_from=sender, message=message(from_), results=prior))


def test_a_listed_from_authenticated_by_dmarc():
    """A bulk sender's VERP return path, its From listed and passing DMARC."""
    [result] = eom("bounces+x1=example.org@mailer.example.net", "Alerts <alerts@example.com>",
                   [spf(Outcome.PASS, "mailer.example.net"), dkim("example.com"),
                    dmarc("example.com")])
    assert (result.outcome, findings([result])) == (Outcome.PASS, ["allowlist.sender"])
    assert result.evidence.identity == "from:alerts@example.com"


def test_a_listed_envelope_authenticated_by_dkim():
    """Forwarded: SPF fails at the forwarder, the listed sender's signature is intact."""
    [result] = eom("alerts@example.com", "Alerts <alerts@example.com>",
                   [spf(Outcome.FAIL, "example.com"), dkim("mail.example.com")])
    assert findings([result]) == ["allowlist.sender"]


def test_a_forged_claim_is_judged_as_anyones():
    [result] = eom("alerts@example.com", "alerts@example.com",
                   [spf(Outcome.FAIL, "example.com"), dmarc("example.com", Outcome.FAIL)])
    assert (result.outcome, findings([result])) == (Outcome.FAIL, ["allowlist.unauthenticated"])
    assert "envelope:alerts@example.com, from:alerts@example.com" in result.reason
    assert not allowlist.listed(Results([result]))
    # A signature of another domain vouches for nothing here.
    [other] = eom("x@example.net", "alerts@example.com", [dkim("example.net")])
    assert findings([other]) == ["allowlist.unauthenticated"]


def test_nothing_listed_or_listed_already_reports_nothing():
    assert eom("bob@example.com", "bob@example.com", [dmarc("example.com")]) == []
    earlier = CheckResult("allowlist", Outcome.PASS, findings=(Finding("allowlist.sender"),))
    assert eom("alerts@example.com", "alerts@example.com", [earlier]) == []


# ---- what the policy does with it -------------------------------------------------------


LISTED = CheckResult("allowlist", Outcome.PASS, findings=(Finding("allowlist.sender"),))


def failing(check: str, finding: str) -> CheckResult:
    return CheckResult(check, Outcome.FAIL, findings=(Finding(finding),))


@pytest.mark.parametrize("finding", ["auto.noreply_sender", "auto.bulk", "auto.machine_generated"])
def test_exempt_from_the_automation_quarantine_rules_and_still_suppressed(finding):
    held = evaluate(Policy(), Results([failing("automation", finding)]))
    assert held.action is Action.QUARANTINE
    delivered = evaluate(Policy(), Results([failing("automation", finding), LISTED]))
    assert delivered.action is Action.ACCEPT
    # Notifications stay suppressed after allow-listing (RFC 3834 §5).
    assert ("Auto-Submitted", "auto-generated") in delivered.headers
    assert ("X-Auto-Response-Suppress", "All") in delivered.headers


@pytest.mark.parametrize(("results", "rule"), [
    ([failing("automation", "auto.bounce")], "auto-bounce"),
    ([failing("loops", "loop.marker_seen")], "loop-marker-seen"),
    # Our support address claimed from outside, on automated mail.
    ([failing("loops", "loop.support_sender"), failing("automation", "auto.machine_generated")],
     "loop-support-sender"),
    ([failing("loops", "loop.support_to_support")], "loop-support-to-support"),
    ([failing("rate", "rate.tier.reject")], "rate-reject"),
    ([failing("rate", "rate.tier.quarantine")], "rate-quarantine"),
    ([CheckResult("dmarc", Outcome.FAIL, findings=(Finding("dmarc.policy.reject"),))],
     "dmarc-reject-held"),
])
def test_never_exempt_from_rejects_forgery_or_loops(results, rule):
    verdict = evaluate(Policy(), Results([*results, LISTED]))
    assert rule in [hit.rule for hit in verdict.hits]
    assert verdict.action in (Action.QUARANTINE, Action.REJECT)
