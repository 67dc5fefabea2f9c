"""The shipped unit: readiness (Type=notify), restarts by exit status, and limits sized from the policy.

The limits must cover what the shipped policy lets the milter use (the unit
file's comment gives the formula): a default raised in the policy without the
unit following would let systemd kill a milter doing nothing wrong.
(What the notifications say and when is tested on a real daemon in
test_daemon_notify.py; this machine has no systemd as PID 1.)
"""

from __future__ import annotations

import re
from pathlib import Path

from trustmilter.config.settings import Settings
from trustmilter.startup import EXIT_CONFIG

UNIT = Path(__file__).resolve().parent.parent / "packaging" / "trustmilter.service"
# Postfix's default_process_limit: smtpd and cleanup processes, each holding
# one milter connection at most.
POSTFIX_PROCESS_LIMIT = 100
MIB = 1024 * 1024


def setting(key: str) -> str:
    [value] = re.findall(rf"^{key}=(.*)$", UNIT.read_text(), flags=re.MULTILINE)
    return value.strip()


def test_the_unit_waits_for_readiness_from_the_supervisor():
    assert setting("Type") == "notify"
    assert setting("NotifyAccess") == "main"
    assert setting("ExecReload") == "/bin/kill -HUP $MAINPID"


def test_a_configuration_error_is_not_restarted():
    assert setting("Restart") == "on-failure"
    assert setting("RestartPreventExitStatus") == str(EXIT_CONFIG)


def test_tasks_max_covers_the_threads_of_the_shipped_policy():
    milter = Settings().milter
    sessions = 2 * POSTFIX_PROCESS_LIMIT
    needed = milter.processes * (milter.check_threads + sessions + 8) + 4
    assert int(setting("TasksMax")) >= needed


def test_memory_max_covers_the_messages_the_shipped_policy_admits():
    milter = Settings().milter
    sessions = 2 * POSTFIX_PROCESS_LIMIT
    per_process = (100 * MIB + sessions * milter.spool_memory_limit
                   + milter.large_message_slots * milter.max_message_size * 10)
    needed = milter.processes * per_process + 256 * MIB
    value = setting("MemoryMax")
    assert value.endswith("M")
    assert int(value[:-1]) * MIB >= needed
