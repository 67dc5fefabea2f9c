"""`trustmilter doctor` (issue 5 item 3) against the DNS test server.

A correct setup passes every docs/rules.md §1-3 rule; broken setups make each
rule fail (or warn, where the rule is only a warning) with a one-sentence
fix; the CLI exits 0 / 1 accordingly and prints JSON or English.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from helpers import domain_tools
from keys import ed25519_key, key_zone, rsa_key
from trustmilter.checks import dkim as dkim_check
from trustmilter.cli import main
from trustmilter.config.checks import ChecksConfig
from trustmilter.config.settings import Settings
from trustmilter.doctor import Diagnosis, diagnose

GOOD_ZONE = """
example.com.                 300 IN MX  10 mail.example.com.
mail.example.com.            300 IN A   192.0.2.4
4.2.0.192.in-addr.arpa.      300 IN PTR mail.example.com.
example.com.                 300 IN TXT "v=spf1 mx -all"
_dmarc.example.com.          300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
"""

ELEVEN = " ".join(f"a:h{n}.example.org" for n in range(1, 12))
HOSTS = "\n".join(f"h{n}.example.org. 300 IN A 203.0.113.{n}" for n in range(1, 12))
BAD_ZONE = f"""
; docs/rules.md §1: no PTR for 198.51.100.7; a generic, foreign, unconfirmed one for .8
8.100.51.198.in-addr.arpa.   300 IN PTR 198-51-100-8.dsl.example.net.
; example.org: no MX, no SPF, no DMARC; DKIM keys revoked, of a bad type, garbled
example.org.                 300 IN TXT "site-verification=abc"
revoked._domainkey.example.org. 300 IN TXT "v=DKIM1; k=rsa; p="
dsa._domainkey.example.org.  300 IN TXT "v=DKIM1; k=dsa; p=AAAA"
junk._domainkey.example.org. 300 IN TXT "v=DKIM1; k=rsa; p=bm90IGEga2V5"
; broken SPF, DMARC record without p=
broken.example.org.          300 IN TXT "v=spf1 ip4:192.0.2.300 -all"
_dmarc.broken.example.org.   300 IN TXT "v=DMARC1; pct=50"
; eleven lookups (RFC 7208 §4.6.4), DMARC p=none
limit.example.org.           300 IN TXT "v=spf1 {ELEVEN} -all"
{HOSTS}
_dmarc.limit.example.org.    300 IN TXT "v=DMARC1; p=none"
; SPF that leaves the IP out, DMARC sampled at 50 %
auth.example.org.            300 IN TXT "v=spf1 ip4:192.0.2.4 -all"
_dmarc.auth.example.org.     300 IN TXT "v=DMARC1; p=reject; pct=50"
"""
BAD_IPS = [ipaddress.ip_address("198.51.100.7"), ipaddress.ip_address("198.51.100.8")]
# Rules that are only warnings (docs/rules.md §2 "should match an MX"; p=none, pct<100).
WARN_RULES = {"helo.is_mx", "dmarc.policy"}
ALL_RULES = {
    "ptr.exists", "ptr.in_domain", "ptr.not_generic", "ptr.forward_confirmed",
    "helo.resolves", "helo.in_domain", "helo.is_mx", "mx.exists",
    "spf.exists", "spf.valid", "spf.lookups", "spf.authorises",
    "dkim.key", "dmarc.exists", "dmarc.valid", "dmarc.policy",
}


def good_zone() -> str:
    return (GOOD_ZONE + key_zone(rsa_key(1024), "rsa", "example.com")
            + key_zone(ed25519_key(), "ed", "example.com"))


def bad_zone() -> str:
    return BAD_ZONE + key_zone(rsa_key(1024), "small", "example.org")


def by_rule(diagnoses: list[Diagnosis]) -> dict[str, list[Diagnosis]]:
    grouped: dict[str, list[Diagnosis]] = {}
    for d in diagnoses:
        grouped.setdefault(d.rule, []).append(d)
    return grouped


def test_correct_setup_passes_every_rule(dns_server, resolver):
    dns_server.load(good_zone())
    diagnoses = diagnose("example.com", [ipaddress.ip_address("192.0.2.4")], "mail.example.com",
                         ["rsa", "ed"], resolver, domains=domain_tools())
    assert {d.rule for d in diagnoses} == ALL_RULES
    assert [d for d in diagnoses if d.status != "pass"] == []
    keys = [d.found for d in diagnoses if d.rule == "dkim.key"]
    assert keys == ["rsa._domainkey.example.com: rsa key of 1024 bits",
                    "ed._domainkey.example.com: ed25519 key of 256 bits"]


def bad_runs(resolver) -> list[Diagnosis]:
    """Four broken setups that together break every rule."""
    strict = Settings(checks=ChecksConfig(dkim=dkim_check.Config(min_key_bits=2048)))
    tools = domain_tools()
    runs = [
        diagnose("example.org", BAD_IPS, "nothing.example.net",
                 ["missing", "revoked", "dsa", "junk", "small"], resolver, strict, tools),
        diagnose("broken.example.org", [], None, [], resolver, domains=tools),
        diagnose("limit.example.org", [], None, [], resolver, domains=tools),
        diagnose("auth.example.org", BAD_IPS[1:], None, [], resolver, domains=tools),
    ]
    return [d for run in runs for d in run]


def test_broken_setups_break_every_rule_with_a_fix(dns_server, resolver):
    dns_server.load(bad_zone())
    grouped = by_rule(bad_runs(resolver))
    for rule in ALL_RULES:
        wanted = "warn" if rule in WARN_RULES else "fail"
        broken = [d for d in grouped.get(rule, []) if d.status == wanted]
        assert broken, f"{rule} never {wanted}ed: {grouped.get(rule)}"
        assert all(d.fix for d in broken), broken
    # Every DKIM selector of example.org is broken, each for its own reason.
    assert [d.status for d in grouped["dkim.key"]] == ["fail"] * 5
    reasons = " | ".join(d.found for d in grouped["dkim.key"])
    for why in ("no key", "revoked", "k=dsa", "key syntax error", "1024 bits"):
        assert why in reasons
    # The fixes name what to publish: the exact SPF record and PTR name.
    spf_fixes = {d.fix for d in grouped["spf.exists"] + grouped["spf.authorises"]}
    assert "Publish this TXT record at example.org: v=spf1 ip4:198.51.100.7 ip4:198.51.100.8 -all" \
        in spf_fixes
    assert ("Add ip4:198.51.100.8 to the SPF record at auth.example.org: "
            "v=spf1 ip4:192.0.2.4 ip4:198.51.100.8 -all") in spf_fixes
    ptr = grouped["ptr.exists"][0]
    assert (ptr.subject, ptr.status) == ("198.51.100.7", "fail")
    assert "set its PTR record to mail.example.org" in ptr.fix
    assert "too many DNS lookups: more than 10" in grouped["spf.lookups"][0].found
    policies = [d.found for d in grouped["dmarc.policy"]]
    assert any("p=none" in p for p in policies) and any("pct=50" in p for p in policies)


def test_spf_fix_says_mx_when_the_ips_are_the_mx_hosts(dns_server, resolver):
    dns_server.load("example.com. 300 IN MX 10 mail.example.com.\n"
                    "mail.example.com. 300 IN A 192.0.2.4\n")
    diagnoses = diagnose("example.com", [ipaddress.ip_address("192.0.2.4")], None, [], resolver,
                         domains=domain_tools())
    [spf] = [d for d in diagnoses if d.rule == "spf.exists"]
    assert spf.status == "fail"
    assert spf.fix == "Publish this TXT record at example.com: v=spf1 mx -all"


@pytest.fixture
def policy_file(tmp_path: Path, dns_server) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"dns:\n  nameservers: ['{dns_server.nameserver}']\n"
                    "  timeout: 0.5\n  lifetime: 1.0\n")
    return path


def test_cli_exit_codes_and_output(dns_server, policy_file, capsys):
    dns_server.load(good_zone() + bad_zone())
    good = ["doctor", "--domain", "example.com", "--ip", "192.0.2.4", "--helo",
            "mail.example.com", "--dkim-selector", "rsa", "--policy", str(policy_file)]
    assert main([*good, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["domain"] == "example.com"
    assert {r["status"] for r in report["rules"]} == {"pass"}
    assert main(good) == 0
    assert "0 failed, 0 warnings" in capsys.readouterr().out

    bad = ["doctor", "--domain", "example.org", "--ip", "198.51.100.7", "--policy",
           str(policy_file)]
    assert main(bad) == 1
    text = capsys.readouterr().out
    assert "FAIL ptr.exists [198.51.100.7]: no PTR record" in text
    assert "fix: Publish this TXT record at example.org: v=spf1 ip4:198.51.100.7 -all" in text
    assert main([*bad, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_cli_bad_policy_and_usage(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dns:\n  timeout: fast\n")
    assert main(["doctor", "--domain", "example.com", "--policy", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("trustmilter: ")
    with pytest.raises(SystemExit) as usage:
        main(["doctor", "--domain", "example.com", "--ip", "not-an-ip"])
    assert usage.value.code == 2
