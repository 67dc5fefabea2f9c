"""Name existence (docs/rules.md §3; RFC 5321 §5.1, RFC 7505), through the DNS test server."""

from __future__ import annotations

import pytest

from helpers import make_ctx
from trustmilter.checks import names
from trustmilter.checks.base import Stage
from trustmilter.checks.names import EnvelopeNamesCheck, HeaderNamesCheck, RecipientNamesCheck
from trustmilter.checks.registry import SECTIONS
from trustmilter.results import CheckResult, Outcome

ZONE = """
example.com.            300 IN MX   10 mail.example.com.
mail.example.com.       300 IN A    192.0.2.4
aonly.example.net.      300 IN A    192.0.2.1
v6only.example.net.     300 IN AAAA 2001:db8::1
mxonly.example.org.     300 IN MX   10 mail.example.com.
; RFC 7505 §3: a null MX says the domain takes no mail
nullmx.example.org.     300 IN MX   0 .
nullmx.example.org.     300 IN A    192.0.2.2
noaddr.example.org.     300 IN TXT  "v=spf1 -all"
partial.example.net.    300 IN A    192.0.2.3
$TIMEOUT  partial.example.net. MX
$TIMEOUT  slow.example.net.
$NXDOMAIN not.existing.example.com.
"""


def envelope(resolver, mail_from, rcpt_to=(), config=None):
    """Run the envelope check and return its single result."""
    ctx = make_ctx(resolver, mail_from=mail_from, rcpt_to=rcpt_to)
    [result] = EnvelopeNamesCheck(config or names.Config()).run(ctx)
    assert result.check == "names"
    return result


def recipients(resolver, rcpt_to, config=None):
    """Run the recipient check and return its single result."""
    ctx = make_ctx(resolver, mail_from="a@example.com", rcpt_to=rcpt_to)
    [result] = RecipientNamesCheck(config or names.Config(check_recipients=True)).run(ctx)
    assert result.check == "names"
    return result


def header(resolver, raw, config=None):
    """Run the From header check and return its single result."""
    ctx = make_ctx(resolver, mail_from="a@example.com", message=raw)
    [result] = HeaderNamesCheck(config or names.Config()).run(ctx)
    assert result.check == "names"
    return result


def found(result):
    return [f.name for f in result.findings]


def test_registry_names_and_stages():
    """The sender is judged at MAIL (to reject there, 550 5.1.8), recipients at RCPT."""
    checks = (EnvelopeNamesCheck, RecipientNamesCheck, HeaderNamesCheck)
    assert [(c.spec.name, c.spec.stage) for c in checks] == [
        ("names.envelope", Stage.MAIL), ("names.rcpt", Stage.RCPT), ("names.header", Stage.DATA),
    ]
    section = next(s for s in SECTIONS if s.name == "names")
    assert section.checks == checks
    # The pipeline names error results after `result`, not the check's name.
    assert {c.spec.result for c in checks} == {"names"}


@pytest.mark.parametrize(
    "sender",
    ["a@example.com", "a@aonly.example.net", "a@v6only.example.net", "a@mxonly.example.org",
     "<a@EXAMPLE.COM.>", "a@partial.example.net"],
)
def test_sender_domain_exists(dns_server, resolver, sender):
    """RFC 5321 §5.1: an MX, or an A/AAAA as implicit MX, makes a mail domain."""
    dns_server.load(ZONE)
    result = envelope(resolver, sender)
    assert result.outcome is Outcome.PASS
    assert result.findings == ()


def test_sender_nonexistent(dns_server, resolver):
    """docs/rules.md §3: a nonexistent sender domain (NXDOMAIN), decided at MAIL."""
    dns_server.load(ZONE)
    result = envelope(resolver, "a@not.existing.example.com")
    assert result.outcome is Outcome.FAIL
    assert found(result) == ["names.sender_nonexistent"]
    assert "not.existing.example.com" in result.findings[0].detail


@pytest.mark.parametrize("sender", ["a@localhost", "a@exa mple.com", "a@x..example.com"])
def test_sender_domain_that_cannot_exist(dns_server, resolver, sender):
    """RFC 5321 §2.3.5: a single label or invalid name is no mail domain; nothing asked."""
    dns_server.load(ZONE)
    assert found(envelope(resolver, sender)) == ["names.sender_nonexistent"]
    assert dns_server.queries == []


def test_sender_no_address(dns_server, resolver):
    """docs/rules.md §3 "unresolvable": the name exists but has no A, AAAA or MX."""
    dns_server.load(ZONE)
    result = envelope(resolver, "a@noaddr.example.org")
    assert result.outcome is Outcome.FAIL
    assert found(result) == ["names.sender_no_address"]


def test_sender_null_mx(dns_server, resolver):
    """RFC 7505 §3/§4.2: a null MX marks a domain that sends no mail, A record or not."""
    dns_server.load(ZONE)
    result = envelope(resolver, "a@nullmx.example.org")
    assert found(result) == ["names.sender_no_address"]
    assert "null MX" in result.findings[0].detail


def test_sender_timeout_is_temperror(dns_server, resolver):
    """Every lookup timed out: existence is undecided, so temperror (never a 5xx)."""
    dns_server.load(ZONE)
    result = envelope(resolver, "a@slow.example.net")
    assert result.outcome is Outcome.TEMPERROR
    assert result.findings == ()


def test_lookups_are_a_aaaa_mx(dns_server, resolver):
    """A, AAAA and MX are each asked once for the domain."""
    dns_server.load(ZONE)
    envelope(resolver, "a@example.com")
    assert sorted(dns_server.queries) == [
        ("example.com", "A"), ("example.com", "AAAA"), ("example.com", "MX")
    ]


@pytest.mark.parametrize("sender", ["", "<>"])
def test_null_sender_skipped(dns_server, resolver, sender):
    """RFC 5321 §4.5.5: the null sender has no domain to check."""
    dns_server.load(ZONE)
    assert envelope(resolver, sender).outcome is Outcome.SKIPPED
    assert dns_server.queries == []


def test_sender_without_domain_or_literal_skipped(dns_server, resolver):
    """No domain, or an address literal (RFC 5321 §4.1.3): nothing to look up."""
    dns_server.load(ZONE)
    assert envelope(resolver, "postmaster").outcome is Outcome.SKIPPED
    assert envelope(resolver, "a@[192.0.2.1]").outcome is Outcome.SKIPPED
    assert dns_server.queries == []


def test_sender_check_ignores_recipients(dns_server, resolver):
    """The MAIL-stage check looks at the sender only."""
    dns_server.load(ZONE)
    result = envelope(resolver, "a@example.com", ("x@not.existing.example.com",),
                      names.Config(check_recipients=True))
    assert result.outcome is Outcome.PASS
    assert all(name == "example.com" for name, _ in dns_server.queries)


def test_recipients_only_when_configured(dns_server, resolver):
    """Envelope recipient domains: checked only with check_recipients (the MTA decided)."""
    dns_server.load(ZONE)
    rcpts = ("x@not.existing.example.com", "postmaster", "y@noaddr.example.org",
             "z@example.com")
    assert recipients(resolver, rcpts, names.Config()).outcome is Outcome.SKIPPED
    assert dns_server.queries == []
    on = recipients(resolver, rcpts)
    assert on.outcome is Outcome.FAIL
    # A recipient domain without addresses is for the MTA to bounce: no finding.
    assert found(on) == ["names.rcpt_nonexistent"]
    assert on.findings[0].detail.startswith("not.existing.example.com")


def test_recipients_pass_skip_and_timeout(dns_server, resolver):
    """Existing recipient domains pass; none known is skipped; a timeout is temperror."""
    dns_server.load(ZONE)
    assert recipients(resolver, ("a@example.com", "b@EXAMPLE.com")).outcome is Outcome.PASS
    assert recipients(resolver, ("postmaster",)).outcome is Outcome.SKIPPED
    assert recipients(resolver, ("a@slow.example.net",)).outcome is Outcome.TEMPERROR


def message(from_value):
    return (f"From: {from_value}\r\nTo: s@example.com\r\nSubject: x\r\n\r\nbody\r\n").encode()


def test_from_domain_exists(dns_server, resolver):
    """docs/rules.md §3: the From header's domain exists."""
    dns_server.load(ZONE)
    assert header(resolver, message("Alice <alice@example.com>")).outcome is Outcome.PASS


def test_from_nonexistent(dns_server, resolver):
    """docs/rules.md §3: a nonexistent domain in the From header."""
    dns_server.load(ZONE)
    result = header(resolver, message("Boss <boss@not.existing.example.com>"))
    assert result.outcome is Outcome.FAIL
    assert found(result) == ["names.from_nonexistent"]


def test_from_no_address_among_several(dns_server, resolver):
    """Each From mailbox is judged; a null-MX domain is reported."""
    dns_server.load(ZONE)
    result = header(resolver, message("a@example.com, b@nullmx.example.org"))
    assert found(result) == ["names.from_no_address"]


def test_from_timeout(dns_server, resolver):
    """A From domain whose lookups time out is temperror."""
    dns_server.load(ZONE)
    assert header(resolver, message("a@slow.example.net")).outcome is Outcome.TEMPERROR


def test_no_address_in_any_field_skipped(dns_server, resolver):
    """No mailbox with a domain in any field: the headers check reports that; nothing
    is asked here. A From without "@" is the headers check's too: only To is judged."""
    dns_server.load(ZONE)
    assert header(resolver, b"Subject: x\r\n\r\nbody").outcome is Outcome.SKIPPED
    assert header(resolver, b"From: nobody\r\nTo: undisclosed-recipients:;\r\n\r\nx"
                  ).outcome is Outcome.SKIPPED
    assert dns_server.queries == []
    result = header(resolver, message("nobody"))
    assert result.outcome is Outcome.PASS
    assert {name for name, _ in dns_server.queries} == {"example.com"}


def test_no_message_skipped(dns_server, resolver):
    """Before end of message the header check has nothing to read."""
    dns_server.load(ZONE)
    [result] = HeaderNamesCheck(names.Config()).run(make_ctx(resolver, mail_from="a@example.com"))
    assert result.outcome is Outcome.SKIPPED


# ---- every sender and recipient field, a finding per field -------------------

FIELDS_ZONE = ZONE + """
$SERVFAIL broken.example.net.
"""


def fields_message(**fields):
    """A message with the given address fields (keyword reply_to -> Reply-To)."""
    lines = [f"{name.replace('_', '-').title()}: {value}" for name, value in fields.items()]
    return ("\r\n".join([*lines, "Subject: x"]) + "\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize(("field", "stem"), [
    ("from_", "from"), ("sender", "sender_field"), ("reply_to", "reply_to"), ("to", "to"),
    ("cc", "cc"),
])
def test_each_field_has_its_own_nonexistent_finding(dns_server, resolver, field, stem):
    """An NXDOMAIN domain in any sender or recipient field is reported under that field."""
    dns_server.load(FIELDS_ZONE)
    values = {"from_": "a@example.com", "to": "s@example.com",
              field: "x@not.existing.example.com"}
    raw = fields_message(**{k.rstrip("_"): v for k, v in values.items()})
    result = header(resolver, raw)
    assert result.outcome is Outcome.FAIL
    assert found(result) == [f"names.{stem}_nonexistent"]
    assert "not.existing.example.com" in result.findings[0].detail
    assert "NXDOMAIN" in result.findings[0].detail


@pytest.mark.parametrize(("field", "stem"), [
    ("sender", "sender_field"), ("reply_to", "reply_to"), ("to", "to"), ("cc", "cc"),
])
def test_each_field_has_its_own_no_address_finding(dns_server, resolver, field, stem):
    """A domain that exists without A/AAAA/MX, or with a null MX, per field."""
    dns_server.load(FIELDS_ZONE)
    raw = fields_message(**{"from": "a@example.com", field: "x@nullmx.example.org, y@example.com"})
    assert found(header(resolver, raw)) == [f"names.{stem}_no_address"]


@pytest.mark.parametrize("failing", ["a@slow.example.net", "a@broken.example.net"])
@pytest.mark.parametrize("field", ["from", "reply_to", "cc"])
def test_a_temporary_failure_is_never_nonexistent(dns_server, resolver, failing, field):
    """Timeout and SERVFAIL leave a domain undecided: temperror, no finding, whatever field."""
    dns_server.load(FIELDS_ZONE)
    fields = {"from": "b@example.com", field: failing}
    result = header(resolver, fields_message(**fields))
    assert result.outcome is Outcome.TEMPERROR
    assert result.findings == ()
    assert failing.split("@")[1] in result.reason


def test_servfail_next_to_nxdomain_keeps_them_apart(dns_server, resolver):
    """The NXDOMAIN Cc is reported; the SERVFAIL Reply-To is not called nonexistent."""
    dns_server.load(FIELDS_ZONE)
    raw = fields_message(**{"from": "a@example.com", "reply_to": "r@broken.example.net",
                            "cc": "c@not.existing.example.com"})
    result = header(resolver, raw)
    assert found(result) == ["names.cc_nonexistent"]


def test_one_domain_in_several_fields_is_looked_up_once_and_reported_per_field(
        dns_server, resolver):
    dns_server.load(FIELDS_ZONE)
    raw = fields_message(**{"from": "a@example.com", "to": "x@not.existing.example.com",
                            "cc": "y@NOT.existing.example.com., z@example.com"})
    assert found(header(resolver, raw)) == ["names.to_nonexistent", "names.cc_nonexistent"]
    asked = dns_server.queries
    assert sorted(asked) == sorted(set(asked))
    assert sorted(n for n, _ in asked) == ["example.com"] * 3 + ["not.existing.example.com"] * 3


@pytest.mark.parametrize(("value", "shown"), [
    ("a@foo..example.com", "foo..example.com"),
    ("Boss <boss@exa mple.com>", "exa mple.com"),
    ("a@localhost", "localhost"),
])
def test_an_invalid_from_domain_is_nonexistent_without_a_lookup(dns_server, resolver, value,
                                                                 shown):
    """RFC 5321 §2.3.5: a domain the parser drops, or a single label, cannot exist."""
    dns_server.load(FIELDS_ZONE)
    result = header(resolver, message(value))
    assert found(result) == ["names.from_nonexistent"]
    assert shown in result.findings[0].detail
    assert "not a valid domain name" in result.findings[0].detail
    assert {name for name, _ in dns_server.queries} == {"example.com"}  # To only


def test_group_syntax_and_literals_are_not_looked_up(dns_server, resolver):
    """"undisclosed-recipients:;" has no domain; an address literal is not a name."""
    dns_server.load(FIELDS_ZONE)
    raw = fields_message(**{"from": "a@example.com", "to": "undisclosed-recipients:;",
                            "cc": "b@[192.0.2.1]"})
    assert header(resolver, raw).outcome is Outcome.PASS
    assert {n for n, _ in dns_server.queries} == {"example.com"}


def test_the_cap_keeps_the_sender_side_and_bounds_the_lookups(dns_server, resolver):
    """Past MAX_HEADER_DOMAINS distinct domains nothing more is asked; From, Sender and
    Reply-To are taken before To and Cc, so a long Cc cannot hide them."""
    cap = names.MAX_HEADER_DOMAINS
    dns_server.load(FIELDS_ZONE + "".join(
        f"d{i}.example.org. 300 IN A 192.0.2.9\n" for i in range(cap + 10)))
    cc = ", ".join(f"u@d{i}.example.org" for i in range(cap + 10))
    raw = fields_message(**{"cc": cc, "from": "a@example.com",
                            "reply_to": "r@not.existing.example.com"})
    result = header(resolver, raw)
    assert found(result) == ["names.reply_to_nonexistent"]
    assert "12 more addresses not looked up" in result.reason
    asked = {n for n, _ in dns_server.queries}
    assert len(asked) == cap
    assert {"example.com", "not.existing.example.com"} <= asked


def test_hostile_fields_stay_linear(dns_server, resolver):
    """Thousands of addresses (valid, invalid, repeated) cost one pass and the cap."""
    import time

    dns_server.load(FIELDS_ZONE)
    to = ", ".join(["a@example.com", "b@x..example.com", "c@not.existing.example.com"] * 4000)
    started = time.perf_counter()
    result = header(resolver, fields_message(**{"from": "a@example.com", "to": to}))
    assert time.perf_counter() - started < 2.0
    assert found(result) == ["names.to_nonexistent"]
    assert "x..example.com" in result.findings[0].detail


def test_recipient_domain_cap_counts_the_accepted_recipients(dns_server, resolver):
    """The RCPT check carries the domains looked up so far; past the cap a new one is skipped."""
    dns_server.load(ZONE)
    cap = names.MAX_RECIPIENT_DOMAINS
    earlier = names.RecipientDomains(tuple(f"d{i}.example.org" for i in range(cap)))
    prior = CheckResult("names", Outcome.PASS, "", evidence=earlier)
    ctx = make_ctx(resolver, mail_from="a@example.com", rcpt_to=("x@example.com",),
                   results=(prior,))
    [result] = RecipientNamesCheck(names.Config(check_recipients=True)).run(ctx)
    assert result.outcome is Outcome.SKIPPED
    assert dns_server.queries == []
    # A domain already counted is still judged (a cached lookup).
    ctx = make_ctx(resolver, mail_from="a@example.com", rcpt_to=("x@d3.example.org",),
                   results=(prior,))
    [result] = RecipientNamesCheck(names.Config(check_recipients=True)).run(ctx)
    assert result.outcome is Outcome.FAIL  # d3.example.org is not in ZONE: NXDOMAIN
    assert names.recipient_domains_so_far([result]) == earlier.domains
