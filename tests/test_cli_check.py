"""`trustmilter check`: the whole pipeline from the command line.

Each test serves its own zone from the real DNS test server and runs the
CLI in-process (one test runs the installed console script). The
scenarios are the seeds' rules end to end and the issue's defaults: DMARC
p=reject -> 550 5.7.1, p=quarantine -> quarantine, SPF fail without an
aligned DKIM pass -> quarantine, nonexistent sender domain -> 550 5.1.8,
DNS temporary error leaving DMARC undecided -> 451 4.4.3, weak signals ->
accepted but marked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from trustmilter.authresults import parse_header_value
from trustmilter.cli import main

MX = "mx.example.org"
GOOD_ZONE = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN MX  10 mail.example.com.
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.com"
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
"""


@pytest.fixture
def policy_file(tmp_path: Path, dns_server) -> Path:
    """A policy that asks only the test DNS server, with a fixed authserv-id."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"authserv_id: {MX}\n"
        "dns:\n"
        f"  nameservers: ['{dns_server.nameserver}']\n"
        "  timeout: 0.5\n"
        "  lifetime: 1.0\n"
    )
    return path


def run_check(capsys, policy_file: Path, eml: Path, *args: str) -> dict:
    code = main(["check", str(eml), "--policy", str(policy_file), "--json", *args])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1, "exactly one JSON object"
    return json.loads(lines[0])


def write(tmp_path: Path, raw: bytes, name: str = "m.eml") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def signed(tmp_path: Path, from_: str = "Alice <alice@example.com>", **kw) -> Path:
    return write(tmp_path, sign(message(from_=from_, **kw), rsa_key(1024), "example.com"))


GOOD_ARGS = ("--ip", "192.0.2.10", "--helo", "mail.example.com",
             "--mail-from", "alice@example.com", "--rcpt", "support@example.org")


def test_authenticated_mail_is_accepted_with_every_result(tmp_path, capsys, dns_server, policy_file):
    """docs/rules.md §1-3: PTR, HELO, SPF, DKIM, DMARC all in order -> accept."""
    dns_server.load(GOOD_ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    out = run_check(capsys, policy_file, signed(tmp_path), *GOOD_ARGS)
    assert set(out) == {"action", "smtp_reply", "stage", "client_kind", "direction", "mail_from",
                        "mail_from_source", "rcpt", "rcpt_source", "steps",
                        "authentication_results", "headers_added", "headers_removed",
                        "reasons", "score", "verdict_lines"}
    assert out["stage"] == "eom" and out["client_kind"] == "external"
    assert out["direction"] == "inbound"
    assert out["steps"] == [
        {"command": "MAIL FROM:<alice@example.com>", "answer": "continue"},
        {"command": "RCPT TO:<support@example.org>", "answer": "continue"},
        {"command": "end of message", "answer": "accept"},
    ]
    assert out["action"] == "accept" and out["smtp_reply"] is None
    parsed = parse_header_value(out["authentication_results"])
    assert parsed.authserv_id == MX
    found = {(r.method, r.result) for r in parsed.results}
    assert {("iprev", "pass"), ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")} <= found
    # Added folded (RFC 5322 §2.2.3), as the milter adds it; unfolded it is the same field.
    name, added = out["headers_added"][0]
    assert name == "Authentication-Results" and "\n\t" in added
    assert " ".join(added.split()) == out["authentication_results"]


def test_spoofed_from_under_p_reject_is_rejected(tmp_path, capsys, dns_server, policy_file):
    """docs/rules.md §3 (forged sender) + RFC 7489 §6.3 p=reject -> 550 5.7.1."""
    dns_server.load(GOOD_ZONE + """
spoofer.example.net. 300 IN TXT "v=spf1 ip4:203.0.113.5 -all"
spoofer.example.net. 300 IN A 203.0.113.5
""")
    eml = write(tmp_path, message(from_="Alice <alice@example.com>"))
    out = run_check(capsys, policy_file, eml, "--ip", "203.0.113.5", "--helo", "spoofer.example.net",
                    "--mail-from", "bounce@spoofer.example.net")
    assert out["action"] == "reject"
    assert out["smtp_reply"].startswith("550 5.7.1 ")
    assert "dmarc.fail" in out["reasons"]


def test_p_quarantine_failure_is_quarantined(tmp_path, capsys, dns_server, policy_file):
    zone = GOOD_ZONE.replace("p=reject", "p=quarantine")
    dns_server.load(zone)
    eml = write(tmp_path, message())
    out = run_check(capsys, policy_file, eml, "--ip", "203.0.113.5", "--mail-from", "alice@example.com")
    assert out["action"] == "quarantine"
    assert out["smtp_reply"] is None


def test_spf_fail_without_aligned_dkim_is_quarantined(tmp_path, capsys, dns_server, policy_file):
    """docs/rules.md §3 "failed SPF check" -> not trusted; no DMARC record to decide."""
    zone = GOOD_ZONE.replace('_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.com"', "")
    dns_server.load(zone)
    out = run_check(capsys, policy_file, write(tmp_path, message()), "--ip", "203.0.113.5",
                    "--helo", "mail.example.com", "--mail-from", "alice@example.com")
    assert "spf.mailfrom.fail" in out["reasons"]
    assert out["action"] == "quarantine"


def test_nonexistent_sender_domain_is_rejected_558(tmp_path, capsys, dns_server, policy_file):
    """docs/rules.md §3: nonexistent domain names in the sender -> 550 5.1.8."""
    dns_server.load(GOOD_ZONE + "$NXDOMAIN nowhere.example.net.\n")
    out = run_check(capsys, policy_file, write(tmp_path, message(from_="x@nowhere.example.net")),
                    *GOOD_ARGS[:4], "--mail-from", "x@nowhere.example.net")
    assert out["action"] == "reject"
    assert out["smtp_reply"].startswith("550 5.1.8 ")


def test_dns_timeout_on_dmarc_is_a_tempfail(tmp_path, capsys, dns_server, policy_file):
    """RFC 7489 §6.6.2: a temporary error leaves DMARC undecided -> 451 4.4.3, never 5xx."""
    zone = GOOD_ZONE.replace('_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.com"',
                             "$TIMEOUT _dmarc.example.com. TXT")
    dns_server.load(zone)
    out = run_check(capsys, policy_file, write(tmp_path, message()), "--ip", "203.0.113.5",
                    "--mail-from", "alice@example.com")
    assert out["action"] == "tempfail"
    assert out["smtp_reply"].startswith("451 4.4.3 ")


def test_weak_signals_lower_trust_but_accept(tmp_path, capsys, dns_server, policy_file):
    """docs/rules.md §1: a server without PTR gets little trust but is not rejected for that alone."""
    zone = GOOD_ZONE.replace("10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.", "")
    dns_server.load(zone + key_zone(rsa_key(1024), "sel", "example.com"))
    out = run_check(capsys, policy_file, signed(tmp_path), *GOOD_ARGS)
    assert "iprev.ptr_missing" in out["reasons"]
    assert out["action"] == "accept"
    assert out["score"] > 0
    assert len(out["headers_added"]) >= 2, "the low-trust header is added"


def test_forged_authentication_results_are_listed_for_removal(tmp_path, capsys, dns_server, policy_file):
    """RFC 8601 §5: an incoming A-R that claims our authserv-id is removed."""
    dns_server.load(GOOD_ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    forged = f"{MX}; spf=pass smtp.mailfrom=alice@example.com; dmarc=pass header.from=example.com"
    raw = f"Authentication-Results: {forged}\r\n".encode() + sign(message(), rsa_key(1024), "example.com")
    out = run_check(capsys, policy_file, write(tmp_path, raw), *GOOD_ARGS)
    assert out["headers_removed"] == [["Authentication-Results", forged]]


def test_record_then_replay_gives_the_same_verdict(tmp_path, capsys, dns_server, policy_file):
    """A production false positive becomes a regression test: record, then replay offline."""
    dns_server.load(GOOD_ZONE.replace("10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.", "")
                    + "$TIMEOUT _dmarc.example.net. TXT\n")
    eml = write(tmp_path, message())
    record = tmp_path / "answers.zone"
    first = run_check(capsys, policy_file, eml, *GOOD_ARGS, "--record-dns", str(record))
    text = record.read_text()
    assert "$NXDOMAIN" in text or "$NODATA" in text, "negative answers are recorded"
    assert "IN TXT" in text
    dns_server.load("")  # the network now knows nothing: the replay must not use it
    asked = len(dns_server.queries)
    second = run_check(capsys, policy_file, eml, *GOOD_ARGS, "--dns-fixture", str(record))
    for out in (first, second):  # the milliseconds taken may differ
        for line in out["verdict_lines"]:
            line.pop("ms")
    assert second == first
    assert len(dns_server.queries) == asked


def test_readable_report_names_each_check_and_the_verdict(tmp_path, capsys, dns_server, policy_file):
    dns_server.load(GOOD_ZONE)
    eml = write(tmp_path, message())
    assert main(["check", str(eml), "--policy", str(policy_file), *GOOD_ARGS]) == 0
    out = capsys.readouterr().out
    for word in ("iprev", "spf.mailfrom", "dkim", "dmarc", "score", "verdict"):
        assert word in out


def test_message_from_standard_input(tmp_path, dns_server, policy_file):
    dns_server.load(GOOD_ZONE)
    done = subprocess.run(
        [sys.executable, "-m", "trustmilter", "check", "-", "--policy", str(policy_file), "--json",
         *GOOD_ARGS],
        input=message(), capture_output=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["action"] in {"accept", "quarantine", "reject", "tempfail"}


@pytest.mark.parametrize(
    "argv, code, text",
    [
        (["check", "/nonexistent/m.eml", "--ip", "192.0.2.1"], 1, "cannot read message"),
        (["check", "-", "--ip", "not-an-ip"], 2, "--ip"),
        (["check", "-"], 2, "--ip"),
    ],
)
def test_usage_and_input_errors_are_one_line(argv, code, text, capsys):
    with pytest.raises(SystemExit) if code == 2 else _nothing() as _:
        assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert text in err
    if code == 1:
        assert len(err.splitlines()) == 1


def test_bad_policy_is_one_line_naming_file_line_and_key(tmp_path, capsys):
    bad = tmp_path / "policy.yaml"
    bad.write_text("dns:\n  timeout: fast\n")
    assert main(["check", "-", "--ip", "192.0.2.1", "--policy", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{bad}:2" in err and "dns.timeout" in err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


BAD_INPUTS = {
    "no_from": b"To: support@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
    "two_from": b"From: a@example.com\r\nFrom: b@example.com\r\nSubject: x\r\n\r\nbody\r\n",
    "nul_bytes": b"From: a@example.com\r\nSubject: a\x00b\r\n\r\nbo\x00dy\r\n",
    "eight_bit_garbage": b"From: \xff\xfe\xfd <a@exam\xffple.com>\r\nSubject: \x80\x81\r\n\r\n\xff\xfe\r\n",
    "huge_header_line": b"From: a@example.com\r\nX-Long: " + b"a" * 1_000_000 + b"\r\n\r\nbody\r\n",
    "truncated_mime": (b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
                       b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n"
                       b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGEgaHJlZj0iaHR0cDovL2V4YW1w"),
    "empty": b"",
    "headers_only": b"From: a@example.com",
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_always_gets_a_verdict(name, tmp_path, capsys, dns_server, policy_file):
    """Never crash: every malformed message ends in a verdict, not a traceback."""
    dns_server.load(GOOD_ZONE)
    out = run_check(capsys, policy_file, write(tmp_path, BAD_INPUTS[name]), *GOOD_ARGS)
    assert out["action"] in {"accept", "quarantine", "tempfail", "reject", "discard"}
    parse_header_value(out["authentication_results"])
    assert "Traceback" not in capsys.readouterr().err


def test_independent_lookups_wait_for_the_slowest_chain_not_the_sum(tmp_path, capsys, dns_server, policy_file):
    """Every check's DNS times out (lifetime 1 s): PTR, HELO, SPF, sender MX, DMARC.

    Run one after another that is over 5 s; concurrently the longest chain
    (SPF, then DMARC) is about 2 s. Each timed-out check is temperror, alone.
    """
    import time

    dns_server.load("""
$TIMEOUT 10.2.0.192.in-addr.arpa.
$TIMEOUT mail.example.com.
$TIMEOUT example.com.
$TIMEOUT _dmarc.example.com.
""")
    started = time.monotonic()
    out = run_check(capsys, policy_file, write(tmp_path, message()), *GOOD_ARGS)
    elapsed = time.monotonic() - started
    results = {(r.method, r.result) for r in parse_header_value(out["authentication_results"]).results}
    assert {("iprev", "temperror"), ("spf", "temperror"), ("dmarc", "temperror")} <= results
    assert out["action"] == "tempfail"
    assert elapsed < 3.5, f"lookups ran one after another ({elapsed:.1f} s)"


def test_incoming_copies_of_our_verdict_headers_are_removed(tmp_path, capsys, dns_server, policy_file):
    """Only we write X-Trustmilter-Trust: a forged one could make a release teach a spammer."""
    dns_server.load(GOOD_ZONE)
    raw = b"X-Trustmilter-Trust: quarantine; score=9; reasons=auto.bulk\r\n" + message()
    out = run_check(capsys, policy_file, write(tmp_path, raw), *GOOD_ARGS)
    assert ["X-Trustmilter-Trust", "quarantine; score=9; reasons=auto.bulk"] in out["headers_removed"]


def test_without_mail_from_it_says_which_sender_it_assumed(tmp_path, capsys, dns_server, policy_file):
    """Return-Path first, else the From address; never silently the null sender."""
    dns_server.load(GOOD_ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    out = run_check(capsys, policy_file, signed(tmp_path), "--ip", "192.0.2.10",
                    "--helo", "mail.example.com")
    assert (out["mail_from"], out["mail_from_source"]) == ("alice@example.com", "From")
    assert (out["rcpt"], out["rcpt_source"]) == (["support@example.org"], "To/Cc")
    assert out["action"] == "accept"
    with_return_path = write(tmp_path, b"Return-Path: <bounces@example.com>\r\n"
                             + sign(message(), rsa_key(1024), "example.com"), "rp.eml")
    out = run_check(capsys, policy_file, with_return_path, "--ip", "192.0.2.10")
    assert (out["mail_from"], out["mail_from_source"]) == ("bounces@example.com", "Return-Path")
    assert main(["check", str(signed(tmp_path)), "--policy", str(policy_file),
                 "--ip", "192.0.2.10"]) == 0
    text = capsys.readouterr().out
    assert "assumed MAIL FROM:<alice@example.com> from From (give --mail-from to set it)" in text
    assert "verdict low-trust (at eom)" in text  # no HELO given: helo.missing


def test_an_early_refusal_is_shown_at_rcpt_as_the_mta_would_see_it(tmp_path, capsys, dns_server, policy_file):
    dns_server.load(GOOD_ZONE)
    out = run_check(capsys, policy_file, signed(tmp_path), "--ip", "192.0.2.10",
                    "--mail-from", "x@nowhere.example.net", "--rcpt", "a@example.org",
                    "--rcpt", "b@example.org")
    assert out["stage"] == "rcpt" and out["action"] == "reject"
    assert [s["answer"][:9] for s in out["steps"]] == ["continue", "550 5.1.8", "550 5.1.8"]
    assert out["headers_added"] == [] and len(out["verdict_lines"]) == 1


@pytest.mark.parametrize(("args", "kind"), [
    (("--ip", "127.0.0.1"), "trusted"),
    (("--ip", "203.0.113.5", "--auth", "alice"), "authenticated"),
])
def test_our_own_clients_are_passed_as_inline(tmp_path, capsys, dns_server, policy_file, args, kind):
    """Trusted networks and SASL users are not judged, as the milter does not judge them."""
    dns_server.load("")
    out = run_check(capsys, policy_file, write(tmp_path, message()), *args,
                    "--mail-from", "x@nowhere.example.net")
    assert out["client_kind"] == kind and out["action"] == "accept"
    assert out["verdict_lines"][0]["client_kind"] == kind
    # No outbound check reports on it under this policy: passed with no check.
    assert out["direction"] is None and "direction" not in out["verdict_lines"][0]
    assert dns_server.queries == []
