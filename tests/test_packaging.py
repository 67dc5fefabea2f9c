"""Cheap static checks of packaging/: the files agree with each other and with the CLI.

The systemd unit, the Postfix and Sendmail snippets and run.sh all name the
same socket and the same macros; a rename in one must fail here, not on a
production host. Where the real tools are installed (systemd-analyze,
postconf: Postfix is a test dependency) they judge the files too; nothing
is installed, started or enabled.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trustmilter.config.socket import parse_socket

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
UNIT = PACKAGING / "trustmilter.service"
MAIN_CF = PACKAGING / "postfix" / "main.cf"
SENDMAIL_MC = PACKAGING / "sendmail" / "trustmilter.mc"
RUN_SH = PACKAGING / "run.sh"

SOCKET = "unix:/run/trustmilter/trustmilter.sock"


def unit_settings() -> dict[str, list[str]]:
    """The [Service]/[Unit]/[Install] keys of the unit; a repeated key keeps every value."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line!r}"
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def postfix_settings() -> dict[str, str]:
    return {
        key: value
        for key, value in (
            line.split(" = ", 1)
            for line in MAIN_CF.read_text().splitlines()
            if line and not line.startswith("#")
        )
    }


# ---- the systemd unit -------------------------------------------------------

HARDENING = {
    "User": "trustmilter",
    "Group": "postfix",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RuntimeDirectory": "trustmilter",
    "RuntimeDirectoryMode": "0750",
    "UMask": "0007",
    "ReadOnlyPaths": "/etc/trustmilter",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
}


@pytest.mark.parametrize("key, value", sorted(HARDENING.items()))
def test_unit_has_the_hardening(key: str, value: str) -> None:
    assert value in unit_settings().get(key, []), f"{key}={value} missing from {UNIT.name}"


def test_unit_filters_system_calls() -> None:
    assert "@system-service" in unit_settings()["SystemCallFilter"]


def test_exec_start_is_a_valid_trustmilter_run() -> None:
    (exec_start,) = unit_settings()["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/trustmilter/.venv/bin/trustmilter"
    assert argv[1] == "run"
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert options == {"--policy": "/etc/trustmilter/policy.yaml", "--socket": SOCKET}
    # The socket lives in the RuntimeDirectory systemd makes for the service.
    spec = parse_socket(options["--socket"])
    assert spec.family == "unix"
    assert Path(spec.path).parent == Path("/run") / unit_settings()["RuntimeDirectory"][0]
    assert options["--policy"].startswith(unit_settings()["ReadOnlyPaths"][0] + "/")
    # The installed CLI accepts exactly these options.
    help_text = subprocess.run(
        [sys.executable, "-m", "trustmilter", "run", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    for option in options:
        assert option in help_text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd's own parser: no unknown key, no unparsable value.

    Run offline on a copy; the one complaint allowed is that ExecStart's
    binary is not installed on this machine.
    """
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text())
    done = subprocess.run(["systemd-analyze", "verify", str(copy)],
                          capture_output=True, text=True, timeout=60, check=False)
    complaints = [
        line for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and "/opt/trustmilter/.venv/bin/trustmilter is not executable" not in line
    ]
    assert complaints == []
    # Exposure score (0 best, 10 worst): fail if the hardening erodes.
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=25", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert security.returncode == 0, security.stdout[-600:]


# ---- Postfix ------------------------------------------------------------------


def test_postfix_snippet_lines_are_commented_key_value_pairs() -> None:
    previous = ""
    for line in MAIN_CF.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[a-z_]+ = \S.*", line), f"not 'key = value': {line!r}"
            assert previous.startswith("#"), f"no comment above {line!r}"
        previous = line


def test_postfix_snippet_has_what_trustmilter_needs() -> None:
    cf = postfix_settings()
    assert cf["smtpd_milters"] == SOCKET
    assert cf["non_smtpd_milters"] == SOCKET
    assert cf["milter_default_action"] == "tempfail"
    assert cf["milter_protocol"] == "6"
    assert {"i", "{auth_authen}", "{mail_addr}"} <= set(cf["milter_mail_macros"].split())
    assert "i" in cf["milter_end_of_data_macros"].split()
    for key in ("milter_connect_macros", "milter_helo_macros", "milter_rcpt_macros"):
        assert cf[key]


def test_postfix_snippet_explains_the_debian_chroot() -> None:
    text = MAIN_CF.read_text()
    assert "/var/spool/postfix" in text
    assert "postconf -F 'smtp/inet/chroot = n' 'cleanup/unix/chroot = n'" in text
    assert "smtpd_milters = inet:127.0.0.1:8894" in text  # the keep-the-chroot variant


@pytest.mark.skipif(shutil.which("postconf") is None, reason="Postfix not installed")
def test_postconf_reads_the_snippet(tmp_path: Path) -> None:
    """Postfix's own parser: every name is a real parameter, every value reads back."""
    (tmp_path / "main.cf").write_text(MAIN_CF.read_text())
    (tmp_path / "master.cf").write_text("")
    done = subprocess.run(["postconf", "-c", str(tmp_path), "-n"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert "unused parameter" not in done.stderr, done.stderr
    read_back = dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)
    for key, value in postfix_settings().items():
        assert read_back[key] == value


# ---- Sendmail -----------------------------------------------------------------


def test_sendmail_snippet_names_the_same_socket_and_macros() -> None:
    text = SENDMAIL_MC.read_text()
    (filter_line,) = re.findall(r"^INPUT_MAIL_FILTER\(`trustmilter', `([^']*)'\)dnl$", text, re.M)
    equates = dict(part.strip().split("=", 1) for part in filter_line.split(","))
    assert equates["S"] == SOCKET
    assert equates["F"] == "T"  # tempfail when the filter is unreachable
    assert {t.split(":")[0] for t in equates["T"].split(";")} == {"C", "S", "R", "E"}
    macros = dict(re.findall(r"^define\(`(confMILTER_MACROS_\w+)', `([^']*)'\)dnl$", text, re.M))
    envfrom = {m.strip() for m in macros["confMILTER_MACROS_ENVFROM"].split(",")}
    assert {"i", "{auth_authen}"} <= envfrom
    assert "i" in {m.strip() for m in macros["confMILTER_MACROS_EOM"].split(",")}
    for line in text.splitlines():  # m4 quotes pair up outside dnl comments
        if not line.startswith("dnl"):
            assert line.count("`") == line.count("'"), line


# ---- run.sh -------------------------------------------------------------------


def test_run_sh_is_bash_clean() -> None:
    subprocess.run(["bash", "-n", str(RUN_SH)], check=True, timeout=60)


@pytest.mark.parametrize(
    "spec, postfix",
    [
        ("inet:8894@127.0.0.1", "inet:127.0.0.1:8894"),
        ("inet6:8894@::1", "inet:[::1]:8894"),
        ("inet6:8894@[::1]", "inet:[::1]:8894"),
        ("unix:/run/trustmilter/trustmilter.sock", "unix:/run/trustmilter/trustmilter.sock"),
        ("local:/run/x.sock", "unix:/run/x.sock"),
    ],
)
def test_run_sh_writes_the_socket_as_postfix_does(spec: str, postfix: str) -> None:
    """libmilter writes inet:PORT@HOST, Postfix inet:HOST:PORT: run.sh translates."""
    done = subprocess.run(
        ["bash", "-c", 'source "$1" && postfix_spec "$2"', "test", str(RUN_SH), spec],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert done.stdout.strip() == postfix


def test_run_sh_prints_the_snippets_settings() -> None:
    """The postconf -e lines run.sh prints say what packaging/postfix/main.cf says."""
    printed = dict(re.findall(r"postconf -e '([a-z_]+) = ([^']*)'", RUN_SH.read_text()))
    assert {"smtpd_milters", "non_smtpd_milters", "milter_end_of_data_macros"} <= set(printed)
    cf = postfix_settings()
    for key, value in printed.items():
        if key.endswith("_milters"):
            assert value == "$postfix_socket"
        else:
            assert value == cf[key], key


def test_run_sh_installs_then_runs_in_the_foreground() -> None:
    text = RUN_SH.read_text()
    assert "bash packaging/install.sh" in text
    assert re.search(r'exec "\$bin/trustmilter" run .*--foreground-log', text)


def test_install_script_brings_miltertest_for_the_tests() -> None:
    text = (PACKAGING / "install.sh").read_text()
    assert re.search(r"apt-get install .*\bmiltertest\b", text)


def test_readme_shows_the_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "    bash packaging/run.sh\n" in readme
    assert "## Install for production" in readme
    assert "/var/spool/postfix" in readme  # the chroot caveat
    assert "systemctl reload trustmilter" in readme
    assert "miltertest" in readme


# ---- pinned versions (packaging/constraints.txt) -----------------------------------


def pinned() -> dict[str, str]:
    """packaging/constraints.txt as {distribution (lower case): version}, for this Python.

    A pin with an environment marker that does not hold here is left out, as pip does.
    """
    from packaging.requirements import Requirement

    pins = {}
    for line in (PACKAGING / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate():
                (spec,) = requirement.specifier
                assert spec.operator == "==", line
                pins[requirement.name.lower()] = spec.version
    return pins


def test_install_script_installs_the_pinned_versions() -> None:
    text = (PACKAGING / "install.sh").read_text()
    assert text.count("pip install -q -c packaging/constraints.txt -e") == 2


def test_the_tests_run_with_the_pinned_versions() -> None:
    """Fails when the environment drifted from the pins (or the pins from it)."""
    for name, version in pinned().items():
        assert importlib.metadata.version(name) == version, name


def test_every_declared_requirement_is_pinned() -> None:
    pins = pinned()
    requires = importlib.metadata.requires("trustmilter") or []
    for requirement in requires:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        assert name in pins, requirement


def test_the_pins_are_versions_the_compat_registry_was_written_for() -> None:
    from trustmilter import compat
    from trustmilter.compat.patches import PYTHON, version_accepted

    pins = pinned()
    for patch in compat.REGISTRY:
        if patch.dist != PYTHON:
            assert version_accepted(pins[patch.dist], patch.versions), patch.name
