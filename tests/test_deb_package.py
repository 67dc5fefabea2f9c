"""The Debian package: built, installed on this machine, used, removed and purged.

It installs a system package, so it runs only under CI=true as root (CI
must run it: anything in the way fails there) or when a developer asks
with TRUSTMILTER_TEST_DEB=1 as root; otherwise it is skipped. It never
touches an existing installation: a trustmilter package already
installed, or an /etc/trustmilter it did not make, stops it. A
/var/lib/trustmilter left by earlier runs as root is moved aside and put
back afterwards.

What it covers, with no systemd (CI has no init system): packaging/
build-deb.sh builds the .deb from this tree; `apt-get install ./...deb`
installs it (the postinst creates the user, sets the policy's
permissions, makes /var/lib/trustmilter and prints the Postfix lines);
/usr/bin/trustmilter, the man pages, the conffile and the units are where
they belong (the review page's installed but not enabled); `policy check` passes on the shipped policy; the installed
`check` runs every library of the package's own environment (DKIM, SPF,
DMARC, answered from a DNS fixture file, not the network). The daemon is
started the way the installed unit starts it (its ExecStart, User, Group,
UMask and RuntimeDirectory, plus --foreground-log to read its log): it
serves one message from a private Postfix on loopback over the unit's unix
socket, with the shipped policy (a loopback client is a trusted network
there, so no DNS is asked), writes its state under /var/lib/trustmilter
as its own user, and the admin commands run as root find its policy and
store. Not covered: systemd itself (enable, start, reload, the hardening).
Then `apt-get remove` keeps the policy and the state, and `apt-get purge`
removes both and keeps the system user.

The steps depend on one another and run in file order.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import send, smtp_session
from trustmilter import __version__
from trustmilter.testing.postfix import PostfixInstance, postfix_unavailable

ROOT = Path(__file__).resolve().parent.parent
BIN = "/usr/bin/trustmilter"
POLICY = Path("/etc/trustmilter/policy.yaml")
STATE_DIR = Path("/var/lib/trustmilter")
UNIT = Path("/lib/systemd/system/trustmilter.service")
# The review page's units: installed, never enabled by the package.
REVIEW_UNITS = ("trustmilter-review.service", "trustmilter-review-helper.service",
                "trustmilter-review-digest.service", "trustmilter-review-digest.timer")
SOCKET = "/run/trustmilter/trustmilter.sock"
STEP_TIMEOUT = 600  # the build: a fresh virtual environment and pymilter compiled

pytestmark = pytest.mark.slow


def run(*argv: str, check: bool = True, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    """`argv` as an administrator runs it: from /, without this test session's environment."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT, check=False)
    if check:
        assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def installed_status() -> str:
    done = run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "trustmilter", check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def why_not_here() -> str | None:
    if os.geteuid() != 0:
        return "installing a Debian package needs root"
    if shutil.which("apt-get") is None:
        return "no apt-get: not a Debian system"
    if installed_status().startswith(("ii", "rc")):
        return "a trustmilter package is installed here already; this test leaves it alone"
    if POLICY.parent.exists():
        return f"{POLICY.parent} exists (an installation this test did not make)"
    return postfix_unavailable()


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The package, built from this tree, installed; purged again at the end."""
    if os.environ.get("CI") != "true" and os.environ.get("TRUSTMILTER_TEST_DEB") != "1":
        pytest.skip("installs and purges the Debian package on this machine: CI runs it; "
                    "TRUSTMILTER_TEST_DEB=1 (as root) runs it here")
    reason = why_not_here()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must test the Debian package: {reason}", pytrace=False)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    run("bash", str(ROOT / "packaging" / "build-deb.sh"), "--out", str(out), cwd=str(ROOT))
    (package,) = out.glob("trustmilter_*.deb")
    print(f"\nbuild-deb.sh: {time.monotonic() - started:.0f} s")
    kept = STATE_DIR.with_name(f"trustmilter.kept-by-test-{os.getpid()}")
    if STATE_DIR.exists():
        STATE_DIR.rename(kept)
    try:
        yield package
    finally:
        if installed_status().startswith(("ii", "rc", "i", "r")):
            run("apt-get", "purge", "-y", "trustmilter", check=False)
        shutil.rmtree("/run/trustmilter", ignore_errors=True)
        if kept.exists():
            shutil.rmtree(STATE_DIR, ignore_errors=True)
            kept.rename(STATE_DIR)


# ---- build and install ----------------------------------------------------------------


def test_the_package_is_named_for_its_version_and_architecture(deb: Path) -> None:
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert deb.name == f"trustmilter_{__version__}_{arch}.deb"
    fields = run("dpkg-deb", "--field", str(deb), "Depends").stdout
    assert "libmilter1.0.1" in fields and "python3.11" in fields  # found by dh_shlibdeps


def test_install_prints_the_postfix_lines_and_changes_nothing_of_postfix(deb: Path) -> None:
    main_cf = Path("/etc/postfix/main.cf")
    before = main_cf.read_bytes() if main_cf.exists() else None
    done = run("apt-get", "install", "-y", "--no-install-recommends", str(deb))
    assert installed_status().startswith("ii")
    output = done.stdout + done.stderr
    print(output)  # shown with -s, and with the failure
    assert "postconf -e 'smtpd_milters = unix:/run/trustmilter/trustmilter.sock'" in output
    assert "postconf -e 'milter_default_action = tempfail'" in output
    assert "postconf -F 'smtp/inet/chroot = n' 'cleanup/unix/chroot = n'" in output
    assert "systemctl enable --now trustmilter-review-helper trustmilter-review" in output
    assert "systemctl enable --now trustmilter-review-digest.timer" in output
    assert (main_cf.read_bytes() if main_cf.exists() else None) == before


def test_the_command_is_on_path(deb: Path) -> None:
    assert shutil.which("trustmilter", path="/usr/bin") == BIN
    assert run(BIN, "--version").stdout.strip() == f"trustmilter {__version__}"


def test_files_owners_and_modes(deb: Path) -> None:
    user = pwd.getpwnam("trustmilter")
    assert user.pw_shell in ("/usr/sbin/nologin", "/bin/false") and user.pw_uid < 1000
    policy = POLICY.stat()
    assert (policy.st_uid, grp.getgrgid(policy.st_gid).gr_name) == (0, "postfix")
    assert policy.st_mode & 0o777 == 0o640
    assert POLICY.read_bytes() == (ROOT / "policy.yaml").read_bytes()
    state = STATE_DIR.stat()
    assert (state.st_uid, state.st_mode & 0o777) == (user.pw_uid, 0o750)
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "trustmilter").stdout
    assert str(POLICY) in conffiles
    files = set(run("dpkg", "-L", "trustmilter").stdout.split())
    for page in (ROOT / "docs" / "man").glob("*.1"):
        assert f"/usr/share/man/man1/{page.name}.gz" in files
    assert "/usr/lib/trustmilter/venv/bin/python" in files
    unit = UNIT.read_text()
    assert re.search(r"^ExecStart=/usr/bin/trustmilter run ", unit, re.M)
    assert not [line for line in unit.splitlines()
                if "/opt/trustmilter" in line and not line.startswith("#")]
    # deb-systemd-helper enables it even where systemd does not run.
    assert Path("/etc/systemd/system/multi-user.target.wants/trustmilter.service").exists()
    # The review page's units are there, with the packaged command, and not enabled.
    for name in REVIEW_UNITS:
        path = UNIT.with_name(name)
        assert str(path) in files
        text = path.read_text()
        assert not [line for line in text.splitlines()
                    if "/opt/trustmilter" in line and not line.startswith("#")]
        if name.endswith(".service"):
            assert re.search(r"^ExecStart=/usr/bin/trustmilter review ", text, re.M), name
        assert not list(Path("/etc/systemd/system").glob(f"*.wants/{name}")), name
    review_dir = (STATE_DIR / "review").stat()
    assert (review_dir.st_uid, review_dir.st_mode & 0o777) == (user.pw_uid, 0o700)
    assert "/usr/share/doc/trustmilter/review.md.gz" in files or (
        "/usr/share/doc/trustmilter/review.md" in files)


def test_policy_check_passes_on_the_shipped_policy(deb: Path) -> None:
    assert run(BIN, "policy", "check", str(POLICY)).stdout == f"{POLICY}: ok\n"
    assert run(BIN, "policy", "check").stdout == f"{POLICY}: ok\n"  # found without naming it


def test_the_installed_check_runs_every_library(deb: Path, tmp_path: Path) -> None:
    """DKIM (dkimpy), SPF (pyspf), DMARC and DNS (dnspython) from the package's own venv."""
    key = rsa_key(1024)
    fixture = tmp_path / "dns.zone"
    fixture.write_text(
        'example.com.             300 IN TXT "v=spf1 ip4:192.0.2.10 -all"\n'
        "example.com.             300 IN MX  10 mail.example.com.\n"
        "example.com.             300 IN A   192.0.2.10\n"
        "mail.example.com.        300 IN A   192.0.2.10\n"
        "10.2.0.192.in-addr.arpa. 300 IN PTR mail.example.com.\n"
        '_dmarc.example.com.      300 IN TXT "v=DMARC1; p=reject"\n'
        "example.org.             300 IN MX  10 mx.example.org.\n"
        "mx.example.org.          300 IN A   198.51.100.25\n"
        + key_zone(key, "sel", "example.com"))
    eml = tmp_path / "m.eml"
    eml.write_bytes(sign(message(), key, "example.com"))
    out = run(BIN, "check", str(eml), "--ip", "192.0.2.10", "--helo", "mail.example.com",
              "--mail-from", "alice@example.com", "--rcpt", "support@example.org",
              "--dns-fixture", str(fixture)).stdout
    for result in ("dkim=pass", "spf=pass", "dmarc=pass", "iprev=pass"):
        assert result in out, out
    assert "verdict accept" in out


# ---- the daemon, as the unit starts it, with Postfix --------------------------------------


def unit_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            settings.setdefault(key.strip(), value.strip())  # the first of a repeated key
    return settings


@pytest.fixture
def daemon(deb: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    unit = unit_settings()
    user, group = unit["User"], unit["Group"]
    runtime = Path("/run") / unit["RuntimeDirectory"]  # what systemd makes before ExecStart
    runtime.mkdir(exist_ok=True)
    shutil.chown(runtime, user, group)
    runtime.chmod(int(unit["RuntimeDirectoryMode"], 8))
    log = tmp_path / "daemon.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--",
             *shlex.split(unit["ExecStart"]), "--foreground-log"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                 "RUNTIME_DIRECTORY": str(runtime)},
            cwd="/", stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            umask=int(unit["UMask"], 8), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        yield process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_the_daemon_serves_mail_from_postfix_as_the_unit_runs_it(
    daemon: tuple[subprocess.Popen[bytes], Path]
) -> None:
    _, log = daemon
    socket_stat = Path(SOCKET).stat()
    assert pwd.getpwuid(socket_stat.st_uid).pw_name == "trustmilter"
    assert grp.getgrgid(socket_stat.st_gid).gr_name == "postfix"
    assert socket_stat.st_mode & 0o777 == 0o660
    workdir = Path(tempfile.mkdtemp(prefix="trustmilter-deb-postfix-"))  # postfix enters it
    try:
        with PostfixInstance(workdir, milter_spec=f"unix:{SOCKET}") as postfix:
            with smtp_session(postfix.smtp_port, xclient=False) as smtp:  # from 127.0.0.1
                outcome = send(smtp, "alice@example.com", ["support@example.org"],
                               message(subject="through the package"))
            assert outcome.final.code == 250, outcome
            (delivered,) = postfix.wait_delivered(1)
            assert b"through the package" in delivered.raw
            queue_id = re.search(r"queued as (\S+)", outcome.final.text).group(1)  # type: ignore[union-attr]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    deadline = time.monotonic() + 10
    while f"{queue_id}: action=" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)
    verdict = next(line for line in log.read_text().splitlines() if f"{queue_id}: action=" in line)
    assert "action=accept" in verdict and "client_kind=trusted" in verdict
    # Its state, in the package's directory, as its own user.
    store = STATE_DIR / "state.sqlite3"
    assert pwd.getpwuid(store.stat().st_uid).pw_name == "trustmilter"


def test_admin_commands_find_the_daemons_policy_and_store(
    daemon: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    process, _ = daemon
    note = Path("/run/trustmilter/daemon.json").read_text()  # setpriv execs: same pid
    assert f'"pid": {process.pid}' in note and f'"policy": "{POLICY}"' in note
    done = run(BIN, "reputation", "list")
    assert done.stderr == f"policy: {POLICY}, state: sqlite {STATE_DIR}/state.sqlite3\n"
    assert done.stdout == "nothing learned yet\n"
    elsewhere = tmp_path / "policy.yaml"
    elsewhere.write_text(f"state:\n  sqlite_path: {tmp_path}/state.sqlite3\n")
    done = run(BIN, "bounces", "list", "--policy", str(elsewhere))
    assert done.stderr.splitlines()[0] == (
        f"trustmilter: warning: the running daemon (process {process.pid}) keeps its state in "
        f"sqlite {STATE_DIR}/state.sqlite3, not in sqlite {tmp_path}/state.sqlite3 "
        f"(give --policy {POLICY})")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    assert not Path("/run/trustmilter/daemon.json").exists()


# ---- remove, purge --------------------------------------------------------------------------


def test_remove_keeps_the_policy_and_the_state(deb: Path) -> None:
    run("apt-get", "remove", "-y", "trustmilter")
    assert installed_status().startswith("rc")  # removed, configuration files kept
    assert not Path(BIN).exists()
    assert POLICY.read_bytes() == (ROOT / "policy.yaml").read_bytes()
    assert (STATE_DIR / "state.sqlite3").exists()


def test_purge_removes_them_and_keeps_the_user(deb: Path) -> None:
    run("apt-get", "purge", "-y", "trustmilter")
    assert not installed_status().startswith(("ii", "rc"))  # dpkg forgot it
    assert not POLICY.parent.exists()
    assert not STATE_DIR.exists()
    assert run("dpkg-statoverride", "--list", str(POLICY), check=False).returncode != 0
    pwd.getpwnam("trustmilter")  # a system user stays (Debian policy); deluser removes it
