"""A private, real Sendmail on 127.0.0.1 for the test suite.

Debian's Sendmail, unpacked by `trustmilter.testing.sendmailpkg` (never
installed: its package conflicts with Postfix's), run from that prefix.

`SendmailInstance` builds ``sendmail.cf`` with m4 from the unpacked cf
tree and the shipped ``packaging/sendmail/trustmilter.mc``, unchanged but
for its socket (the ``S=`` equate, pointed at the milter under test), and
runs ``sendmail -bD`` in the foreground on a free loopback port, with its
own queue under a work directory. Mail for one domain (``example.org``)
goes to the local mailer, here a shell script that writes one file per
recipient into ``workdir/mail/new`` (a ``Delivered-To:`` line on top, as
Postfix's virtual(8) writes), where `delivered()` reads it back. A
milter's quarantine keeps the message in Sendmail's queue, which
`quarantined()` lists with ``mailq -qQ``.

Sendmail asks the C library for names: its own, at every start before it
reads the .cf (a name found but not fully qualified, like a test
machine's "vm" in /etc/hosts, costs a 60-second sleep), and each
client's, reverse then forward. So that no lookup reaches the real DNS
and every answer is the test's, each Sendmail process runs in a private
mount namespace (``unshare --mount``) with a hosts file, an nsswitch.conf
(``hosts: files``) and a resolv.conf (127.0.0.1 only) of its own bound
over /etc's. That hosts file does not know the machine's name, so
Sendmail takes its own from the .cf (``Dj``) at once; the .cf's service
switch uses files only, so Sendmail resolves no MX record either.

Sendmail has no XCLIENT: the milter sees the address the client really
connects from. A test therefore connects from a loopback address
(``socket.bind(("127.0.0.10", 0))``, any of 127.0.0.0/8) and serves that
address in its DNS zone; `client_names` puts the matching name into the
hosts file, so Sendmail's own reverse lookup agrees with the zone.

DIAGNOSTICS: `SendmailError` when Sendmail will not start or a command
fails, with its output. It needs root (a mount namespace, and Sendmail's
daemon runs as root); `sendmail_unavailable()` says why this machine
cannot run an instance.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trustmilter.testing.postfix import DeliveredMessage, free_port
from trustmilter.testing.sendmailpkg import CF_DIR, SENDMAIL_BINARY, library_dirs

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
# Paths go into m4 quotes, sh words and Sendmail's A= argument list, none of
# which this rig escapes: it refuses what would need escaping.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+-]+\Z")
_FILTER_LINE = re.compile(
    r"^INPUT_MAIL_FILTER\(`(?P<name>[^']+)', `(?P<equates>[^']*)'\)dnl$", re.MULTILINE
)


class SendmailError(RuntimeError):
    """Sendmail would not start, or one of its commands failed; carries its output."""


def sendmail_unavailable() -> str | None:
    """Why a private instance cannot run here (None: it can, once fetched)."""
    if os.geteuid() != 0:
        return "a private Sendmail needs root (a mount namespace; its daemon runs as root)"
    for tool, package in (("m4", "m4"), ("unshare", "util-linux"), ("apt-get", "apt"),
                          ("dpkg-deb", "dpkg")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        error = probe.stderr.decode(errors="replace").strip()
        return f"this machine cannot make a private mount namespace (unshare --mount: {error})"
    return None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One message in Sendmail's queue, as ``mailq`` lists it."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    quarantine_reason: str | None


def parse_mailq(output: str) -> list[QueueEntry]:
    """The entries of ``mailq`` (``sendmail -bp``) output, in its order.

    An entry starts with its queue ID, size, time and sender; a QUARANTINE:
    line gives the reason; indented ``<address>`` lines are its recipients
    (a parenthesised line is a recipient's last error, and is skipped).
    """
    entries: list[QueueEntry] = []
    for block in re.split(r"^(?=\w{8,}[*X-]?\s+\d+\s)", output, flags=re.M)[1:]:
        head, *rest = block.splitlines()
        sender = re.search(r"<([^>]*)>\s*$", head)
        reasons = [line.split("QUARANTINE:", 1)[1].strip() for line in rest
                   if line.strip().startswith("QUARANTINE:")]  # fmt: skip
        recipients = tuple(line.strip()[1:-1] for line in rest if re.fullmatch(r"\s+<[^>]+>", line))
        entries.append(QueueEntry(
            queue_id=head.split()[0].rstrip("*X-"),
            sender=sender[1] if sender else "",
            recipients=recipients,
            quarantine_reason=reasons[0] if reasons else None,
        ))  # fmt: skip
    return entries


def with_filter_equates(mc_text: str, **equates: str) -> str:
    """`mc_text` with the INPUT_MAIL_FILTER equates in `equates` replaced (or added).

    Everything else of the shipped file (flags, timeouts, macro lists)
    stays as an administrator gets it. SendmailError if there is no
    INPUT_MAIL_FILTER line to change.
    """
    match = _FILTER_LINE.search(mc_text)
    if match is None:
        raise SendmailError("no INPUT_MAIL_FILTER(`name', `equates')dnl line in the .mc")
    current = dict(part.split("=", 1) for part in match["equates"].split(", "))
    current.update(equates)
    joined = ", ".join(f"{key}={value}" for key, value in current.items())
    line = f"INPUT_MAIL_FILTER(`{match['name']}', `{joined}')dnl"
    return mc_text[: match.start()] + line + mc_text[match.end():]


class SendmailInstance:
    """One private Sendmail: .cf, queue, mailbox and name files under `workdir`.

    `milter_socket` is the milter in libmilter's syntax (inet:PORT@HOST);
    `prefix` where Sendmail is unpacked (`sendmailpkg.fetch()`); `mc_path`
    the trustmilter.mc to build the .cf with (the shipped one);
    `client_names` maps the loopback addresses tests connect from to the
    names Sendmail's reverse (and forward) lookup returns for them.
    """

    def __init__(
        self,
        workdir: Path,
        milter_socket: str,
        *,
        prefix: Path,
        mc_path: Path,
        smtp_port: int = 0,
        domain: str = "example.org",
        hostname: str = "mx.example.org",
        client_names: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.prefix = Path(prefix).resolve()
        for path in (self.workdir, self.prefix):
            if not _PLAIN_PATH.match(str(path)):
                raise ValueError(f"{path}: the rig handles only paths of [A-Za-z0-9_./+-]")
        self.smtp_port = smtp_port or free_port()
        self.domain = domain
        self.hostname = hostname
        self.client_names = dict(client_names or {})
        self.mc_path = mc_path
        self.filter_equates = {"S": milter_socket}
        self.queue_dir = self.workdir / "queue"
        self.mail_dir = self.workdir / "mail"
        self.etc_dir = self.workdir / "etc"
        self.cf_path = self.workdir / "sendmail.cf"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._generation = 0  # counts starts, shown in the SMTP greeting

    # ---- life cycle ------------------------------------------------------

    def start(self) -> None:
        """Write the configuration and start Sendmail; returns once SMTP answers."""
        if self._daemon is not None:
            raise SendmailError("this instance is already running")
        self._generation += 1
        self._prepare()
        output = (self.workdir / "sendmail.out").open("wb")
        # -bD: the daemon in the foreground, our child; start_new_session: its
        # children (one per connection, one per delivery) share its group.
        self._daemon = subprocess.Popen(
            self._argv("-bD"), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        output.close()
        deadline = time.monotonic() + START_TIMEOUT
        while self._greeting() != self._expected_greeting():
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                text = (self.workdir / "sendmail.out").read_text(errors="replace")
                self.stop()
                raise SendmailError(f"Sendmail did not start on port {self.smtp_port}:\n{text}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop Sendmail and every process it started; safe to call twice."""
        daemon, self._daemon = self._daemon, None
        if daemon is None:
            return
        if daemon.poll() is None:
            daemon.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=STOP_TIMEOUT)
        # Whatever is left of the group (a delivery, a session) ends for certain.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=5)

    def restart_with(self, **equates: str) -> None:
        """(Re)start with these INPUT_MAIL_FILTER equates (e.g. S=..., F=) changed."""
        self.filter_equates.update(equates)
        self.stop()
        self.start()

    def __enter__(self) -> SendmailInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._daemon is not None and self._daemon.poll() is None

    # ---- what happened ---------------------------------------------------

    def queue(self, *, quarantined: bool = False) -> list[QueueEntry]:
        """``mailq``: the messages waiting in the queue, or with `quarantined`, the held ones."""
        flags = ["-bp", "-qQ"] if quarantined else ["-bp"]
        return parse_mailq(self._run_sendmail(*flags))

    def quarantined(self) -> list[QueueEntry]:
        """What milters quarantined (``mailq -qQ``), each with its reason."""
        return self.queue(quarantined=True)

    def delivered(self) -> list[DeliveredMessage]:
        """Messages the local mailer delivered so far, oldest first."""
        new = self.mail_dir / "new"
        if not new.is_dir():
            return []
        return [DeliveredMessage(path, path.read_bytes()) for path in sorted(new.iterdir())]

    def wait_delivered(self, count: int, timeout: float = 10.0) -> list[DeliveredMessage]:
        """`delivered()` once it holds at least `count` messages; SendmailError on timeout."""
        deadline = time.monotonic() + timeout
        while len(messages := self.delivered()) < count:
            if time.monotonic() > deadline:
                raise SendmailError(
                    f"{len(messages)} of {count} messages delivered after {timeout}s; "
                    f"queue:\n{self._run_sendmail('-bp')}"
                )
            time.sleep(0.05)
        return messages

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no message is on its way (a qf file is a message not yet delivered)."""
        deadline = time.monotonic() + timeout
        while any(self.queue_dir.glob("qf*")):
            if time.monotonic() > deadline:
                raise SendmailError(f"messages still queued after {timeout}s:\n"
                                    f"{self._run_sendmail('-bp')}")  # fmt: skip
            time.sleep(0.05)

    def reset(self) -> None:
        """Empty queue (quarantine included) and mailbox, after what is in flight has landed."""
        self.wait_idle()
        for path in self.queue_dir.iterdir():
            path.unlink()
        for path in (self.mail_dir / "new").iterdir():
            path.unlink()

    # ---- internals -------------------------------------------------------

    def _greeting_text(self) -> str:
        """The greeting's own text, for this start (changes on every restart)."""
        return f"trustmilter-test-{self._generation}"

    def _expected_greeting(self) -> str:
        # Sendmail puts "ESMTP" after the first word of the greeting itself.
        return f"{self.hostname} ESMTP {self._greeting_text()}"

    def _greeting(self) -> str:
        """The greeting text a new SMTP connection gets now ("" if none)."""
        try:
            with socket.create_connection((HOST, self.smtp_port), timeout=5) as sock:
                greeting = sock.makefile("rb").readline().decode(errors="replace")
                sock.sendall(b"QUIT\r\n")
        except OSError:
            return ""
        return greeting[4:].strip()

    def _argv(self, *args: str) -> list[str]:
        """The command that runs this instance's Sendmail with `args`: the
        wrapper (sendmail.sh) in a private mount namespace."""
        return ["unshare", "--mount", "--propagation", "private",
                "/bin/sh", str(self.workdir / "sendmail.sh"), *args]  # fmt: skip

    def _run_sendmail(self, *args: str) -> str:
        return _run(self._argv(*args))

    def _prepare(self) -> None:
        """Directories, name files, the local mailer, the wrapper and sendmail.cf."""
        for directory in (self.workdir, self.queue_dir, self.etc_dir,
                          self.mail_dir / "tmp", self.mail_dir / "new"):  # fmt: skip
            directory.mkdir(parents=True, exist_ok=True)
        # Sendmail refuses a queue directory others may write to.
        self.queue_dir.chmod(0o700)
        hosts = [f"{HOST}\t{self.hostname} localhost"]
        hosts += [f"{address}\t{name}" for address, name in self.client_names.items()]
        (self.etc_dir / "hosts").write_text("\n".join(hosts) + "\n")
        (self.etc_dir / "nsswitch.conf").write_text("hosts: files\n")
        (self.etc_dir / "resolv.conf").write_text(
            f"nameserver {HOST}\noptions attempts:1 timeout:1\n"
        )
        (self.etc_dir / "service.switch").write_text("hosts\tfiles\naliases\tfiles\n")
        (self.etc_dir / "aliases").write_text("")
        (self.workdir / "deliver.sh").write_text(_DELIVER_SH)
        (self.workdir / "deliver.sh").chmod(0o755)
        (self.workdir / "sendmail.sh").write_text(self._wrapper())
        (self.workdir / "trustmilter.mc").write_text(
            with_filter_equates(self.mc_path.read_text(), **self.filter_equates)
        )
        (self.workdir / "instance.mc").write_text(self._instance_mc())
        cf_dir = self.prefix / CF_DIR
        done = subprocess.run(
            ["m4", f"-D_CF_DIR_={cf_dir}/", str(cf_dir / "m4" / "cf.m4"),
             str(self.workdir / "instance.mc")],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        # cf.m4 reports its errors on stderr and still exits 0.
        if done.returncode != 0 or done.stderr.strip():
            raise SendmailError(f"m4 could not build sendmail.cf:\n{done.stderr.decode()}")
        self.cf_path.write_bytes(done.stdout)
        self.cf_path.chmod(0o644)

    def _wrapper(self) -> str:
        """sendmail.sh: bind our name files over /etc's, then exec Sendmail with our .cf."""
        libraries = ":".join(str(path) for path in library_dirs(self.prefix))
        binds = "".join(
            f"mount --bind {self.etc_dir / name} /etc/{name}\n"
            for name in ("hosts", "nsswitch.conf", "resolv.conf")
        )
        return (
            "# Run in a private mount namespace (unshare --mount): the binds are\n"
            "# this process's alone, and end with it.\n"
            "set -e\n"
            f"{binds}"
            f"LD_LIBRARY_PATH={libraries}\nexport LD_LIBRARY_PATH\n"
            f'exec {self.prefix / SENDMAIL_BINARY} -C {self.cf_path} "$@"\n'
        )

    def _instance_mc(self) -> str:
        """The instance's .mc: paths, port and delivery here, then the shipped trustmilter.mc."""
        w, etc = self.workdir, self.etc_dir
        return f"""\
divert(-1)
divert(0)dnl
VERSIONID(`trustmilter test instance')dnl
OSTYPE(`linux')dnl
define(`confEBINDIR', `{self.prefix / SENDMAIL_BINARY.parent}')dnl
define(`confDOMAIN_NAME', `{self.hostname}')dnl
define(`confSMTP_LOGIN_MSG', `$j {self._greeting_text()}')dnl
dnl Names and addresses from files only (etc/), never DNS: no MX lookups either.
define(`confSERVICE_SWITCH_FILE', `{etc / "service.switch"}')dnl
define(`confHOSTS_FILE', `{etc / "hosts"}')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0s')dnl
define(`ALIAS_FILE', `{etc / "aliases"}')dnl
define(`QUEUE_DIR', `{self.queue_dir}')dnl
define(`STATUS_FILE', `{w / "sendmail.st"}')dnl
define(`confPID_FILE', `{w / "sendmail.pid"}')dnl
dnl A busy test machine must not make Sendmail queue or refuse mail.
define(`confQUEUE_LA', `1000')dnl
define(`confREFUSE_LA', `1000')dnl
define(`confDELAY_LA', `0')dnl
dnl Every sender domain is unresolvable here (no DNS): that is trustmilter's call.
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`nocanonify')dnl
FEATURE(`no_default_msa')dnl
DAEMON_OPTIONS(`Family=inet, Name=MTA, Port={self.smtp_port}, Addr={HOST}')dnl
LOCAL_DOMAIN(`{self.domain}')dnl
dnl The local mailer: deliver.sh MAILDIR DOMAIN USER, as root (S), Return-Path (P),
dnl no From_ line (n); no passwd entry needed (-w), no aliases (-A).
define(`LOCAL_MAILER_PATH', `{w / "deliver.sh"}')dnl
define(`LOCAL_MAILER_ARGS', `deliver.sh {self.mail_dir} {self.domain} $u')dnl
define(`LOCAL_MAILER_FLAGS', `PSn')dnl
MODIFY_MAILER_FLAGS(`LOCAL', `-wA')dnl
include(`{w / "trustmilter.mc"}')dnl
MAILER(`local')dnl
dnl Without an SMTP mailer Sendmail refuses every remote MAIL FROM as unroutable.
MAILER(`smtp')dnl
"""


# The local mailer. Sendmail speaks SMTP to a mailer whose arguments lack
# $u, so the user is an argument; one process per recipient.
_DELIVER_SH = """\
#!/bin/sh
# deliver.sh MAILDIR DOMAIN USER < message: MAILDIR/new/<unique name>
set -eu
umask 077
tmp="$1/tmp/$$"
{ printf 'Delivered-To: %s@%s\\n' "$3" "$2"; cat; } > "$tmp"
mv "$tmp" "$1/new/$(date +%s%N).$$"
"""


def _run(argv: Sequence[str]) -> str:
    """Run a command; its stdout, or SendmailError with all its output when it fails."""
    done = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        raise SendmailError(f"{' '.join(argv)} exited {done.returncode}:\n{output}")
    return done.stdout.decode(errors="replace")
