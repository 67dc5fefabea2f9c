"""The shipped policy.yaml is the built-in policy, and `policy show` output loads back."""

from __future__ import annotations

from pathlib import Path

import yaml

from trustmilter.config.dump import settings_to_yaml
from trustmilter.config.load import load_settings, parse_settings
from trustmilter.config.settings import Settings
from trustmilter.policy.model import Policy
from trustmilter.signals import KNOWN_SIGNALS

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"

CUSTOM = """\
authserv_id: mx1.example.com
trusted_authserv_ids: [gw.example.net, {id: gw2.example.net, networks: [192.0.2.0/24]}]
dns: {nameservers: ["127.0.0.1:5353", "[::1]:53"], timeout: 0.5, lifetime: 1}
checks:
  spf: {check_helo: false}
  names: {enabled: false}
  arc: {trusted_sealers: [example.org]}
  dnsbl:
    lists:
      - zone: bl.example.org
        name: example-bl
        weight: 2.5
        codes: {127.0.0.2: "spam: source", 127.0.0.3: "yes"}
        error_codes: []
scores: {dnsbl.listed: 4, dmarc.pass: -1.5, headers.8bit_unencoded: 0}
rules:
  - name: shadowed
    when: [dnsbl.*]
    any: [dkim.none, "spf.mailfrom.none"]
    unless: [upstream.dmarc.pass]
    action: reject
    reply: {code: 554, dsn: 5.7.1, text: "Listed: see https://bl.example.org/"}
    score: 2
    mode: shadow
    reason: "try it first; 'quotes' and # hashes"
  - name: score-only
    when: [helo.localhost]
    score: 3
thresholds: {low_trust: 2.5, quarantine: 7, reject: 15}
actions:
  quarantine_reason: "held: review"
headers: {trust_header: X-Trust, add_shadow_header: false}
"""


def test_shipped_policy_is_the_built_in_policy() -> None:
    assert load_settings(SHIPPED) == Settings()


def test_shipped_policy_scores_every_default_explicitly() -> None:
    # The admin reads every default point value in the shipped file itself.
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert raw["scores"] == dict(Policy().scores)
    assert len(raw["rules"]) == len(Policy().rules)


def test_default_policy_round_trips() -> None:
    text = settings_to_yaml(Settings())
    assert text.startswith("# trustmilter effective policy")
    assert parse_settings(text, "show") == Settings()


def test_custom_policy_round_trips() -> None:
    policy = parse_settings(CUSTOM, "custom.yaml")
    assert policy != Settings()
    assert policy.policy.rules[0].reply is not None and policy.policy.thresholds.reject == 15.0
    again = parse_settings(settings_to_yaml(policy), "show")
    assert again == policy
    # ...and the dump is stable.
    assert settings_to_yaml(again) == settings_to_yaml(policy)


def test_dump_fills_in_every_field() -> None:
    data = yaml.safe_load(settings_to_yaml(Settings()))
    assert set(data) == {
        "authserv_id", "trusted_authserv_ids", "trusted_forwarders", "address_separators", "dns",
        "checks", "scores",
        "rules",
        "thresholds", "actions", "headers", "milter", "logging", "metrics", "state", "review",
    }
    assert data["thresholds"]["reject"] is None
    assert data["rules"][0]["mode"] == "enforce"
    assert data["rules"][0]["any"] == []
    assert set(data["checks"]) == {
        "iprev", "helo", "dnsbl", "spf", "names", "headers", "dkim", "arc", "dmarc", "author",
        "uribl",
        "loops", "automation", "allowlist", "rate", "reputation", "bounce", "replies",
    }


def test_default_signal_names_are_all_known() -> None:
    assert set(Policy().scores) <= KNOWN_SIGNALS
