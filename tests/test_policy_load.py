"""The policy loader: every kind of mistake is one line naming file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from trustmilter.checks.blocklist import BlocklistConfig
from trustmilter.config.errors import InvalidField
from trustmilter.config.load import ConfigError, load_settings, parse_settings
from trustmilter.config.settings import Settings
from trustmilter.policy.model import Policy, Thresholds
from trustmilter.policy.rules import ReplyConfig, Rule
from trustmilter.signals import (
    KNOWN_SIGNALS,
    is_known_pattern,
    is_known_signal,
    matches,
    matching,
)
from trustmilter.verdict import Action


def parse(text: str) -> Settings:
    return parse_settings(textwrap.dedent(text), "policy.yaml")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---- defaults and the happy path --------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_document_is_the_default_policy(text: str) -> None:
    assert parse(text) == Settings()


def test_empty_sections_take_defaults() -> None:
    assert parse("dns:\nchecks:\n  dnsbl:\nthresholds: {}\n") == Settings()


def test_values_are_read_into_typed_fields() -> None:
    policy = parse(
        """\
        authserv_id: mx1.example.com
        trusted_authserv_ids: [gw.example.net]
        dns:
          nameservers: ["127.0.0.1:5353"]
          timeout: 1          # an int is a fine float
        checks:
          dnsbl:
            lists:
              - zone: bl.example.org
                weight: 2.5
                codes: {127.0.0.2: spam source}
        thresholds: {low_trust: 2, quarantine: 6, reject: 12}
        """
    )
    assert policy.authserv_id == "mx1.example.com"
    assert policy.trusted_authserv_ids == ("gw.example.net",)
    assert policy.dns.nameservers == ("127.0.0.1:5353",)
    assert policy.dns.timeout == 1.0 and isinstance(policy.dns.timeout, float)
    assert policy.checks.dnsbl.lists == (
        BlocklistConfig(zone="bl.example.org", weight=2.5, codes={"127.0.0.2": "spam source"}),
    )
    assert policy.policy.thresholds == Thresholds(low_trust=2, quarantine=6, reject=12)
    # Untouched sections keep their defaults.
    assert policy.checks.dkim == Settings().checks.dkim
    assert policy.policy.rules == Policy().rules


def test_scores_merge_over_the_defaults_and_rules_replace_them() -> None:
    policy = parse(
        """\
        scores:
          dnsbl.listed: 5
          dmarc.pass: -2
        rules:
          - name: listed
            when: [dnsbl.*]
            action: quarantine
        """
    )
    assert policy.policy.scores["dnsbl.listed"] == 5.0
    assert policy.policy.scores["dmarc.pass"] == -2.0
    assert policy.policy.scores["iprev.ptr_missing"] == Policy().scores["iprev.ptr_missing"]
    assert policy.policy.rules == (Rule(name="listed", when=("dnsbl.*",), action=Action.QUARANTINE),)


def test_rule_fields() -> None:
    [rule] = parse(
        """\
        rules:
          - name: try-me
            when: [iprev.ptr_missing]
            any: [helo.nxdomain, helo.localhost]
            unless: [dmarc.pass, upstream.dmarc.pass]
            action: reject
            reply: {code: 554, dsn: 5.7.1, text: go away}
            score: 1.5
            mode: shadow
            reason: testing
        """
    ).policy.rules
    assert rule == Rule(
        name="try-me",
        when=("iprev.ptr_missing",),
        any=("helo.nxdomain", "helo.localhost"),
        unless=("dmarc.pass", "upstream.dmarc.pass"),
        action=Action.REJECT,
        reply=ReplyConfig(554, "5.7.1", "go away"),
        score=1.5,
        mode="shadow",
        reason="testing",
    )


# ---- one test per kind of error, each with its exact line ------------------


def test_unknown_key_lists_the_known_ones() -> None:
    assert error(
        """\
        dns:
          timeout: 1.0
        checks:
          spf:
            enabled: true
          spff:
            enabled: true
        """
    ) == (
        "policy.yaml:6: checks.spff: unknown key; expected one of: "
        "allowlist, arc, author, automation, bounce, dkim, dmarc, dnsbl, headers, helo, iprev, loops, names, rate, "
        "replies, reputation, spf, uribl"
    )


def test_unknown_top_level_key() -> None:
    assert error("thresholds: {}\nthreshold: {}\n").startswith(
        "policy.yaml:2: threshold: unknown key; expected one of: actions, address_separators,"
    )


def test_wrong_type_in_a_nested_list_names_the_full_path() -> None:
    assert error(
        """\
        checks:
          dnsbl:
            lists:
              - zone: bl.example.org
                weight: high
        """
    ) == "policy.yaml:5: checks.dnsbl.lists[0].weight: expected a number >= 0, got 'high'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dns:\n  timeout: 0\n",
         "policy.yaml:2: dns.timeout: expected a number between 0.05 and 60, got 0"),
        ("dns:\n  cache_size: -1\n",
         "policy.yaml:2: dns.cache_size: expected an integer between 0 and 10000000, got -1"),
        ("checks:\n  dkim:\n    max_signatures: 1000\n",
         "policy.yaml:3: checks.dkim.max_signatures: expected an integer between 1 and 100, "
         "got 1000"),
        ("scores:\n  dkim.fail: 5000\n",
         "policy.yaml:2: scores.dkim.fail: expected a number between -1000 and 1000, got 5000"),
        ("thresholds:\n  quarantine: .nan\n",
         "policy.yaml:2: thresholds.quarantine: expected a number between 0 and 1000, got .nan"),
    ],
)
def test_out_of_range(text: str, expected: str) -> None:
    assert error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a quoted number is a string, not a number
        ('dns:\n  timeout: "2"\n', "dns.timeout: expected a number between 0.05 and 60, got '2'"),
        # a bool is not an int
        ("dns:\n  cache_size: yes\n",
         "dns.cache_size: expected an integer between 0 and 10000000, got yes"),
        # a float is not an int
        ("dns:\n  cache_size: 1.5\n",
         "dns.cache_size: expected an integer between 0 and 10000000, got 1.5"),
        # a number is not a string
        ("authserv_id: 42\n", "authserv_id: expected a string, got 42"),
        # a string is not a bool
        ("checks:\n  spf:\n    check_helo: maybe\n",
         "checks.spf.check_helo: expected true or false, got 'maybe'"),
        # a scalar is not a list, a list is not a mapping
        ("trusted_authserv_ids: gw.example.net\n",
         "trusted_authserv_ids: expected a list, got 'gw.example.net'"),
        ("dns: [1, 2]\n", "dns: expected a mapping, got a list"),
        # null where a value is needed
        ("dns:\n  timeout:\n", "dns.timeout: expected a number between 0.05 and 60, "
         "got an empty value"),
    ],
)
def test_wrong_type(text: str, expected: str) -> None:
    assert error(text).split(": ", 1)[1] == expected


def test_top_level_must_be_a_mapping() -> None:
    assert error("- a\n- b\n") == "policy.yaml:1: expected a mapping, got a list"


def test_bad_enum_and_literal() -> None:
    assert error(
        """\
        rules:
          - name: r
            when: [dkim.fail]
            action: bounce
        """
    ) == (
        "policy.yaml:4: rules[0].action: expected one of: "
        "accept, low-trust, quarantine, discard, tempfail, reject, got 'bounce'"
    )
    assert error(
        """\
        rules:
          - name: r
            when: [dkim.fail]
            score: 1
            mode: dry-run
        """
    ) == "policy.yaml:5: rules[0].mode: expected one of: enforce, shadow, got 'dry-run'"


def test_bad_reply_code_for_the_action() -> None:
    assert error(
        """\
        actions:
          reject:
            code: 450
            dsn: 4.7.1
            text: nope
        """
    ) == "policy.yaml:3: actions.reject.code: expected a 5xx code for action reject, got 450"


def test_reply_code_out_of_range() -> None:
    assert error(
        "actions:\n  tempfail: {code: 250, dsn: 2.0.0, text: ok}\n"
    ) == "policy.yaml:2: actions.tempfail.code: expected an integer between 400 and 599, got 250"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("5.x.1", "expected an RFC 3463 enhanced status code like 5.7.1, got '5.x.1'"),
        ("5.7.1000", "expected an RFC 3463 enhanced status code like 5.7.1, got '5.7.1000'"),
        ("4.7.1", "expected an enhanced code of class 5 to match 550, got '4.7.1'"),
    ],
)
def test_bad_dsn(dsn: str, expected: str) -> None:
    text = f"actions:\n  reject:\n    code: 550\n    dsn: {dsn}\n    text: nope\n"
    assert error(text) == f"policy.yaml:4: actions.reject.dsn: {expected}"


@pytest.mark.parametrize(
    "text",
    ['"line one\\r\\nline two"', '"100% sure"', '"caf\u00e9"', '""', "x" * 401],
)
def test_bad_reply_text(text: str) -> None:
    message = error(f"actions:\n  reject:\n    code: 550\n    dsn: 5.7.1\n    text: {text}\n")
    assert message.startswith("policy.yaml:5: actions.reject.text: expected 1 to 400 printable")


def test_rule_reply_must_fit_the_rule_action() -> None:
    assert error(
        """\
        rules:
          - name: r
            when: [dkim.fail]
            action: quarantine
            reply: {code: 550, dsn: 5.7.1, text: nope}
        """
    ) == (
        "policy.yaml:5: rules[0].reply: expected no reply (only reject and tempfail send one), "
        "got a mapping"
    )
    assert error(
        """\
        rules:
          - name: r
            when: [dkim.fail]
            action: tempfail
            reply:
              code: 550
              dsn: 5.7.1
              text: nope
        """
    ) == "policy.yaml:6: rules[0].reply.code: expected a 4xx code for action tempfail, got 550"


def test_unknown_signal_in_a_rule_suggests_the_right_one() -> None:
    assert error(
        """\
        rules:
          - name: ok
            when: [dkim.fail]
            action: quarantine
          - name: typo
            when:
              - dmarc.policy.reject
              - dmarc.fial
            action: reject
        """
    ) == (
        "policy.yaml:8: rules[1].when[1]: expected a known signal name "
        "(did you mean 'dmarc.fail'?), got 'dmarc.fial'"
    )


def test_unknown_signal_in_scores() -> None:
    assert error(
        """\
        scores:
          dkim.fail: 3
          dmarc.fial: 4
        """
    ) == (
        "policy.yaml:3: scores.dmarc.fial: expected a known signal name "
        "(did you mean 'dmarc.fail'?), got 'dmarc.fial'"
    )


def test_wildcards_in_scores_are_refused() -> None:
    assert error("scores:\n  dnsbl.*: 3\n").startswith(
        "policy.yaml:2: scores.dnsbl.*: expected a known signal name"
    )


def test_rule_needs_a_condition_and_an_effect() -> None:
    assert error("rules:\n  - name: r\n    action: reject\n") == (
        "policy.yaml:2: rules[0].when: expected at least one signal in `when` or `any`, "
        "got an empty list"
    )
    assert error("rules:\n  - name: r\n    when: [dkim.fail]\n") == (
        "policy.yaml:2: rules[0].action: expected an action, or a non-zero score, got null"
    )


def test_required_key_missing() -> None:
    assert error(
        """\
        rules:
          - when: [dkim.fail]
            action: reject
        """
    ) == "policy.yaml:2: rules[0].name: required key missing"
    assert error("checks:\n  dnsbl:\n    lists:\n      - weight: 1\n") == (
        "policy.yaml:4: checks.dnsbl.lists[0].zone: required key missing"
    )


def test_duplicate_rule_names() -> None:
    assert error(
        """\
        rules:
          - name: r
            when: [dkim.fail]
            score: 1
          - name: r
            when: [spf.mailfrom.fail]
            score: 1
        """
    ) == "policy.yaml:5: rules[1].name: expected a name no earlier rule uses, got 'r'"


def test_thresholds_must_ascend() -> None:
    assert error("thresholds:\n  low_trust: 5\n  quarantine: 4\n") == (
        "policy.yaml:3: thresholds.quarantine: expected a number >= low_trust (5), got 4"
    )
    assert error("thresholds:\n  reject: 7\n") == (
        "policy.yaml:2: thresholds.reject: expected a number >= quarantine (8), or null, got 7"
    )


def test_bad_header_name_and_authserv_id() -> None:
    assert error("headers:\n  trust_header: 'X-Trust: me'\n").startswith(
        "policy.yaml:2: headers.trust_header: expected a header field name"
    )
    assert error("trusted_authserv_ids: [gw.example.net, 'bad id;']\n") == (
        "policy.yaml:1: trusted_authserv_ids[1]: expected a host name like mx.example.com, "
        "got 'bad id;'"
    )


def test_an_authserv_id_is_a_dot_atom() -> None:
    """Empty labels would make our own field unreadable (authres reads a dot-atom)."""
    for bad in ["mx..example.org", ".mx.example.org", "mx.example.org..", "."]:
        assert error(f"authserv_id: '{bad}'\n").startswith(
            "policy.yaml:1: authserv_id: expected a host name like mx.example.com"
        ), bad
    assert parse("authserv_id: mx.example.org.\n").authserv_id == "mx.example.org."


def test_trusted_gateways_by_network() -> None:
    """An entry is a plain id or {id, networks}; a mapping must say where it connects from."""
    from trustmilter.config.gateways import GatewayConfig

    settings = parse(
        "trusted_authserv_ids:\n"
        "  - gw.example.net\n"
        "  - id: gw2.example.net\n"
        "    networks: [192.0.2.0/24, '2001:db8::/32']\n"
    )
    assert settings.trusted_authserv_ids == (
        "gw.example.net", GatewayConfig("gw2.example.net", ("192.0.2.0/24", "2001:db8::/32")),
    )
    assert error("trusted_authserv_ids:\n  - id: gw2.example.net\n") == (
        "policy.yaml:2: trusted_authserv_ids[0].networks: required key missing"
    )
    assert error("trusted_authserv_ids:\n  - {id: gw2.example.net, networks: []}\n") == (
        "policy.yaml:2: trusted_authserv_ids[0].networks: expected at least one network "
        "like 192.0.2.0/24, got an empty list"
    )
    assert error("trusted_authserv_ids:\n  - {id: gw2.example.net, networks: [192.0.2.0/33]}\n"
                 ).startswith("policy.yaml:2: trusted_authserv_ids[0].networks[0]: expected a network")
    assert error("trusted_authserv_ids:\n  - {id: 'a b', networks: [192.0.2.0/24]}\n"
                 ).startswith("policy.yaml:2: trusted_authserv_ids[0].id: expected a host name")
    assert error("trusted_authserv_ids: [[gw.example.net]]\n") == (
        "policy.yaml:1: trusted_authserv_ids[0]: expected a string or a mapping, got a list"
    )


def test_duplicate_key() -> None:
    assert error("dns:\n  timeout: 1\n  timeout: 2\n") == (
        "policy.yaml:3: dns.timeout: duplicate key (first at line 2)"
    )


def test_non_string_key() -> None:
    assert error("scores:\n  1: 2\n") == "policy.yaml:2: scores: expected a string key, got 1"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("dns:\n  timeout: 1\n nameservers: []\n", 3),
        ("rules:\n  - name: [unclosed\n", 3),
        ("dns: {timeout: 1\nchecks: {}\n", 2),
        ("a: 1\n---\nb: 2\n", 2),
        ("dns:\n\ttimeout: 1\n", 2),
    ],
)
def test_yaml_syntax_error_is_one_line_with_its_line(text: str, line: int) -> None:
    message = error(text)
    assert message.startswith(f"policy.yaml:{line}: YAML syntax error: "), message


def test_python_tags_are_not_constructed() -> None:
    assert error("authserv_id: !!python/object/apply:os.system [echo hi]\n").startswith(
        "policy.yaml:1: authserv_id: expected a string, got"
    )


def test_alias_bomb_stops_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines.append("trusted_authserv_ids: *a8")
    # The anchors themselves are unknown keys: the loader stops at the first.
    assert error("\n".join(lines)).startswith("policy.yaml:1: a0: unknown key")
    # Inside a known list the expansion is bounded too.
    nested = "rules:\n  - name: r\n    when: &w [dkim.fail, *w]\n    score: 1\n"
    assert "rules[0].when[1]: expected a string, got a list" in error(nested)


def test_load_policy_reads_files_and_reports_bad_utf8(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("thresholds:\n  low_trust: 2\n", encoding="utf-8")
    assert load_settings(good).policy.thresholds.low_trust == 2.0
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"authserv_id: a\nthresholds:\n  low_trust: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    assert str(caught.value) == f"{bad}:3: expected UTF-8 text, got invalid bytes"
    with pytest.raises(OSError):
        load_settings(tmp_path / "missing.yaml")


def test_policy_error_carries_its_parts() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("dns:\n  timeout: x\n")
    assert (caught.value.source, caught.value.line, caught.value.path) == (
        "policy.yaml", 2, ("dns", "timeout"),
    )


# ---- the catalogue and the model's own checks ----------------------------


def test_signal_catalogue() -> None:
    assert "spf.mailfrom.temperror" in KNOWN_SIGNALS
    assert "dnsbl.listed" in KNOWN_SIGNALS
    assert "dmarc.fial" not in KNOWN_SIGNALS
    assert is_known_signal("upstream.dkim.pass")
    assert is_known_signal("upstream.x-custom.fail")
    assert not is_known_signal("upstream.dkim.bogus")
    assert is_known_pattern("dnsbl.*") and is_known_pattern("upstream.*")
    assert is_known_pattern("helo.*") and not is_known_pattern("hello.*")
    assert not is_known_pattern("*") and not is_known_pattern("dns*.*")


def test_policy_built_in_code_is_validated_too() -> None:
    """The policy checks its own shape; the settings check the signals it names
    (they know the checks, the policy knows none)."""
    with pytest.raises(InvalidField):
        Policy(scores={"dmarc.fail": 5000.0})
    with pytest.raises(InvalidField) as raised:
        Settings(policy=Policy(scores={"dmarc.fial": 1.0}))
    assert raised.value.path == ("scores", "dmarc.fial")
    with pytest.raises(InvalidField) as raised:
        Settings(policy=Policy(rules=(Rule(name="r", when=("dkim.pas",), score=1),)))
    assert raised.value.path == ("rules", 0, "when", 0)
    with pytest.raises(InvalidField):
        Rule(name="bad name", when=("dkim.fail",), score=1)
    with pytest.raises(InvalidField):
        ReplyConfig(550, "4.7.1", "mismatch")


def test_yaml_1_1_booleans_are_not_strings() -> None:
    # `no` is false in YAML 1.1: the loader says so instead of sending "False".
    assert error("actions:\n  reject: {code: 550, dsn: 5.7.1, text: no}\n") == (
        "policy.yaml:2: actions.reject.text: expected a string, got no"
    )


def test_control_characters_are_a_one_line_error() -> None:
    assert error("dns:\n  timeout: 1\nauthserv_id: 'a\x01'\n") == (
        "policy.yaml:3: YAML error: a non-printable character"
    )


def test_every_finding_belongs_to_a_result_by_its_prefix() -> None:
    """The daemon decides early only if it knows which signals a later check may add."""
    from trustmilter.signals import FINDINGS, RESULT_NAMES, signal_prefixes

    for finding in FINDINGS:
        assert any(
            finding.startswith(prefix)
            for result in RESULT_NAMES
            for prefix in signal_prefixes(result)[1:]
        ), finding


def test_matching_picks_the_signals_matches_accepts():
    """The set form the evaluator uses agrees with `matches` for exact and * patterns."""
    signals = frozenset(sorted(KNOWN_SIGNALS)[:40]) | {"upstream.mx.example.spf.pass"}
    patterns = [*sorted(signals)[:10], "spf.*", "dkim.*", "upstream.*", "nothing.here", "*", ""]
    for pattern in patterns:
        assert matching(pattern, signals) == {s for s in signals if matches(pattern, s)}
