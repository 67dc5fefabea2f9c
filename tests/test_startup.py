"""Start-up refuses what cannot run, with one clear message (never degrade silently)."""

from __future__ import annotations

import sys

import pytest

from trustmilter.checks import StartupError, build_checks
from trustmilter.config.load import ConfigError, parse_settings
from trustmilter.config.settings import Settings


def test_enabled_dkim_without_its_crypto_library_stops_start_up(monkeypatch):
    monkeypatch.setitem(sys.modules, "nacl.signing", None)  # as if PyNaCl were not installed
    with pytest.raises(StartupError, match=r"checks\.dkim: cannot run"):
        list(build_checks(Settings().checks))


def test_a_disabled_check_needs_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "nacl.signing", None)
    policy = parse_settings("checks:\n  dkim: {enabled: false}\n  arc: {enabled: false}\n", "p.yaml")
    names = {check.name for check in build_checks(policy.checks)}
    assert "dkim" not in names and "dmarc" in names


@pytest.mark.parametrize("spec", ["not-an-ip", "127.0.0.1:99999", "[::1", "127.0.0.1:"])
def test_a_bad_nameserver_is_a_policy_error_with_its_line(spec):
    with pytest.raises(ConfigError) as caught:
        parse_settings(f"dns:\n  timeout: 1\n  nameservers:\n    - '{spec}'\n", "p.yaml")
    assert str(caught.value).startswith("p.yaml:4: dns.nameservers[0]: expected")
