"""The command line as an administrator meets it: help, pipes, policy files, wording.

`--help` lists only the commands an administrator runs; output to a reader
that went away (``| head -1``) ends quietly as other Unix tools do;
`policy show FILE` takes the file as `policy check FILE` does; policy
errors name the line the administrator got wrong, in plain words.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_bounce_explain import POSTFIX_DSN
from trustmilter.cli import main
from trustmilter.config.load import ConfigError, parse_settings

SHIPPED = Path(__file__).resolve().parent.parent / "policy.yaml"
MESSAGE = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello\r\n"


def test_help_lists_no_internal_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    assert shown.value.code == 0
    text = capsys.readouterr().out
    assert "SUPPRESS" not in text and "_serve" not in text
    assert "  run " in text and "  check " in text
    # The internal command itself still works for the supervisor.
    with pytest.raises(SystemExit):
        main(["_serve", "--help"])
    assert "--foreground-log" in capsys.readouterr().out


def _to_closed_pipe(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run the command with standard output a pipe nobody reads any more."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", "trustmilter", *args], stdout=writer,
                              stderr=subprocess.PIPE, cwd=tmp_path, timeout=60, check=False)
    finally:
        os.close(writer)


def test_a_reader_that_went_away_ends_each_command_quietly(tmp_path: Path) -> None:
    """Status 141 (128 + SIGPIPE), as the shell reports `yes | head -1`; no traceback.

    `--help` is argparse's: it ignores a closed output and exits 0.
    """
    (tmp_path / "bounce.eml").write_bytes(POSTFIX_DSN)
    (tmp_path / "message.eml").write_bytes(MESSAGE)
    (tmp_path / "zone.txt").write_text("")  # every name unknown: no DNS asked
    help_shown = _to_closed_pipe(["--help"], tmp_path)
    assert (help_shown.returncode, help_shown.stderr) == (0, b"")
    commands = [
        ["policy", "show"],
        ["explain-bounce", "bounce.eml"],
        ["check", "message.eml", "--ip", "192.0.2.10", "--mail-from", "alice@example.com",
         "--dns-fixture", "zone.txt"],
    ]
    for args in commands:
        done = _to_closed_pipe(args, tmp_path)
        # Quiet: no traceback; at most the line naming the policy that was read.
        noise = [line for line in done.stderr.splitlines() if not line.startswith(b"policy: ")]
        assert (done.returncode, noise) == (128 + signal.SIGPIPE, []), args


def test_policy_show_takes_the_file_as_policy_check_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("thresholds:\n  low_trust: 4\n  quarantine: 9\n")
    assert main(["policy", "show", str(path)]) == 0
    positional = capsys.readouterr().out
    assert parse_settings(positional, "<shown>").policy.thresholds.quarantine == 9
    assert main(["policy", "show", "--policy", str(path)]) == 0
    assert capsys.readouterr().out == positional
    with pytest.raises(SystemExit) as usage:
        main(["policy", "show", str(path), "--policy", str(path)])
    assert usage.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_a_bad_socket_is_expected_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text('milter:\n  socket: "inet:99999@127.0.0.1"\n')
    assert main(["policy", "check", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"trustmilter: {path}:2: milter.socket: expected a port 1-65535 before '@', "
        "got 'inet:99999@127.0.0.1'\n")
    for spec in ("unix:run/x.sock", "tcp:25@127.0.0.1", "inet:25", "inet6:25@127.0.0.1", "x"):
        path.write_text(f'milter:\n  socket: "{spec}"\n')
        assert main(["policy", "check", str(path)]) == 1
        error = capsys.readouterr().err.removeprefix(f"trustmilter: {path}:2: ")
        assert error.startswith("milter.socket: expected ") and error.count("expected") == 1
        assert error.endswith(f", got '{spec}'\n"), error


def _dedented(line: int) -> str:
    """The shipped policy with its line `line` (from 1) moved two spaces left."""
    lines = SHIPPED.read_text().splitlines()
    assert lines[line - 1].startswith("    ") and not lines[line - 1].lstrip().startswith("#")
    lines[line - 1] = lines[line - 1][2:]
    return "\n".join(lines) + "\n"


def _key_lines(after: str, key: str) -> int:
    """The line (from 1) of `key` in the shipped policy, the first after `after`."""
    lines = SHIPPED.read_text().splitlines()
    start = next(n for n, text in enumerate(lines) if text.startswith(after))
    return next(n for n, text in enumerate(lines[start:], start) if text.strip().startswith(key)) + 1


@pytest.mark.parametrize(("section", "key"), [
    ("  names:", "enabled:"),  # comments between it and the next key
    ("  arc:", "trusted_sealers:"),  # a list of examples in comments after it
    ("  on_error:", "external:"),  # a key with its own mapping below it
])
def test_a_dedented_key_is_reported_at_its_own_line(section: str, key: str) -> None:
    line = _key_lines(section, key)
    with pytest.raises(ConfigError) as error:
        parse_settings(_dedented(line), "t3.yaml")
    assert error.value.line == line, str(error.value)
    assert "indented less than line" in str(error.value)


def test_an_indentation_error_names_both_lines() -> None:
    text = "checks:\n  dkim:\n    enabled: true\n     min_key_bits: 1024\n"
    with pytest.raises(ConfigError) as error:
        parse_settings(text, "indent.yaml")
    assert error.value.line == 4
    assert "indented more than line 3 before it" in str(error.value)


def test_a_tab_is_named() -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings("checks:\n\tdkim: {}\n", "t6.yaml")
    assert error.value.line == 2 and "a tab" in str(error.value)
