"""Rate tiers (20 pass, the next 20 held, beyond 40 refused), per sender identity and
ticket, counted only for what a message authenticates; with an injectable clock
and the in-process state store, no DNS (the SPF, DKIM and DMARC results are made
by hand, as those checks report them)."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest

from helpers import make_ctx
from trustmilter.checks import rate
from trustmilter.checks.allowlist import LISTED, AllowlistEvidence
from trustmilter.checks.base import Stage
from trustmilter.checks.dkim import DkimEvidence
from trustmilter.checks.dmarc import DmarcEvidence
from trustmilter.checks.rate import (
    Count,
    CountedKey,
    MessageRateCheck,
    Parts,
    RecipientRateCheck,
    key_part,
    message_keys,
    normalise_subject,
    parse_key,
    thread_root,
    ticket_of,
)
from trustmilter.checks.spf import SpfEvidence
from trustmilter.config.errors import InvalidField
from trustmilter.config.load import ConfigError, parse_settings
from trustmilter.mail.identity import PLAIN_IDENTITIES, SenderIdentity
from trustmilter.model import Message
from trustmilter.policy.evaluate import evaluate
from trustmilter.policy.model import Policy
from trustmilter.results import CheckResult, Finding, Outcome, Results
from trustmilter.state.base import StateError
from trustmilter.state.memory import MemoryStore
from trustmilter.verdict import Action, Reply

T0 = 1_764_000_000.0  # any fixed epoch second
DEFAULT = rate.Config()


class NoDns:
    def query(self, name, rdtype):
        raise AssertionError(f"rate asked DNS for {name} {rdtype}")


class BrokenStore:
    """A state backend that is down."""

    def hit(self, key, now, window):
        raise StateError("redis://127.0.0.1:1/0: connection refused")

    count = hit


# ---- what SPF, DKIM and DMARC reported ------------------------------------------------


def spf(outcome: Outcome, domain: str) -> CheckResult:
    return CheckResult("spf.mailfrom", outcome, evidence=SpfEvidence(domain, "mailfrom"))


def dkim(domain: str, outcome: Outcome = Outcome.PASS) -> CheckResult:
    return CheckResult("dkim", outcome, evidence=DkimEvidence(domain, "sel"))


def dmarc(author: str, outcome: Outcome = Outcome.PASS) -> CheckResult:
    return CheckResult("dmarc", outcome, evidence=DmarcEvidence(author))


ALLOWLISTED = CheckResult("allowlist", Outcome.PASS, findings=(Finding(LISTED),),
                          evidence=AllowlistEvidence("from:alerts@example.com"))
# The robot's own server: SPF passes for its domain, its DKIM signature is valid.
AUTHENTIC = (spf(Outcome.PASS, "example.com"), dkim("example.com"), dmarc("example.com"))
# Someone else's server: SPF fails, no signature, DMARC fails.
FORGED = (spf(Outcome.FAIL, "example.com"), dmarc("example.com", Outcome.FAIL))


def message(subject="Printer broken", from_="alice@example.com", *extra):
    lines = [f"From: {from_}", "To: support@example.org", f"Subject: {subject}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def ctx(store, now, sender="alice@example.com", rcpts=("support@example.org",), raw=None,
        prior=AUTHENTIC):
    base = make_ctx(NoDns(), mail_from=sender, rcpt_to=rcpts, message=raw, results=prior)
    return replace(base, state=store, clock=lambda: now)


def judge(config, store, now, raw=None, **facts):
    """The one rate result of one message at end of message."""
    [result] = MessageRateCheck(config).run(
        ctx(store, now, raw=raw if raw is not None else message(), **facts))
    assert result.check == "rate"
    return result


def tier(result):
    return [f.name for f in result.findings] or [result.outcome.value]


def verdicts(results):
    return [evaluate(Policy(), Results([r])).action for r in results]


# ---- the tiers ----------------------------------------------------------------


def test_45_messages_give_20_accepted_20_quarantined_5_rejected():
    store = MemoryStore()
    results = [judge(DEFAULT, store, T0 + 10 * i) for i in range(45)]
    assert verdicts(results) == [Action.ACCEPT] * 20 + [Action.QUARANTINE] * 20 + [Action.REJECT] * 5
    verdict = evaluate(Policy(), Results([results[-1]]))
    assert verdict.reply == Reply(550, "5.7.1", "Too many messages from this sender in the last hour")
    assert [h.rule for h in evaluate(Policy(), Results([results[20]])).hits] == ["rate-quarantine"]


def test_a_verp_robot_is_one_sender():
    """The return path changes with every message, the From stays: caught by both
    keys (the envelope identity undoes the VERP, the From never changed)."""
    store = MemoryStore()
    results = [judge(DEFAULT, store, T0 + i, sender=f"bounce+{i}-support=example.org@example.com",
                     raw=message("Your ticket", "Robot <robot@example.com>"))
               for i in range(45)]
    assert verdicts(results) == [Action.ACCEPT] * 20 + [Action.QUARANTINE] * 20 + [Action.REJECT] * 5
    last = results[-1].evidence
    ticket = key_part("subj:your ticket")  # a Subject with a space is hashed
    assert [(c.key, c.count) for c in last.counts] == [
        (f"envelope:bounce@example.com|ticket:{ticket}", 45),
        (f"from:robot@example.com|ticket:{ticket}", 45)]


@pytest.mark.parametrize("dressed", [
    "SRS0=HHH{i}=TT=example.com=robot@forwarder.example.net",
    "SRS1=XXX=forwarder.example.net==HHH{i}=TT=example.com=robot@relay.example.net",
    "prvs={i:04d}abcdef=robot@example.com",
    "robot+{i}@example.com",
])
def test_dressed_return_paths_count_as_the_robot(dressed):
    """SRS by a forwarder (its SPF pass is the forwarder's own: the robot's DKIM
    signature authenticates it), BATV and sub-addresses: one sender."""
    store = MemoryStore()
    srs = dressed.startswith("SRS")
    prior = (spf(Outcome.PASS, "forwarder.example.net" if srs else "example.com"),
             dkim("example.com"), dmarc("example.com"))
    results = [judge(DEFAULT, store, T0 + i, sender=dressed.format(i=i), prior=prior,
                     raw=message("Re: Your ticket", "robot@example.com"))
               for i in range(45)]
    assert verdicts(results) == [Action.ACCEPT] * 20 + [Action.QUARANTINE] * 20 + [Action.REJECT] * 5
    assert results[-1].evidence.counts[0].key.startswith("envelope:robot@example.com|")


def test_two_tickets_of_one_user_are_counted_apart():
    config = replace(DEFAULT, ticket_pattern=r"\[#(\d+)\]")
    store = MemoryStore()
    for i in range(41):
        last = judge(config, store, T0 + i, raw=message(f"Re: [#4711] update {i}"))
    assert tier(last) == ["rate.tier.reject"]
    other = judge(config, store, T0 + 50, raw=message("[#4712] a new question"))
    assert tier(other) == ["pass"]
    assert [c.key for c in other.evidence.counts] == [
        "envelope:alice@example.com|ticket:ref:4712", "from:alice@example.com|ticket:ref:4712"]


def test_the_strictest_key_decides():
    """The envelope identity is counted once over many From addresses: its count decides."""
    store = MemoryStore()
    for i in range(20):
        judge(DEFAULT, store, T0, raw=message("Same", f"user{i}@example.com"))
    result = judge(DEFAULT, store, T0, raw=message("Same", "new@example.com"))
    assert tier(result) == ["rate.tier.quarantine"]
    assert result.evidence.deciding == Count(
        f"envelope:alice@example.com|ticket:{key_part('subj:same')}", 21, 20, 40)
    assert rate.deciding(Results([result])) == result.evidence.deciding
    assert "21 messages in 3600 s for envelope:alice@example.com" in result.reason


def test_the_window_rolls_over():
    store = MemoryStore()
    for _ in range(20):
        assert tier(judge(DEFAULT, store, T0)) == ["pass"]
    assert tier(judge(DEFAULT, store, T0 + 1800)) == ["rate.tier.quarantine"]
    # An hour after the first 20 they have left the window: 2 in it now.
    assert tier(judge(DEFAULT, store, T0 + 3600.5)) == ["pass"]
    assert judge(DEFAULT, store, T0 + 3601).evidence.counts[0].count == 3


# ---- counting that a forger cannot spend ------------------------------------------------


def test_forged_messages_do_not_spend_the_real_senders_count():
    """41 forgeries in alice's name fill the unauthenticated count; hers stays hers."""
    store = MemoryStore()
    forged = [judge(DEFAULT, store, T0 + i, prior=FORGED) for i in range(41)]
    assert [tier(r)[0] for r in forged] == (
        ["pass"] * 10 + ["rate.tier.quarantine"] * 10 + ["rate.tier.reject"] * 21)
    assert forged[-1].evidence.deciding.key.startswith("unauth:")
    assert tier(judge(DEFAULT, store, T0 + 60)) == ["pass"]
    own = [judge(DEFAULT, store, T0 + 100 + i) for i in range(40)]
    assert verdicts(own[-1:]) == [Action.REJECT]  # her 41st authenticated message
    assert [c.count for c in own[-1].evidence.counts] == [41, 41]


def test_what_authenticates_which_identity():
    """Envelope: SPF or DKIM aligned with its domain; From: DMARC, or SPF/DKIM aligned."""
    store = MemoryStore()

    def labels(prior, sender="alice@example.com", from_="alice@example.com"):
        result = judge(DEFAULT, store, T0, prior=prior, sender=sender,
                       raw=message("x", from_))
        return [c.key.split("|")[0] for c in result.evidence.counts]

    assert labels(AUTHENTIC) == ["envelope:alice@example.com", "from:alice@example.com"]
    assert labels(FORGED) == ["unauth:envelope:alice@example.com", "unauth:from:alice@example.com"]
    # Forwarded: SPF fails at the forwarder, the author's signature survives.
    assert labels((spf(Outcome.FAIL, "example.com"), dkim("mail.example.com"))) == [
        "envelope:alice@example.com", "from:alice@example.com"]
    # A signature of another organisation authenticates neither.
    assert labels((dkim("example.net"),)) == [
        "unauth:envelope:alice@example.com", "unauth:from:alice@example.com"]
    # A provider's envelope (SPF pass for it) with the author's From only via DMARC.
    assert labels((spf(Outcome.PASS, "mailer.example.net"), dmarc("example.com")),
                  sender="b-123@mailer.example.net") == [
        "envelope:b@mailer.example.net", "from:alice@example.com"]
    # An SRS address's SPF pass is the forwarder's: it proves nothing about alice.
    assert labels((spf(Outcome.PASS, "forwarder.example.net"),),
                  sender="SRS0=abc=TT=example.com=alice@forwarder.example.net") == [
        "unauth:envelope:alice@example.com", "unauth:from:alice@example.com"]


def test_unauthenticated_tiers_are_the_policys():
    config = replace(DEFAULT, unauthenticated_quarantine_after=1, unauthenticated_reject_after=2)
    store = MemoryStore()
    assert [tier(judge(config, store, T0, prior=FORGED))[0] for _ in range(3)] == [
        "pass", "rate.tier.quarantine", "rate.tier.reject"]


# ---- the allow-list ---------------------------------------------------------------------


def test_an_allowlisted_sender_gets_200_and_400():
    store = MemoryStore()
    prior = (*AUTHENTIC, ALLOWLISTED)
    counts = Counter(tier(judge(DEFAULT, store, T0, prior=prior))[0] for _ in range(401))
    assert counts == {"pass": 200, "rate.tier.quarantine": 200, "rate.tier.reject": 1}
    assert DEFAULT.limits(True, True) == (200, 400)
    assert replace(DEFAULT, allowlist_factor=2.5).limits(True, True) == (50, 100)
    # The factor is for authenticated counts: claims keep their own tiers.
    assert DEFAULT.limits(False, True) == (10, 20)


# ---- at RCPT TO ------------------------------------------------------------------------


ENVELOPE_KEY = replace(DEFAULT, keys=("envelope+recipient",))


def test_rcpt_refuses_an_spf_authenticated_sender_beyond_its_tier_and_counts_the_refusal():
    store = MemoryStore()
    check = RecipientRateCheck(ENVELOPE_KEY)
    for i in range(40):
        assert check.run(ctx(store, T0 + i)) == [], "read only below the reject tier"
        assert tier(judge(ENVELOPE_KEY, store, T0 + i)) != ["rate.tier.reject"]
    [refused] = check.run(ctx(store, T0 + 50))
    assert tier(refused) == ["rate.tier.reject"]
    assert refused.evidence.counts == (
        Count("envelope:alice@example.com|recipient:support@example.org", 41, 20, 40),)
    assert tier(check.run(ctx(store, T0 + 51))[0]) == ["rate.tier.reject"]
    assert store.count("rate:envelope:alice@example.com|recipient:support@example.org",
                       T0 + 51, 3600) == 42, "a system that keeps trying stays refused"
    assert (RecipientRateCheck.spec.stage, MessageRateCheck.spec.stage) == (Stage.RCPT, Stage.DATA)


def test_rcpt_never_refuses_mail_that_fails_spf():
    """DKIM may still authenticate it at end of message (forwarded mail)."""
    store = MemoryStore()
    for _ in range(45):
        store.hit("rate:unauth:envelope:alice@example.com|recipient:support@example.org", T0, 3600)
        store.hit("rate:envelope:alice@example.com|recipient:support@example.org", T0, 3600)
    assert RecipientRateCheck(ENVELOPE_KEY).run(ctx(store, T0, prior=FORGED)) == []
    assert RecipientRateCheck(DEFAULT).run(ctx(store, T0)) == [], "ticket keys need the message"


def test_rcpt_refuses_as_allowlisted_while_the_allowlist_may_still_list_it():
    store = MemoryStore()
    key = "rate:envelope:alice@example.com|recipient:support@example.org"
    for _ in range(45):
        store.hit(key, T0, 3600)
    pending = CheckResult("allowlist", Outcome.NONE, evidence=AllowlistEvidence(pending=True))
    check = RecipientRateCheck(ENVELOPE_KEY)
    assert check.run(ctx(store, T0, prior=(*AUTHENTIC, pending))) == []
    [refused] = check.run(ctx(store, T0))
    assert tier(refused) == ["rate.tier.reject"]


def test_a_key_counted_at_rcpt_is_not_counted_again_at_end_of_message():
    store = MemoryStore()
    key = "envelope:alice@example.com|recipient:support@example.org"
    for _ in range(40):
        store.hit(rate.STATE_PREFIX + key, T0, 3600)
    # A race: the count was beyond the tier when read, inside it when counted.
    counted = CheckResult("rate", Outcome.PASS,
                          evidence=rate.RateEvidence((Count(key, 38, 200, 400),)))
    result = judge(ENVELOPE_KEY, store, T0, prior=(*AUTHENTIC, counted))
    assert result.evidence.counts == (Count(key, 38, 20, 40),)
    assert store.count(rate.STATE_PREFIX + key, T0, 3600) == 40


def test_one_message_to_many_recipients_counts_once_per_key():
    store = MemoryStore()
    result = judge(DEFAULT, store, T0, rcpts=("a@example.org", "b@example.org", "c@example.org"))
    assert [c.count for c in result.evidence.counts] == [1, 1]
    per_recipient = judge(ENVELOPE_KEY, store, T0, rcpts=("a@example.org", "A@example.org",
                                                          "b@example.org"))
    assert [c.key.split("|")[1] for c in per_recipient.evidence.counts] == [
        "recipient:a@example.org", "recipient:b@example.org"]


# ---- what is not counted, and a store that is down --------------------------------------


def test_null_sender_offline_and_no_message_are_skipped():
    store = MemoryStore()
    assert judge(DEFAULT, store, T0, sender="").reason == "null sender"
    assert judge(DEFAULT, None, T0).reason == "no state store (offline)"
    [early] = MessageRateCheck(DEFAULT).run(ctx(store, T0))
    assert (early.outcome, early.reason) == (Outcome.SKIPPED, "no message yet")
    assert RecipientRateCheck(ENVELOPE_KEY).run(ctx(store, T0, sender="")) == []
    assert RecipientRateCheck(ENVELOPE_KEY).run(ctx(None, T0)) == []


def test_a_message_without_from_has_no_from_key():
    store = MemoryStore()
    raw = b"To: support@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    result = judge(DEFAULT, store, T0, raw=raw)
    assert [c.key.split("|")[0] for c in result.evidence.counts] == ["envelope:alice@example.com"]
    only_from = judge(replace(DEFAULT, keys=("from",)), store, T0, raw=raw)
    assert (only_from.outcome, only_from.reason) == (Outcome.SKIPPED, "no key applies")


def test_state_error_is_a_temperror_the_policy_tempfails():
    for result in (judge(DEFAULT, BrokenStore(), T0),
                   RecipientRateCheck(ENVELOPE_KEY).run(ctx(BrokenStore(), T0))[0]):
        assert result.outcome is Outcome.TEMPERROR
        assert [f.name for f in result.findings] == ["rate.state_unavailable"]
        assert "connection refused" in result.reason
        verdict = evaluate(Policy(), Results([result]))
        assert verdict.action is Action.TEMPFAIL
        assert verdict.reply == Reply(451, "4.3.0", "Temporary local problem, please try again later")


# ---- concurrency ------------------------------------------------------------------------


def test_parallel_sessions_get_the_exact_tiers():
    """40 sessions at once from one sender about one ticket: exactly 20 pass, 20 held."""
    store = MemoryStore()
    check = MessageRateCheck(DEFAULT)
    start = threading.Barrier(40, timeout=10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def session() -> None:
        start.wait()
        [result] = check.run(ctx(store, T0, raw=message()))
        with lock:
            outcomes.append(tier(result)[0])

    threads = [threading.Thread(target=session) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert Counter(outcomes) == {"pass": 20, "rate.tier.quarantine": 20}


# ---- the pure parts ----------------------------------------------------------------------


def test_parse_key():
    assert parse_key("ticket+from") == ("from", "ticket")
    assert parse_key(" envelope + recipient ") == ("envelope", "recipient")
    for bad in ("ticket", "recipient+ticket", "from+from", "sender", "from+"):
        with pytest.raises(ValueError):
            parse_key(bad)


def test_message_keys():
    robot = SenderIdentity("robot@example.com")
    parts = Parts(envelope=SenderIdentity("bounce@example.com"), author=robot, ticket="ref:1",
                  recipients=("A@example.org", "a@example.org", "b@example.org"),
                  envelope_authenticated=True)
    keys = message_keys([("envelope", "ticket"), ("from", "ticket"), ("envelope", "recipient"),
                         ("envelope", "from")], parts)
    assert keys == [
        CountedKey("envelope:bounce@example.com|ticket:ref:1", True),
        CountedKey("unauth:from:robot@example.com|ticket:ref:1", False),
        CountedKey("envelope:bounce@example.com|recipient:a@example.org", True),
        CountedKey("envelope:bounce@example.com|recipient:b@example.org", True),
        CountedKey("unauth:envelope:bounce@example.com|from:robot@example.com", False),
    ]
    assert keys[0].state_key == "rate:envelope:bounce@example.com|ticket:ref:1"
    # Nothing known, nothing counted; a key without its component is left out.
    assert message_keys([("from", "ticket")], Parts(envelope=robot)) == []


def test_strictest_takes_the_first_of_the_most_severe():
    a, b, c = Count("a", 5, 20, 40), Count("b", 25, 20, 40), Count("c", 12, 10, 20)
    assert rate.strictest([a, b, c]) == b
    assert rate.strictest([a]) == a and rate.strictest([]) is None
    assert rate.deciding(Results([CheckResult("rate", Outcome.PASS,
                                              evidence=rate.RateEvidence((a,)))])) is None


def test_ticket_of_prefers_the_help_desks_reference():
    pattern = re.compile(r"\[#(\d+)\]")
    assert ticket_of(Message(message("AW: [#4711] printer")), pattern) == "ref:4711"
    assert ticket_of(Message(message("=?utf-8?q?=5B#4711=5D_Gr=C3=BC=C3=9Fe?=")),
                     pattern) == "ref:4711"
    assert ticket_of(Message(message("Re: printer", "a@example.com",
                                     "References: <root@example.com>")), pattern) == (
        "mid:<root@example.com>")
    assert ticket_of(Message(message("Re: printer")), None) == "subj:printer"
    whole = re.compile(r"Ticket#\d+")
    assert ticket_of(Message(message("[Ticket#2024 ok]")), whole) == "ref:ticket#2024"
    # Beyond the first 998 characters the pattern is not searched.
    assert ticket_of(Message(message("x" * 1000 + " [#1]")), pattern).startswith("subj:")


def test_thread_root_prefers_references_then_in_reply_to():
    refs = Message(message("x", "a@example.com", "References: <root@example.com>\r\n <child@example.com>",
                           "In-Reply-To: <child@example.com>"))
    assert thread_root(refs) == "mid:<root@example.com>"
    reply = Message(message("x", "a@example.com", "In-Reply-To: <parent@example.com> (Alice's message)"))
    assert thread_root(reply) == "mid:<parent@example.com>"
    assert thread_root(Message(message("Re: Hello  World"))) == "subj:hello world"
    assert thread_root(Message(b"From: a@example.com\r\n\r\n")) == "subj:"


@pytest.mark.parametrize(("subject", "expected"), [
    ("Re: Re: Fwd: hello", "hello"),
    ("AW: WG: SV: Antw: hello", "hello"),
    ("[#123] re[3]: Hello", "hello"),
    ("Hello [Ticket 4711]", "hello"),
    ("=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=", "grüsse"),
    ("Regarding: the re: in the middle", "regarding: the re: in the middle"),
])
def test_normalise_subject(subject, expected):
    assert normalise_subject(subject) == expected


def test_long_or_odd_key_parts_are_hashed():
    long = "x" * 500
    assert key_part(long).startswith("h:") and len(key_part(long)) == 34
    assert key_part("subj:two words") != "subj:two words" and key_part("a|b").startswith("h:")
    assert key_part("subj:two words") == key_part("subj:two words")
    assert key_part("mid:<root@example.com>") == "mid:<root@example.com>"


# ---- configuration ----------------------------------------------------------------------


def test_policy_yaml_section():
    policy = parse_settings(
        "checks:\n  rate:\n    keys: [from, envelope+recipient]\n    window: 60\n"
        "    ticket_pattern: '\\[#(\\d+)\\]'\n    allowlist_factor: 3\n")
    assert policy.checks.rate == rate.Config(
        keys=("from", "envelope+recipient"), window=60.0, ticket_pattern=r"\[#(\d+)\]",
        allowlist_factor=3.0)
    with pytest.raises(ConfigError, match=r"checks\.rate\.keys\[0\]: expected components"):
        parse_settings("checks:\n  rate:\n    keys: [recipient]\n")
    with pytest.raises(ConfigError, match=r"checks.rate.reject_after: expected an integer >= quarantine_after \(20\)"):
        parse_settings("checks:\n  rate:\n    reject_after: 10\n")
    with pytest.raises(ConfigError, match=r"unauthenticated_reject_after: expected an integer >= "):
        parse_settings("checks:\n  rate:\n    unauthenticated_reject_after: 5\n")
    with pytest.raises(ConfigError, match=r"ticket_pattern: expected a regular expression"):
        parse_settings("checks:\n  rate:\n    ticket_pattern: '[#'\n")
    with pytest.raises(ConfigError, match=r"checks.rate.keys: expected at least one key"):
        parse_settings("checks:\n  rate:\n    keys: []\n")


@pytest.mark.parametrize(("old", "says"), [
    ("key: sender+recipient", r"checks\.rate\.key: no longer read: use `keys`, a list: "
                              r"sender -> \[envelope\], sender\+recipient -> \[envelope\+recipient\]"),
    ("allowlist: ['@example.com']", r"checks\.rate\.allowlist: no longer read: .*"
                                    r"checks\.allowlist\.senders"),
])
def test_an_older_policy_says_what_to_write_instead(old, says):
    with pytest.raises(ConfigError, match=says) as raised:
        parse_settings(f"checks:\n  rate:\n    {old}\n", "policy.yaml")
    assert str(raised.value).startswith("policy.yaml:3: ")


@pytest.mark.parametrize("entry", [(), ("x",)])
def test_bad_keys(entry):
    with pytest.raises(InvalidField):
        rate.Config(keys=entry)


# ---- hostile input stays linear ---------------------------------------------------------


def _run_time(raw: bytes) -> float:
    store = MemoryStore()
    started = time.process_time()
    judge(replace(DEFAULT, ticket_pattern=r"\[#(\d+)\]"), store, T0, raw=raw)
    return time.process_time() - started


def test_a_megabyte_subject_and_ten_thousand_references_cost_linear_time():
    """Guards against a quadratic regression, not speed measurements: each bound is
    about a hundred times what it takes now."""
    subject = "Re: " * 250_000 + "[#" * 10
    assert _run_time(message(subject)) < 10
    references = "References: " + "\r\n ".join(f"<{i}@example.com>" for i in range(10_000))
    assert _run_time(message("x", "a@example.com", references)) < 5
    # Twice the size, not four times the time (a loose factor for a loaded machine).
    small, large = (_run_time(message("Re: " * n + "x")) for n in (100_000, 200_000))
    assert large < 4 * small + 0.5


_OLD_PREFIXES = re.compile(
    r"\A\s*(?:(?:re|fwd?|aw|wg|sv|antw)\s*(?:\[\d+\]|\(\d+\))?\s*:|\[[^\[\]]{0,100}\])\s*",
    re.IGNORECASE,
)


def _old_normalise_subject(subject: str) -> str:
    """normalise_subject as it was (each prefix cut off in turn), as the reference."""
    text = rate._SPACE.sub(" ", rate._decoded(subject))
    while True:
        stripped = _OLD_PREFIXES.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    text = rate._TAG.sub(" ", text)
    return rate._SPACE.sub(" ", text).strip().casefold()


def test_normalise_subject_same_as_before_for_any_subject() -> None:
    rng = random.Random(2822)
    pieces = ["Re:", "RE :", "Fwd:", "fw:", "AW(3):", "Re[2]:", "[ticket 1]", "[", "]", " ",
              "\t", "x", "Sv:", "antw:", "re", ":", "=?utf-8?q?Re=3A_x?=", "Wg: "]
    for _ in range(6000):
        subject = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        assert normalise_subject(subject) == _old_normalise_subject(subject), subject


def test_many_prefixes_cost_linear_time() -> None:
    """Cutting the prefixes off one at a time copied the rest for each: a 1 MB
    "Re: Re: ..." took 3.6 s, this 4 MB one about a minute. A guard against that
    regression, not a speed measurement: the bound is about 100 times what it
    takes now."""
    started = time.monotonic()
    assert normalise_subject("Re: " * 1_000_000 + "hello") == "hello"
    assert time.monotonic() - started < 30


def test_identities_are_the_policys():
    """The checks undo dressings with the context's Identities (address_separators)."""
    store = MemoryStore()
    base = ctx(store, T0, sender="mary-ann+x@example.com", raw=message("x", "mary-ann@example.com"))
    [plain] = MessageRateCheck(DEFAULT).run(replace(base, identities=PLAIN_IDENTITIES))
    assert plain.evidence.counts[0].key.startswith("envelope:mary@example.com|")
    from trustmilter.mail.identity import Identities
    [plus] = MessageRateCheck(DEFAULT).run(replace(base, identities=Identities("+")))
    assert [c.key.split("|")[0] for c in plus.evidence.counts] == [
        "envelope:mary-ann@example.com", "from:mary-ann@example.com"]
