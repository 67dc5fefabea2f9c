"""The registry: each check describes itself once, and the rest follows from the specs."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from trustmilter import authresults, signals
from trustmilter.checks import build_checks, registry
from trustmilter.checks.base import Stage
from trustmilter.checks.registry import SECTIONS, SPECS, Section
from trustmilter.config.checks import ChecksConfig
from trustmilter.config.settings import Settings
from trustmilter.results import AuthMethod, Outcome


def test_checks_config_has_one_field_per_section_typed_by_its_config():
    """ChecksConfig is written out for mypy and readers; it must say what the registry says."""
    hints = typing.get_type_hints(ChecksConfig)
    fields = dataclasses.fields(ChecksConfig)
    assert [f.name for f in fields] == [s.name for s in SECTIONS]
    for section in SECTIONS:
        assert hints[section.name] is section.config, section.name
    defaults = ChecksConfig()
    for section in SECTIONS:
        assert getattr(defaults, section.name) == section.config(), section.name


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.name)
def test_a_disabled_section_builds_none_of_its_checks(section: Section[object]):
    """So no check needs an `enabled` branch of its own."""
    disabled = dataclasses.replace(section.config(), enabled=False)  # type: ignore[type-var]
    config = dataclasses.replace(ChecksConfig(), **{section.name: disabled})
    built = {check.name for check in build_checks(config)}
    assert not built & {spec.name for spec in section.specs}
    assert built == registry.all_check_names() - {spec.name for spec in section.specs}


def test_every_check_is_built_from_its_section_with_the_spec_of_its_class():
    built = list(build_checks(Settings().checks))
    assert [check.spec for check in built] == list(SPECS)
    assert [(c.name, c.stage, c.requires) for c in built] == [
        (s.name, s.stage, s.requires) for s in SPECS
    ]


def test_check_names_are_unique_and_requirements_exist():
    names = [spec.name for spec in SPECS]
    assert len(names) == len(set(names))
    for spec in SPECS:
        assert set(spec.requires) <= set(names) | registry.attached_check_names(), spec.name
        assert isinstance(spec.stage, Stage)


def test_the_signal_catalogue_is_the_specs():
    # With the checks App.build attaches from top-level settings (trusted forwarders).
    catalogue = (*SPECS, *registry.ATTACHED_SPECS)
    assert set(signals.RESULT_NAMES) == {spec.result for spec in catalogue}
    assert {
        name: meaning for spec in catalogue for name, meaning in spec.findings.items()
    } == signals.FINDINGS
    assert "forwarded.spf.mailfrom.pass" in signals.KNOWN_SIGNALS
    assert all(meaning for meaning in signals.FINDINGS.values())
    assert "loops.pass" in signals.KNOWN_SIGNALS and "loop.marker_seen" in signals.KNOWN_SIGNALS


def test_finality_prefixes_come_from_the_findings_of_each_result():
    assert signals.signal_prefixes("loops") == ("loops.", "loop.")
    assert signals.signal_prefixes("automation") == ("automation.", "auto.")
    assert signals.signal_prefixes("dmarc") == ("dmarc.", "dmarc.")
    # A result without findings of its own covers its family's.
    assert signals.signal_prefixes("spf.mailfrom") == ("spf.mailfrom.", "spf.")


def test_a_finding_has_one_meaning_and_a_spec_cannot_be_changed():
    spec = SPECS[0]
    with pytest.raises(TypeError):
        spec.findings["iprev.new"] = "changed"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_two_meanings_for_one_finding_are_refused(monkeypatch):
    first = SPECS[0]
    finding = next(iter(first.findings))
    other = dataclasses.replace(SPECS[1], findings={finding: "something else"})
    monkeypatch.setattr(registry, "SPECS", (first, other))
    with pytest.raises(ValueError, match=f"finding {finding} has two meanings"):
        registry.findings()


def test_authentication_results_report_exactly_the_methods_of_the_specs():
    """auth (the SMTP AUTH line, no check) first, then the checks' methods, in AuthMethod order."""
    declared = {spec.method for spec in SPECS if spec.method is not None}
    assert declared | {AuthMethod.AUTH} == set(AuthMethod)
    assert authresults._METHOD_ORDER == ("auth", "iprev", "spf", "dkim", "dmarc", "arc")


def test_a_failing_check_reports_temperror_under_its_spec_method():
    """The pipeline's error result: the spec's result name and method, so A-R shows it."""
    from trustmilter.pipeline import _error_result

    for check in build_checks(Settings().checks):
        result = _error_result(check, "did not finish in time")
        assert (result.check, result.method, result.outcome) == (
            check.spec.result, check.spec.method, Outcome.TEMPERROR
        )
