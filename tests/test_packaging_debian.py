"""Cheap checks of the Debian packaging and the install scripts (no package is built here).

packaging/debian/ must agree with the rest of the tree: the version with
trustmilter's, the build dependencies with what build-deb.sh installs,
the packaged unit with packaging/trustmilter.service (debian/rules rewrites
only the command's path: run here with make, as dpkg-buildpackage would),
the postinst's Postfix lines with the snippet the package installs.
install.sh --link's one rule is run for real on scratch paths.
tests/test_deb_package.py builds, installs and purges the real package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trustmilter import __version__

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = ROOT / "packaging" / "debian"


def test_the_changelog_names_trustmilters_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert re.fullmatch(rf"trustmilter \({re.escape(__version__)}\) \w+; urgency=\w+", first)


def test_build_deb_installs_every_build_dependency() -> None:
    control = (DEBIAN / "control").read_text()
    field = re.search(r"^Build-Depends:(.*?)^\S", control, re.S | re.M).group(1)  # type: ignore[union-attr]
    names = {re.split(r"[\s(]", part.strip())[0] for part in field.split(",") if part.strip()}
    names = {"debhelper" if name == "debhelper-compat" else name for name in names}
    script = (ROOT / "packaging" / "build-deb.sh").read_text()
    listed = set(re.search(r"build_dependencies=\((.*?)\)", script, re.S).group(1).split())  # type: ignore[union-attr]
    assert names <= listed


@pytest.mark.parametrize("script", ["build-deb.sh", "install.sh", "test.sh"])
def test_the_scripts_are_bash_clean(script: str) -> None:
    subprocess.run(["bash", "-n", str(ROOT / "packaging" / script)], check=True, timeout=60)


@pytest.mark.parametrize("script", ["trustmilter.postinst", "trustmilter.postrm"])
def test_the_maintainer_scripts_are_sh_clean(script: str) -> None:
    subprocess.run(["sh", "-n", str(DEBIAN / script)], check=True, timeout=60)
    text = (DEBIAN / script).read_text()
    assert "#DEBHELPER#" in text and "set -e" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_the_packaged_unit_is_packaging_trustmilter_service_with_the_packaged_command(
    tmp_path: Path,
) -> None:
    (tmp_path / "packaging").mkdir()
    shutil.copy(ROOT / "packaging" / "trustmilter.service", tmp_path / "packaging")
    shutil.copytree(DEBIAN, tmp_path / "debian")
    subprocess.run(["make", "-s", "-f", "debian/rules", "execute_before_dh_installsystemd"],
                   cwd=tmp_path, check=True, timeout=60, capture_output=True)
    source = (ROOT / "packaging" / "trustmilter.service").read_text().splitlines()
    packaged = (tmp_path / "debian" / "trustmilter.service").read_text().splitlines()
    changed = [(a, b) for a, b in zip(source, packaged, strict=True) if a != b]
    rewritten = {b.partition("=")[0] for a, b in changed if not a.startswith("#")}
    assert rewritten == {"ExecStart", "Documentation"}
    (exec_start,) = [line for line in packaged if line.startswith("ExecStart=")]
    assert exec_start.startswith("ExecStart=/usr/bin/trustmilter run ")


def test_the_command_link_names_the_console_script() -> None:
    link = (DEBIAN / "trustmilter.links").read_text().split()
    assert link == ["usr/lib/trustmilter/venv/bin/trustmilter", "usr/bin/trustmilter"]
    assert "trustmilter = trustmilter.cli:main" in (ROOT / "setup.cfg").read_text()


def test_the_postinst_prints_the_snippet_the_package_installs() -> None:
    install = (DEBIAN / "trustmilter.install").read_text().splitlines()
    assert "packaging/postfix/main.cf usr/share/trustmilter/postfix/" in install
    assert "policy.yaml etc/trustmilter/" in install  # under /etc: a conffile
    postinst = (DEBIAN / "trustmilter.postinst").read_text()
    assert "snippet=/usr/share/trustmilter/postfix/main.cf" in postinst
    assert "postconf -F 'smtp/inet/chroot = n' 'cleanup/unix/chroot = n'" in postinst
    assert "postconf -e" in postinst and "/etc/postfix" not in postinst  # prints, never edits


def test_purge_removes_policy_and_state_and_remove_does_not() -> None:
    postrm = (DEBIAN / "trustmilter.postrm").read_text()
    purge = postrm[postrm.index("purge)"):postrm.index(";;")]
    assert "rm -rf /var/lib/trustmilter" in purge and "/etc/trustmilter" in purge
    assert "deluser" not in purge.replace("`deluser trustmilter`", "")


# ---- install.sh --link --------------------------------------------------------------------


def link(tmp_path: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", 'source "$1" && link_command "$2" "$3"', "test",
         str(ROOT / "packaging" / "install.sh"), str(tmp_path / "venv-trustmilter"), str(target)],
        capture_output=True, text=True, timeout=60, check=False)


def test_link_puts_the_command_on_path_and_replaces_only_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "bin" / "trustmilter"
    target.parent.mkdir()
    assert link(tmp_path, target).returncode == 0
    assert target.readlink() == tmp_path / "venv-trustmilter"
    target.unlink()
    target.symlink_to("/old/venv/bin/trustmilter")
    assert link(tmp_path, target).returncode == 0  # a new tree's venv replaces the old link
    assert target.readlink() == tmp_path / "venv-trustmilter"
    target.unlink()
    target.write_text("#!/bin/sh\n")  # someone else's command
    done = link(tmp_path, target)
    assert done.returncode == 1 and "not a symlink; left alone" in done.stderr
    assert target.read_text() == "#!/bin/sh\n"


def test_readme_gives_both_production_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash packaging/build-deb.sh && apt install ./trustmilter_*.deb" in readme
    assert "bash packaging/install.sh --link" in readme
