"""Forged Authentication-Results through a real Postfix: every spelling of ours
removed, foreign ones kept, and a trusted gateway's field believed only on
mail from the gateway itself.

Its own trustmilter (the policy trusts two gateways), in front of the
module's private Postfix; SMTP from 127.0.0.1 with XCLIENT presenting the
client address and the name Postfix verified (client_name).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import authres
import authres.arc
import authres.dkim_b
import authres.dmarc
import pytest

from keys import message
from smtp_helpers import Outcome, send, smtp_session
from test_postfix_trustmilter import AUTHSERV_ID, GOOD_CLIENT, SPOOFER, ZONE, good_message
from trustmilter.authresults import authserv_id_of, parse_header_value
from trustmilter.testing.daemon import DaemonProcess, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance

# Every spelling of our authserv-id the attack report tried through Postfix,
# and the ones it found kept: each must be removed.
OURS = [
    f"{AUTHSERV_ID}; spf=pass smtp.mailfrom=evil@example.net",
    "MX.Example.ORG; dkim=pass header.d=bank.example",
    f"{AUTHSERV_ID}\r\n\t; dkim=pass header.d=bank.example",  # folded
    f"(c) {AUTHSERV_ID}; dkim=pass",
    f"{AUTHSERV_ID} 1; dkim=pass",
    f"{AUTHSERV_ID}",  # no semicolon
    f"{AUTHSERV_ID};",
    f'"{AUTHSERV_ID}"; dkim=pass header.d=bank.example',  # quoted-string
    f"((b)) {AUTHSERV_ID}; dkim=pass; @",  # nested comment, unparsable rest
    f"(x\\)) {AUTHSERV_ID}; dkim=pass; @",  # escaped parenthesis, unparsable rest
    f"(a (b) c) {AUTHSERV_ID}; dkim=pass; @@@",
    "(" * 500 + ")" * 500 + f" {AUTHSERV_ID}; dkim=pass",  # nested 500 deep
    "(" * 600 + ")" * 600 + f" {AUTHSERV_ID}; dkim=pass; @",
    f"{AUTHSERV_ID}/1; dkim=pass",  # a version
    f"{AUTHSERV_ID}.; dkim=pass",  # the root dot
]
FOREIGN = [
    "gw.example.net; spf=fail smtp.mailfrom=alice@example.com",
    "other.example; dkim=pass header.d=example.com",
    f"{AUTHSERV_ID}.evil.example; dkim=pass",
    f"({AUTHSERV_ID}) other.example; dkim=pass",
    f'"other.example {AUTHSERV_ID}"; dkim=pass',
]
GATEWAY_NETWORK_CLIENT = {"client_ip": "198.51.100.5", "helo": "gw.example.net"}
FORGED_GATEWAY = "gw.example.net; dmarc=pass header.from=example.com"


@pytest.fixture(scope="module")
def gateway_daemon(
    postfix: PostfixInstance, _dns_test_server: DnsTestServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    workdir: Path = tmp_path_factory.mktemp("trustmilter")
    policy = write_policy(workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
                          dns={"cache_size": 0})
    with policy.open("a") as file:
        file.write("trusted_authserv_ids:\n"
                   "  - {id: gw.example.net, networks: [198.51.100.0/28]}\n"
                   "  - gw2.example.net\n")
    daemon = DaemonProcess.start(policy, workdir / "trustmilter.log")
    postfix.set_milters(daemon.postfix_spec, default_action="tempfail")
    yield daemon
    assert daemon.stop() == 0, daemon.log_tail()


@pytest.fixture
def mta(
    postfix: PostfixInstance, gateway_daemon: DaemonProcess, dns_server: DnsTestServer
) -> PostfixInstance:
    postfix.reset()
    dns_server.load(ZONE)
    return postfix


def _send(mta: PostfixInstance, raw: bytes, client_ip: str, helo: str,
          client_name: str = "[UNAVAILABLE]", mail_from: str = "alice@example.com") -> Outcome:
    with smtp_session(mta.smtp_port, client_ip, helo, client_name) as smtp:
        return send(smtp, mail_from, ["support@example.org"], raw)


def test_every_spelling_of_ours_removed_and_foreign_kept(
    mta: PostfixInstance, gateway_daemon: DaemonProcess
) -> None:
    """RFC 8601 §5, in one message: ours among foreign ones, each one of ours removed,
    and the verdict line says so: how many, and the authserv-ids they claimed."""
    mixed = [value for pair in zip(OURS, FOREIGN * 3, strict=False) for value in pair]
    mixed += OURS[len(mixed) // 2:]
    raw = good_message(extra_headers=tuple(f"Authentication-Results: {v}" for v in mixed))
    out = _send(mta, raw, **GOOD_CLIENT)
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    values = delivered.header("Authentication-Results")
    claimed = [authserv_id_of(v) for v in values]
    # Ours (the one trustmilter wrote) on top, then the foreign ones, in order.
    assert claimed[0] == AUTHSERV_ID
    assert ("dkim", "pass") in {(r.method, r.result) for r in parse_header_value(values[0]).results}
    kept = [" ".join(v.split()) for v in values[1:]]
    expected = [" ".join(v.split()) for v in mixed if v in FOREIGN]
    assert kept == expected, values
    assert "bank.example" not in delivered.raw.decode(errors="replace")
    assert "evil@example.net" not in delivered.raw.decode(errors="replace")
    fields = gateway_daemon.wait_verdict(mail_from="alice@example.com").fields
    assert fields["removed"] == f"Authentication-Results:{len(OURS)}"
    assert set(fields["removed_authserv_id"].split(",")) == {
        AUTHSERV_ID, "MX.Example.ORG", f"{AUTHSERV_ID}."}
    # The next message forged nothing: its line has neither key.
    assert _send(mta, good_message(), **GOOD_CLIENT).data.code == 250  # type: ignore[union-attr]
    mta.wait_delivered(2)
    fields = gateway_daemon.wait_verdict(mail_from="alice@example.com").fields
    assert "removed" not in fields and "removed_authserv_id" not in fields


@pytest.mark.parametrize("forged", [OURS[7], OURS[9], OURS[12], OURS[13], OURS[14]],
                         ids=["quoted", "escaped-comment", "deep-600", "version", "root-dot"])
def test_each_spelling_the_attack_found_kept_is_removed_alone(
    mta: PostfixInstance, forged: str
) -> None:
    raw = good_message(extra_headers=(f"Authentication-Results: {forged}",))
    out = _send(mta, raw, **GOOD_CLIENT)
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    values = delivered.header("Authentication-Results")
    assert len(values) == 1 and values[0].startswith(f"{AUTHSERV_ID};"), values


def test_a_trusted_gateways_header_on_mail_from_elsewhere_changes_nothing(
    mta: PostfixInstance,
) -> None:
    """A p=reject From domain, SPF fail, no DKIM: refused. The gateway's dmarc=pass
    written into it exempts it only when the gateway sent it (RFC 8601 §7.1)."""
    forged = message(extra_headers=(f"Authentication-Results: {FORGED_GATEWAY}",))
    plain = message()
    refused = _send(mta, plain, **SPOOFER)
    assert refused.data is not None and refused.data.code == 550, refused
    from_spoofer = _send(mta, forged, **SPOOFER)
    assert (from_spoofer.data and from_spoofer.data.code, str(from_spoofer.data)) == (
        550, str(refused.data)), from_spoofer
    # The plain id gw2.example.net from a client whose verified name is another.
    forged2 = message(extra_headers=("Authentication-Results: gw2.example.net; dmarc=pass "
                                     "header.from=example.com",))
    named_otherwise = _send(mta, forged2, SPOOFER["client_ip"], SPOOFER["helo"],
                            client_name="spoofer.example.net")
    assert named_otherwise.data is not None and named_otherwise.data.code == 550, named_otherwise
    # The same messages from the gateways themselves are believed: not refused.
    from_gateway = _send(mta, forged, **GATEWAY_NETWORK_CLIENT)
    assert from_gateway.data is not None and from_gateway.data.code == 250, from_gateway
    from_gw2 = _send(mta, forged2, "203.0.113.77", "gw2.example.net",
                     client_name="gw2.example.net")
    assert from_gw2.data is not None and from_gw2.data.code == 250, from_gw2


def test_a_domain_literal_sender_gives_a_field_authres_reads(mta: PostfixInstance) -> None:
    """smtp.mailfrom=foo@[192.0.2.5] was written bare: no RFC 8601 parser read the field."""
    out = _send(mta, good_message(), **GOOD_CLIENT, mail_from="foo@[192.0.2.5]")
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    value = delivered.header("Authentication-Results")[0]
    header = authres.FeatureContext(authres.dkim_b, authres.dmarc, authres.arc).parse_value(value)
    mailfrom = [p.value for r in header.results for p in r.properties
                if (p.type, p.name) == ("smtp", "mailfrom")]
    assert mailfrom == ["foo@[192.0.2.5]"], value


def test_our_field_is_delivered_folded_and_still_parses(mta: PostfixInstance) -> None:
    """RFC 5322 §2.1.1/§2.2.3: no line of our field over 78 characters; Postfix writes
    each libmilter line (LF + tab) as a continuation line, and authres reads it unfolded."""
    out = _send(mta, good_message(), **GOOD_CLIENT)
    assert out.data is not None and out.data.code == 250, out
    (delivered,) = mta.wait_delivered(1)
    head = delivered.raw.split(b"\n\n", 1)[0].decode("ascii")
    lines = head.split("\n")
    start = next(n for n, line in enumerate(lines) if line.startswith("Authentication-Results:"))
    end = next(n for n in range(start + 1, len(lines)) if lines[n][:1] not in (" ", "\t"))
    field = lines[start:end]
    assert len(field) > 3, field  # iprev, spf (helo, mailfrom), dkim, dmarc, arc each a line
    assert all(len(line.rstrip("\r")) <= 78 for line in field), field
    assert all(line.startswith("\t") for line in field[1:]), field
    assert not any("\r" in line.rstrip("\r") for line in field), field  # no stray CR
    # Unfolded as RFC 5322 §2.2.3 says: the line breaks before white space removed.
    value = "".join(line.rstrip("\r") for line in field).split(":", 1)[1]
    header = authres.FeatureContext(authres.dkim_b, authres.dmarc, authres.arc).parse_value(value)
    assert header.authserv_id == AUTHSERV_ID
    assert [r.method for r in header.results] == ["iprev", "spf", "spf", "dkim", "dmarc", "arc"]
    assert ("dkim", "pass") in {(r.method, r.result) for r in header.results}
