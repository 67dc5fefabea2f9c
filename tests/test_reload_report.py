"""Reload log lines: exactly what changed, and a restart named only when one is needed.

`compare` is pure and tested on Settings; `AppHolder.reload` is tested on a
real policy file (parsed in its real child process) with its real log line.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trustmilter.config.load import parse_settings
from trustmilter.config.settings import Settings
from trustmilter.daemon.apps import AppHolder, build_app
from trustmilter.daemon.reloadreport import compare
from trustmilter.state.memory import MemoryStore

BASE = "authserv_id: mx.example.org\nstate: {backend: memory}\ndns: {nameservers: ['127.0.0.1:53']}\n"


def settings(extra: str = "") -> Settings:
    return parse_settings(BASE + extra, "policy.yaml")


def test_nothing_changed_says_so_and_nothing_about_restarts():
    running = settings()
    report = compare(running, running, settings())
    assert report.line("p.yaml") == "policy reloaded from p.yaml: no changes"


def test_processes_changed_needs_a_restart():
    running = settings()
    report = compare(running, running, settings("milter: {processes: 2}\n"))
    assert report.changed == ("milter.processes",)
    assert report.line("p.yaml") == (
        "policy reloaded from p.yaml: changed milter.processes; milter.processes takes effect"
        " at the next restart (running with the values from start-up)")


def test_restoring_the_running_values_names_the_change_and_no_restart():
    running = settings("metrics: {listen: '127.0.0.1:9425'}\n")
    edited = settings("metrics: {listen: '127.0.0.1:9426'}\nmilter: {processes: 2,"
                      " socket: 'inet:8895@127.0.0.1'}\n")
    assert compare(running, running, edited).needs_restart == (
        "milter.socket", "milter.processes", "metrics.listen")
    back = compare(running, edited, running)
    assert back.changed == ("milter.socket", "milter.processes", "metrics.listen")
    assert back.needs_restart == ()
    assert "restart" not in back.line("p.yaml")


def test_policy_keys_are_named_as_the_file_writes_them():
    running = settings()
    rules = [dataclasses.asdict(rule) for rule in running.policy.rules]
    first, second = rules[0]["name"], rules[1]["name"]
    edited = settings(
        "thresholds: {quarantine: 9}\nscores: {dkim.fail: 4}\nrules:\n"
        f"  - {{name: {second}, when: [dmarc.fail], action: reject}}\n"
        "  - {name: brand-new, when: [helo.localhost], action: quarantine}\n"
    )
    report = compare(running, running, edited)
    assert "thresholds.quarantine" in report.changed
    assert "scores.dkim.fail" in report.changed
    assert f"rules.{first}" in report.changed  # removed
    assert f"rules.{second}" in report.changed  # changed
    assert "rules.brand-new" in report.changed  # added
    assert report.needs_restart == ()


def test_a_long_list_of_changes_is_cut_to_one_readable_line():
    running = settings()
    names = ("localhost", "single_label", "nxdomain", "ip_literal", "unknown_tld", "no_address",
             "missing", "not_sender_mx")
    edited = settings("scores: {" + ", ".join(f"helo.{name}: 1.5" for name in names)
                      + "}\nthresholds: {quarantine: 9, low_trust: 2}\n"
                      "milter: {processes: 3, check_threads: 8}\n"
                      "address_separators: '+'\n")
    report = compare(running, running, edited)
    assert len(report.changed) == 13
    line = report.line("p.yaml")
    assert "\n" not in line
    assert ", scores.helo.localhost, " in line and ", milter.check_threads and 1 more;" in line
    assert line.endswith("milter.check_threads, milter.processes take effect at the next restart"
                         " (running with the values from start-up)")


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


def test_a_daemon_reload_logs_what_changed_and_what_waits(tmp_path: Path, pool, caplog):
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE)
    start = settings()
    holder = AppHolder(build_app(start, pool, state=MemoryStore()), policy, pool)
    with caplog.at_level(logging.INFO, logger="trustmilter.daemon.apps"):
        policy.write_text(BASE + "milter: {processes: 2}\nthresholds: {quarantine: 9}\n")
        assert holder.reload()
        policy.write_text(BASE + "thresholds: {quarantine: 9}\n")
        assert holder.reload()
    # Only the reload's own lines: a thread another test left running may log too.
    first, second = (record.getMessage() for record in caplog.records
                     if record.name == "trustmilter.daemon.apps")
    assert first == (f"policy reloaded from {policy}: changed thresholds.quarantine,"
                     " milter.processes; milter.processes takes effect at the next restart"
                     " (running with the values from start-up)")
    assert second == f"policy reloaded from {policy}: changed milter.processes"
    assert [record.levelno for record in caplog.records
            if record.name == "trustmilter.daemon.apps"] == [logging.WARNING, logging.INFO]
    assert holder.current().settings.policy.thresholds.quarantine == 9
