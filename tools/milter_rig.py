"""What the commit tools share: a commit's source tree, the benchmark corpus, its daemon.

Only the command line (``python -m trustmilter run``) and the milter protocol
are used to drive a commit's code, so the tools work on any commit whose
internals differ from this one's. The corpus, the DNS server and the milter
client are this checkout's (`trustmilter.bench`, `trustmilter.testing`): the
instruments stay the same while the measured trees change.

- `source_tree` exports a commit with ``git archive`` (no worktree left
  registered in the repository) or takes a directory as it is, and compiles
  its modules once so that every run of it starts from the same .pyc files.
- `load_corpus` makes the seeded corpus or reads it back from a pickle: the
  DKIM keys are new on every `make_corpus` call, so both commits (and both
  runs of a callgrind measurement) must see the one pickled corpus.
- `Daemon` runs a tree's ``trustmilter run`` under ``PYTHONPATH=<tree>/milter``
  with a fixed hash seed, in its own process group, its output in a file.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import pickle
import re
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from trustmilter.bench.client import MilterClient, MilterProtocolError, Negotiated
from trustmilter.bench.corpus import Corpus, make_corpus
from trustmilter.bench.run import tree_pids
from trustmilter.config.socket import parse_socket
from trustmilter.testing.daemon import free_port

REPO = Path(__file__).resolve().parent.parent
AUTHSERV_ID = "mx.bench.example.org"
# Python's str hashes are salted per process; a fixed seed makes set and dict
# orders (and so any output built from them) the same in every run.
HASH_SEED = "0"
STOP_TIMEOUT = 60.0  # seconds from SIGTERM to SIGKILL (callgrind writes its file at exit)
_LISTENING = re.compile(r"listening on .*\bprocess (\d+)\)")


class RigError(Exception):
    """A tree could not be exported, or its daemon did not start or stop."""


@dataclass(frozen=True, slots=True)
class SourceTree:
    """A source tree to run: `root` holds ``milter/trustmilter``."""

    label: str  # what the user named: a commit-ish or a directory
    root: Path
    commit: str  # the full hash, or "" for a directory taken as it is

    @property
    def package_path(self) -> Path:
        return self.root / "milter"


def _git(*args: str, repo: Path) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RigError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def source_tree(spec: str, into: Path, repo: Path = REPO) -> SourceTree:
    """`spec` as a runnable tree: a directory as is, else a commit exported under `into`."""
    as_dir = Path(spec)
    if as_dir.is_dir() and (as_dir / "milter" / "trustmilter").is_dir():
        tree = SourceTree(spec, as_dir.resolve(), "")
    else:
        commit = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}", repo=repo)
        root = into / commit[:12]
        if not root.exists():
            root.mkdir(parents=True)
            archive = root.with_suffix(".tar")
            with archive.open("wb") as out:
                done = subprocess.run(["git", "-C", str(repo), "archive", commit],
                                      stdout=out, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise RigError(f"git archive {commit}: {done.stderr.decode(errors='replace')}")
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
            archive.unlink()
        tree = SourceTree(spec, root, commit)
    if not compileall.compile_dir(str(tree.package_path), quiet=1):
        raise RigError(f"{tree.label}: its modules do not compile")
    return tree


def daemon_environment(tree: SourceTree) -> dict[str, str]:
    """This environment, with `tree`'s package first on the path and a fixed hash seed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree.package_path)
    env["PYTHONHASHSEED"] = HASH_SEED
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def imported_from(tree: SourceTree) -> str:
    """Where `tree`'s daemon will import trustmilter from, and its version;
    RigError unless that is `tree` itself (an installed copy would shadow it)."""
    probe = "import trustmilter; print(trustmilter.__file__); print(trustmilter.__version__)"
    done = subprocess.run([sys.executable, "-c", probe], env=daemon_environment(tree),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RigError(f"{tree.label}: cannot import trustmilter:\n{done.stderr}")
    path, version = done.stdout.split()
    if not Path(path).resolve().is_relative_to(tree.package_path.resolve()):
        raise RigError(f"{tree.label}: trustmilter is imported from {path}, not from the tree")
    return f"{path} (version {version})"


def load_corpus(path: Path | None, *, seed: int, messages: int, domains: int) -> Corpus:
    """The corpus pickled at `path` if there is one; else a new one, pickled there."""
    if path is not None and path.exists():
        with path.open("rb") as stored:
            corpus = pickle.load(stored)  # our own file, written below
        if not isinstance(corpus, Corpus):
            raise RigError(f"{path}: not a pickled benchmark corpus")
        return corpus
    corpus = make_corpus(seed, messages, domains)
    if path is not None:
        with path.open("wb") as out:
            pickle.dump(corpus, out)
    return corpus


# SOAs with a day-long negative TTL (RFC 2308 §5: min(SOA TTL, MINIMUM)) for
# every zone the corpus asks about. Without them the test DNS server's
# made-up SOA gives 300 s, less than a cold pass under callgrind can take: a
# cached NXDOMAIN or NODATA would expire before its message came round warm,
# be asked again, and make the count depend on how loaded the machine was.
_LONG_NEGATIVE_TTL_ZONES = ("example.com", "example.net", "example.org", "in-addr.arpa")


def served_zone(corpus: Corpus) -> str:
    """The corpus zone as the tools serve it: with long-lived negative answers."""
    soas = [f"{zone}. 86400 IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 "
            "604800 86400" for zone in _LONG_NEGATIVE_TTL_ZONES]
    return corpus.zone + "\n".join(soas) + "\n"


def policy_text(nameserver: str, workdir: Path, *, dns_timeout: float = 1.0) -> str:
    """`trustmilter bench`'s policy: the shipped defaults except the DNS server
    (ours, only), stderr logging, a fresh SQLite state in `workdir`, one
    process, and rate tiers too high to trip on a corpus that repeats senders."""
    return (
        f"authserv_id: {AUTHSERV_ID}\n"
        "dns:\n"
        f"  nameservers: ['{nameserver}']\n"
        f"  timeout: {dns_timeout}\n"
        f"  lifetime: {dns_timeout * 3}\n"
        "milter:\n"
        "  processes: 1\n"
        "logging:\n"
        "  destination: stderr\n"
        "state:\n"
        "  backend: sqlite\n"
        f"  sqlite_path: '{workdir / 'state.sqlite3'}'\n"
        "checks:\n"
        "  rate: {quarantine_after: 1000000, reject_after: 2000000}\n"
    )


class Daemon:
    """One tree's ``trustmilter run`` on a free loopback port; `prefix` runs it under a tool."""

    def __init__(self, tree: SourceTree, workdir: Path, nameserver: str, *,
                 prefix: tuple[str, ...] = (), dns_timeout: float = 1.0) -> None:
        self.tree = tree
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.policy = workdir / "policy.yaml"
        self.policy.write_text(policy_text(nameserver, workdir, dns_timeout=dns_timeout))
        self.log = workdir / "daemon.log"
        self.port = free_port()
        self.spec = parse_socket(f"inet:{self.port}@127.0.0.1")
        self.prefix = prefix
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, client: MilterClient, timeout: float) -> Negotiated:
        """Start it; its option negotiation once it answers (RigError if it never does)."""
        argv = [*self.prefix, sys.executable, "-m", "trustmilter", "run", "--policy",
                str(self.policy), "--socket", str(self.spec), "--foreground-log"]
        with self.log.open("wb") as output:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=daemon_environment(self.tree), cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RigError(f"{self.tree.label}: the daemon exited at start:\n{self.tail()}")
            try:
                return client.negotiate()
            except (OSError, MilterProtocolError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RigError(f"{self.tree.label}: not listening after {timeout:g} s:\n"
                                   f"{self.tail()}") from None
                time.sleep(0.2)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_text().splitlines()[-lines:])
        return ""

    def milter_pid(self) -> int:
        """The milter process's pid, from its "listening on ... process N" line."""
        found = _LISTENING.search(self.log_text())
        if found is None:
            raise RigError(f"{self.tree.label}: no 'listening on' line in the log")
        return int(found.group(1))

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit status (negative: killed after the timeout)."""
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            for pid in tree_pids(process.pid):  # the milter runs in a process group of its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(timeout=10)
            return -signal.SIGKILL
