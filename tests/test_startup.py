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


@pytest.mark.parametrize(("name", "qualified"), [
    ("mx.example.org", True), ("mail.example.com.", True),
    ("localhost", False), ("mx", False), ("localhost.localdomain", False),
    ("mx.localdomain", False), ("", False),
])
def test_a_host_name_is_fully_qualified_only_with_a_domain(name, qualified):
    from trustmilter.daemon.serve import fully_qualified

    assert fully_qualified(name) is qualified


def test_run_warns_when_authserv_id_is_left_to_a_bare_host_name(caplog):
    """The admin's trial: authserv_id left empty became "localhost", silently."""
    import logging

    from trustmilter.daemon.serve import _warn_unless_fully_qualified

    with caplog.at_level(logging.WARNING, logger="trustmilter"):
        _warn_unless_fully_qualified(Settings(), "localhost")
        _warn_unless_fully_qualified(Settings(), "mx.example.org")  # a good host name
        _warn_unless_fully_qualified(Settings(authserv_id="mx"), "mx")  # the admin's choice
    [warning] = caplog.records
    assert warning.getMessage().startswith(
        "authserv_id is not set and this host's name 'localhost' is not fully qualified:"
        " set authserv_id in the policy")
