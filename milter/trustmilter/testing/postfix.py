"""A private, real Postfix on 127.0.0.1 for the test suite and the benchmark.

`PostfixInstance` writes its own ``main.cf``/``master.cf`` under a work
directory and runs Debian's Postfix from there, with its own queue, data
directory and log file, so it never touches (or needs) the system's
instance. It accepts mail for one domain (``example.org`` by default) on a
free loopback port and delivers it with virtual(8) into a Maildir under the
work directory, where `delivered()` reads it back. The milter under test is
Postfix's ``smtpd_milters``; ``milter_protocol = 6`` and the default macro
lists, which carry ``{i}`` (the queue ID) and ``{auth_authen}``.

Each smtpd process serves one SMTP session (``smtpd_max_use=1``), so a
reload takes effect for the very next session; a benchmark that would
rather not fork per session passes a larger value (reloads then wait
longer for old processes to leave).

XCLIENT is allowed from 127.0.0.0/8 (Postfix XCLIENT_README), so a test
presents any client address and HELO over a loopback connection.

Local submission: `sendmail()` runs Postfix's own sendmail(1) against the
private instance (``sendmail -C <config_dir>``), as a local program (a
help desk on the same host) submits mail: postdrop, pickup, cleanup and
the ``non_smtpd_milters``, which `set_milters(..., non_smtpd=True)` points
at the milter too. Postfix hands such mail to the milter as a connection
from localhost [127.0.0.1].

Nothing leaves the machine: smtpd does no reverse lookups
(``smtpd_peername_lookup = no``), the SMTP/LMTP clients may not use DNS,
and everything not for the local domain goes to the error(8) transport, so
not even a bounce is sent anywhere.

DIAGNOSTICS: `PostfixError` when Postfix will not start or a command
fails, with Postfix's own output. Starting needs root (Postfix's master
runs as root and drops privileges itself); `postfix_unavailable()` says
why this machine cannot run an instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
HOST = "127.0.0.1"
COMMAND_TIMEOUT = 30.0  # seconds for one postfix/postconf/postqueue command
START_TIMEOUT = 20.0
MILTER_DEFAULT_ACTIONS = ("accept", "reject", "tempfail", "quarantine")


class PostfixError(RuntimeError):
    """Postfix refused to start, stop or run a command; carries its output."""


def postfix_unavailable() -> str | None:
    """Why a private instance cannot run here (None: it can)."""
    if shutil.which("postfix", path=SBIN_PATH) is None:
        return "Postfix is not installed (apt-get install postfix; see packaging/install.sh --test)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master process runs as root)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the 'postfix' user does not exist (the Debian package creates it)"
    return None


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on host:port, False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


@dataclass(frozen=True, slots=True)
class DeliveredMessage:
    """One message virtual(8) wrote into the Maildir."""

    path: Path
    raw: bytes

    def header_names(self) -> list[str]:
        """Header field names from the top, as delivered (Return-Path and Delivered-To first)."""
        return [name for name, _ in self.headers()]

    def headers(self) -> list[tuple[str, str]]:
        """(name, unfolded value) pairs from the top of the message."""
        parsed = BytesHeaderParser().parsebytes(self.raw)
        return [(name, re.sub(r"\r?\n[ \t]+", " ", str(value))) for name, value in parsed.items()]

    def header(self, name: str) -> list[str]:
        """All values of the header field `name`, top first."""
        return [value for key, value in self.headers() if key.lower() == name.lower()]


class PostfixInstance:
    """One private Postfix: config, queue, data, Maildir and log under `workdir`.

    The domain `domain` (every local part) is delivered to
    ``workdir/mail/<domain>/``; the SMTP server listens on
    127.0.0.1:`smtp_port` (0: a free port, chosen now).
    """

    def __init__(
        self,
        workdir: Path,
        smtp_port: int = 0,
        milter_spec: str = "",
        milter_default_action: str = "tempfail",
        *,
        domain: str = "example.org",
        hostname: str = "mx.example.org",
        extra_main_cf: Mapping[str, str] | None = None,
        smtpd_max_use: int = 1,
    ) -> None:
        if milter_default_action not in MILTER_DEFAULT_ACTIONS:
            raise ValueError(f"milter_default_action must be one of {MILTER_DEFAULT_ACTIONS}")
        self.workdir = Path(workdir).resolve()
        self.smtp_port = smtp_port or free_port()
        self.domain = domain
        self.hostname = hostname
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.mail_dir = self.workdir / "mail"
        self.maillog = self.workdir / "maillog"
        self.smtpd_max_use = smtpd_max_use
        self._params: dict[str, str] = {
            "smtpd_milters": milter_spec,
            "milter_default_action": milter_default_action,
            **(extra_main_cf or {}),
        }
        self._master: subprocess.Popen[bytes] | None = None
        self._generation = 0  # counts configurations, shown in the SMTP banner

    # ---- life cycle ------------------------------------------------------

    def start(self) -> None:
        """Write the configuration and start Postfix; returns once SMTP answers."""
        if self._master is not None:
            raise PostfixError("this instance is already running")
        self._prepare_dirs()
        self._write_config()
        master_out = (self.workdir / "master.out").open("wb")
        # start-fg checks the installation (creating the queue tree) and keeps
        # the master attached to the script we wait for, so a master that dies
        # shows here at once.
        self._master = subprocess.Popen(
            ["postfix", "-c", str(self.config_dir), "start-fg"],
            stdin=subprocess.DEVNULL,
            stdout=master_out,
            stderr=subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,
        )
        master_out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while self._banner() != self._generation_banner():
            if self._master.poll() is not None or time.monotonic() > deadline:
                output = (self.workdir / "master.out").read_text(errors="replace")
                self.stop()
                raise PostfixError(f"Postfix did not start on port {self.smtp_port}:\n{output}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop Postfix and every process it started; safe to call twice."""
        script, self._master = self._master, None
        if script is None:
            return
        master_pid = self._master_pid()
        with contextlib.suppress(PostfixError, subprocess.TimeoutExpired):
            self._postfix("stop", check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            script.wait(timeout=10)
        # The master makes itself a session (and process group) leader, with
        # its children in that group: whatever is left of it ends for certain.
        groups = [script.pid]
        if master_pid and _command_of(master_pid) == "master":
            groups.append(master_pid)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            script.wait(timeout=5)

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def reload_with(self, **params: str) -> None:
        """Set main.cf parameters and reload; new SMTP sessions see them."""
        self._params.update(params)
        self._generation += 1
        self._write_config()
        if not self.running:
            return
        # What "postfix reload" does, without its slow integrity check: SIGHUP
        # to the master, which re-reads main.cf and master.cf. Old smtpd
        # processes exit only "whenever convenient" (master_conf.c) and may
        # take one more client, so probe until the new banner answers: each
        # smtpd serves one client (max_use=1), so every probe that meets an
        # old one ends it.
        os.kill(self._master_pid(), signal.SIGHUP)
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while self._banner() != self._generation_banner():
            if time.monotonic() > deadline:
                raise PostfixError("Postfix still answers with the old configuration")
            time.sleep(0.02)

    def set_milters(
        self, spec: str, default_action: str | None = None, *, non_smtpd: bool = False
    ) -> None:
        """Point ``smtpd_milters`` at `spec` (Postfix syntax, e.g. inet:127.0.0.1:PORT),
        and ``non_smtpd_milters`` too when `non_smtpd` (else it is emptied)."""
        params = {"smtpd_milters": spec, "non_smtpd_milters": spec if non_smtpd else ""}
        if default_action is not None:
            if default_action not in MILTER_DEFAULT_ACTIONS:
                raise ValueError(f"milter_default_action must be one of {MILTER_DEFAULT_ACTIONS}")
            params["milter_default_action"] = default_action
        self.reload_with(**params)

    def sendmail(self, raw: bytes, sender: str, recipients: Sequence[str]) -> None:
        """Submit `raw` with Postfix's sendmail(1) from `sender` ('' for the null
        sender) to `recipients`, as a local program does; PostfixError if it fails.

        sendmail(1) only drops the message into the queue: what the
        ``non_smtpd_milters`` said shows in the log (`queue_id_for`,
        `wait_for_log`) and in the Maildir, not here.
        """
        argv = ["sendmail", "-C", str(self.config_dir), "-i", "-f", sender or "<>",
                "--", *recipients]
        done = subprocess.run(argv, input=raw, capture_output=True, env=self._env(),
                              timeout=COMMAND_TIMEOUT, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise PostfixError(f"sendmail exited {done.returncode}:\n{output}")

    def queue_id_for(self, message_id: str, timeout: float = 10.0) -> str:
        """The queue ID cleanup(8) logged for the message with `message_id`
        (``<...>`` as written in the message)."""
        match = self.wait_for_log(rf"\]: ([0-9A-F]+): message-id={re.escape(message_id)}",
                                  timeout)
        return match.group(1)

    # ---- what happened ---------------------------------------------------

    def queue(self) -> list[dict[str, object]]:
        """Every queued message, as ``postqueue -j`` describes it (one dict each)."""
        out = self._run(["postqueue", "-c", str(self.config_dir), "-j"])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def hold_queue(self) -> list[dict[str, object]]:
        """The messages in the hold queue (where a milter's quarantine puts them)."""
        return [entry for entry in self.queue() if entry.get("queue_name") == "hold"]

    def delivered(self) -> list[DeliveredMessage]:
        """Messages virtual(8) delivered so far, oldest first."""
        maildir_new = self.mail_dir / self.domain / "new"
        if not maildir_new.is_dir():
            return []
        paths = sorted(maildir_new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [DeliveredMessage(path, path.read_bytes()) for path in paths]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no message is on its way (all delivered, held or deferred)."""
        deadline = time.monotonic() + timeout
        while any(e.get("queue_name") in ("maildrop", "incoming", "active") for e in self.queue()):
            if time.monotonic() > deadline:
                raise PostfixError(f"messages still in flight after {timeout}s: {self.queue()}")
            time.sleep(0.05)

    def reset(self) -> None:
        """Empty queue and Maildir, after what is in flight has landed."""
        self.wait_idle()
        self.clear_queue()
        self.clear_delivered()

    def clear_delivered(self) -> None:
        """Forget delivered messages (so the next test counts from zero)."""
        maildir_new = self.mail_dir / self.domain / "new"
        if maildir_new.is_dir():
            for path in maildir_new.iterdir():
                path.unlink()

    def clear_queue(self) -> None:
        """Delete every queued message (hold queue included)."""
        if self.running:
            self._run(["postsuper", "-c", str(self.config_dir), "-d", "ALL"], check=False)

    def wait_delivered(self, count: int, timeout: float = 10.0) -> list[DeliveredMessage]:
        """`delivered()` once it holds at least `count` messages; PostfixError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.delivered()
            if len(messages) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(messages) < count:
            raise PostfixError(
                f"{len(messages)} of {count} messages delivered after {timeout}s; "
                f"log tail:\n" + "\n".join(self.log_lines()[-20:])
            )
        return messages

    def log_lines(self) -> list[str]:
        """Postfix's own log (``maillog_file``), one entry per line."""
        try:
            return self.maillog.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first maillog line matching the regex `pattern`; PostfixError on timeout."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                match = compiled.search(line)
                if match is not None:
                    return match
            if time.monotonic() > deadline:
                raise PostfixError(f"no maillog line matches {pattern!r} after {timeout}s")
            time.sleep(0.05)

    # ---- internals -------------------------------------------------------

    def _master_pid(self) -> int:
        """The master's PID from its pid file (0 if there is none)."""
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def _generation_banner(self) -> str:
        """The greeting text for this configuration (changes on every reload_with)."""
        return f"{self.hostname} ESMTP trustmilter-test-{self._generation}"

    def _banner(self) -> str:
        """The greeting text a new SMTP connection gets now ("" if none)."""
        try:
            with socket.create_connection((HOST, self.smtp_port), timeout=5) as sock:
                greeting = sock.makefile("rb").readline().decode(errors="replace")
                sock.sendall(b"QUIT\r\n")
        except OSError:
            return ""
        return greeting[4:].strip()


    def _prepare_dirs(self) -> None:
        """Directories with the owners Postfix insists on.

        The queue belongs to root (postfix-script fixes the inside), the
        data directory and the Maildir to the postfix user. The work directory
        must be traversable by that user: virtual(8) opens the Maildir by its
        absolute path after dropping privileges.
        """
        postfix = pwd.getpwnam("postfix")
        for directory in (self.workdir, self.config_dir, self.queue_dir):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, 0, 0)
            directory.chmod(0o755)
        for directory in (self.data_dir, self.mail_dir):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, postfix.pw_uid, postfix.pw_gid)
            directory.chmod(0o700)

    def _main_cf(self) -> dict[str, str]:
        """main.cf as parameter -> value; `self._params` override."""
        postfix = pwd.getpwnam("postfix")
        base = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "smtpd_banner": self._generation_banner(),
            "mydomain": self.domain,
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # RFC-less Postfix extension: lets a loopback test client claim any
            # client address, name and HELO for the rest of the session.
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_client_restrictions": "",
            "smtpd_helo_restrictions": "",
            "smtpd_sender_restrictions": "",
            "smtpd_recipient_restrictions": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            # No DNS that could leave the machine: no client name lookups, no
            # MX lookups, and nothing is ever relayed (error(8) for all else).
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "default_transport": "error:this test instance sends no mail out",
            "relay_transport": "error:this test instance sends no mail out",
            "relay_domains": "",
            "relayhost": "",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(self.mail_dir),
            # texthash needs no postmap; "@domain" is virtual(8)'s catch-all key.
            "virtual_mailbox_maps": f"texthash:{self.config_dir / 'vmailbox'}",
            "virtual_uid_maps": f"static:{postfix.pw_uid}",
            "virtual_gid_maps": f"static:{postfix.pw_gid}",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
            "message_size_limit": "20000000",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.workdir),
            "smtpd_milters": "",
            "non_smtpd_milters": "",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
            "milter_connect_timeout": "5s",
            "milter_command_timeout": "30s",
            # Postfix's defaults, spelled out because trustmilter relies on
            # them: {i} (queue ID) and {auth_authen} (SASL login).
            "milter_mail_macros": (
                "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
            ),
            "milter_rcpt_macros": "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
            "milter_end_of_data_macros": "i",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "1000",
            "smtpd_hard_error_limit": "1000",
            "smtpd_junk_command_limit": "1000",
            "in_flow_delay": "0",
            "queue_run_delay": "10s",
            "minimal_backoff_time": "10s",
            "notify_classes": "",
            "default_process_limit": "50",
        }
        base.update(self._params)
        return base

    def _write_config(self) -> None:
        """main.cf, master.cf and the mailbox map (all rewritten each time)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        main_cf = "".join(f"{key} = {value}\n" for key, value in self._main_cf().items())
        (self.config_dir / "main.cf").write_text(main_cf)
        (self.config_dir / "master.cf").write_text(
            _master_cf(self.smtp_port, self.smtpd_max_use)
        )
        # Maildir ends in "/" (virtual(8)); every local part lands in one box.
        (self.config_dir / "vmailbox").write_text(f"@{self.domain} {self.domain}/\n")
        # The master re-reads a main.cf younger than a second or two until it
        # has aged, in case an editor is still writing it; ours is complete.
        aged = time.time() - 10
        for name in ("main.cf", "master.cf", "vmailbox"):
            os.utime(self.config_dir / name, (aged, aged))

    def _env(self) -> dict[str, str]:
        """Our environment minus MAIL_CONFIG and friends, which would override -c."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        env["PATH"] = SBIN_PATH + ":" + env.get("PATH", "")
        return env

    def _postfix(self, command: str, *, check: bool = True) -> str:
        return self._run(["postfix", "-c", str(self.config_dir), command], check=check)

    def _run(self, argv: list[str], *, check: bool = True) -> str:
        """Run a Postfix command; its output, or PostfixError when it fails and `check`."""
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=self._env(),
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        if check and done.returncode != 0:
            raise PostfixError(f"{' '.join(argv)} exited {done.returncode}:\n{out}")
        return done.stdout.decode(errors="replace")


def _command_of(pid: int) -> str:
    """The command name of process `pid` ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _master_cf(smtp_port: int, smtpd_max_use: int) -> str:
    """master.cf: smtpd on our port, the services delivery needs, nothing chrooted."""
    services = [
        f"{HOST}:{smtp_port} inet n - n - - smtpd -o max_use={smtpd_max_use}",
        "pickup    unix  n - n 60 1 pickup",
        "cleanup   unix  n - n - 0 cleanup",
        "qmgr      unix  n - n 300 1 qmgr",
        "rewrite   unix  - - n - - trivial-rewrite",
        "bounce    unix  - - n - 0 bounce",
        "defer     unix  - - n - 0 bounce",
        "trace     unix  - - n - 0 bounce",
        "verify    unix  - - n - 1 verify",
        "flush     unix  n - n 1000? 0 flush",
        "proxymap  unix  - - n - - proxymap",
        "showq     unix  n - n - - showq",
        "error     unix  - - n - - error",
        "retry     unix  - - n - - error",
        "discard   unix  - - n - - discard",
        "virtual   unix  - n n - - virtual",
        "anvil     unix  - - n - 1 anvil",
        "scache    unix  - - n - 1 scache",
        "postlog   unix-dgram n - n - 1 postlogd",
    ]
    return "\n".join(services) + "\n"
