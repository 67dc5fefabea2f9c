"""The review page's systemd units and their place in the Debian package (cheap, static).

packaging/trustmilter-review.service (the page), -review-digest.service
and its .timer: who they run as, what they may touch, and that systemd's
own parser and its security assessment accept them (where systemd-analyze
is installed). debian/rules puts every packaging/trustmilter-review* unit
into the package with the packaged command, and enables none of them;
the postinst says how to. Nothing is installed, started or enabled here;
tests/test_deb_package.py installs the real package.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from trustmilter.review.digest_command import add_digest_parser

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
DEBIAN = PACKAGING / "debian"
PAGE = PACKAGING / "trustmilter-review.service"
DIGEST = PACKAGING / "trustmilter-review-digest.service"
TIMER = PACKAGING / "trustmilter-review-digest.timer"
VENV_COMMAND = "/opt/trustmilter/.venv/bin/trustmilter"


def settings(unit: Path) -> dict[str, list[str]]:
    """The unit's keys; a repeated key keeps every value."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{unit.name}: not key=value: {line!r}"
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def exec_start(unit: Path) -> list[str]:
    (line,) = settings(unit)["ExecStart"]
    return shlex.split(line)


# ---- the page ------------------------------------------------------------------------

PAGE_HARDENING = {
    "User": "trustmilter",
    "SupplementaryGroups": "postfix",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "StateDirectory": "trustmilter/review",
    "StateDirectoryMode": "0700",
    "ReadWritePaths": "/var/lib/trustmilter/review /var/lib/trustmilter",
    "ReadOnlyPaths": "/etc/trustmilter",
    "UMask": "0077",
}


@pytest.mark.parametrize("key, value", sorted(PAGE_HARDENING.items()))
def test_the_page_runs_unprivileged_and_hardened(key: str, value: str) -> None:
    assert value in settings(PAGE).get(key, []), f"{key}={value} missing from {PAGE.name}"


def test_the_page_is_never_root_and_pulls_in_its_helper() -> None:
    unit = settings(PAGE)
    assert "root" not in unit["User"] and "Group" not in unit  # primary group: the user's own
    assert "@system-service" in unit["SystemCallFilter"]
    assert "trustmilter-review-helper.service" in unit["Wants"][0].split()
    assert "trustmilter-review-helper.service" in unit["After"][0].split()
    assert exec_start(PAGE) == [VENV_COMMAND, "review", "serve",
                                "--policy", "/etc/trustmilter/policy.yaml"]
    assert unit["WantedBy"] == ["multi-user.target"]


# ---- the digest -----------------------------------------------------------------------


def test_the_digest_runs_once_as_the_user_and_its_timer_daily() -> None:
    unit = settings(DIGEST)
    assert unit["Type"] == ["oneshot"] and unit["User"] == ["trustmilter"]
    assert "Install" not in DIGEST.read_text()  # started by its timer only
    argv = exec_start(DIGEST)
    assert argv[:3] == [VENV_COMMAND, "review", "digest"]
    parser = argparse.ArgumentParser()
    add_digest_parser(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(argv[2:])  # "digest --policy ...": what the command accepts
    assert parsed.policy == Path("/etc/trustmilter/policy.yaml")
    timer = settings(TIMER)
    assert timer["Unit"] == [DIGEST.name] and timer["Persistent"] == ["yes"]
    assert timer["OnCalendar"] == ["*-*-* 07:00:00"] and timer["WantedBy"] == ["timers.target"]


def test_the_digest_keeps_what_postdrop_needs_and_no_network() -> None:
    """Postfix's sendmail runs the setgid postdrop: NoNewPrivileges (and
    every option implying it for a non-root user) would make it fail."""
    unit = settings(DIGEST)
    assert unit["NoNewPrivileges"] == ["no"]
    for implies_it in ("SystemCallFilter", "RestrictAddressFamilies", "PrivateDevices",
                       "ProtectKernelModules", "ProtectKernelLogs", "ProtectClock",
                       "ProtectHostname", "RestrictRealtime", "RestrictSUIDSGID",
                       "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute",
                       "SystemCallArchitectures", "DynamicUser"):
        assert implies_it not in unit, implies_it
    assert "-/var/spool/postfix/maildrop" in unit["ReadWritePaths"][0].split()
    assert "/var/lib/trustmilter/review" in unit["ReadWritePaths"][0].split()
    assert unit["PrivateNetwork"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit, threshold", [(PAGE, 20), (DIGEST, 50)])
def test_systemd_accepts_the_units(unit: Path, threshold: int, tmp_path: Path) -> None:
    """systemd's parser (no unknown key or bad value; only the uninstalled
    command may be missing) and its exposure score, which must not erode."""
    for path in (PAGE, DIGEST, TIMER):
        shutil.copy(path, tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit.name),
                           *([str(tmp_path / TIMER.name)] if unit == DIGEST else [])],
                          capture_output=True, text=True, timeout=60, check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if line.strip() and f"{VENV_COMMAND} is not executable" not in line]
    assert complaints == []
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--threshold={threshold}",
         str(tmp_path / unit.name)],
        capture_output=True, text=True, timeout=60, check=False)
    assert security.returncode == 0, security.stdout[-600:]


# ---- the Debian package ----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_the_package_installs_each_review_unit_with_the_packaged_command(tmp_path: Path) -> None:
    units = sorted(PACKAGING.glob("trustmilter-review*.service")) + sorted(
        PACKAGING.glob("trustmilter-review*.timer"))
    assert {PAGE, DIGEST, TIMER} <= set(units)
    (tmp_path / "packaging").mkdir()
    for unit in [PACKAGING / "trustmilter.service", *units]:
        shutil.copy(unit, tmp_path / "packaging")
    shutil.copytree(DEBIAN, tmp_path / "debian")
    subprocess.run(["make", "-s", "-f", "debian/rules", "execute_before_dh_installsystemd"],
                   cwd=tmp_path, check=True, timeout=60, capture_output=True)
    installed = tmp_path / "debian" / "trustmilter" / "lib" / "systemd" / "system"
    assert sorted(p.name for p in installed.iterdir()) == sorted(u.name for u in units)
    for unit in units:
        source = unit.read_text().splitlines()
        packaged = (installed / unit.name).read_text().splitlines()
        changed = {b.partition("=")[0] for a, b in zip(source, packaged, strict=True)
                   if a != b and not a.startswith("#")}
        assert changed <= {"ExecStart", "Documentation"}, unit.name
        for line in packaged:
            if line.startswith("ExecStart="):
                assert line.startswith("ExecStart=/usr/bin/trustmilter review "), line


def test_the_review_units_are_not_enabled_and_the_postinst_says_how() -> None:
    rules = (DEBIAN / "rules").read_text()
    assert "dh_installsystemd trustmilter.service\n" in rules
    assert ("dh_installsystemd --no-enable --no-start --restart-after-upgrade $(REVIEW_UNITS)"
            in rules)
    postinst = (DEBIAN / "trustmilter.postinst").read_text()
    assert "systemctl enable --now trustmilter-review-helper trustmilter-review\n" in postinst
    assert "systemctl enable --now trustmilter-review-digest.timer\n" in postinst
    assert "install -d -o trustmilter -g trustmilter -m 0700 /var/lib/trustmilter/review" in (
        postinst)
    prerm = (DEBIAN / "trustmilter.prerm").read_text()
    for unit in ("trustmilter-review.service", "trustmilter-review-helper.service",
                 "trustmilter-review-digest.timer", "trustmilter-review-digest.service"):
        assert unit in prerm
    assert "docs/review.md" in (DEBIAN / "trustmilter.docs").read_text().split()


def test_the_prerm_is_sh_clean() -> None:
    subprocess.run(["sh", "-n", str(DEBIAN / "trustmilter.prerm")], check=True, timeout=60)
    text = (DEBIAN / "trustmilter.prerm").read_text()
    assert "#DEBHELPER#" in text and "set -e" in text
