"""trustmilter run as an unprivileged user from a test suite that runs as root.

Whatever serves HTTP must not run as root (the review page refuses to), so
a test starts it as uid 65534 (nobody). That user must be able to read
the interpreter, the trustmilter package and every library it imports —
and a checkout may sit anywhere (CI clones where it likes; a developer's
venv interpreter may live under root's home, as pyenv puts it, which is
0700). So `prepare_runtime` makes a copy that user can read, wherever the
checkout is:

- the package (the directory trustmilter is imported from) and the
  venv's site-packages are linked (hard links; copied where a link
  cannot be made or the file is not readable by others) into a fresh
  directory, without the editable install's .pth and finder files, which
  point back into the checkout;
- the interpreter is the venv's base interpreter if that user can run it,
  else Debian's ``/usr/bin/python3.X`` of the same minor version (same
  ABI: the compiled extensions in site-packages load in either);
- it runs with ``-S`` (no site-packages of its own, no .pth processing)
  and ``PYTHONPATH`` naming the copy, so it imports exactly what the tests
  import.

`prepare_runtime` proves the result by importing the page's modules as
that user, and raises `RuntimeUnavailable` saying why when no interpreter
can; the caller decides whether that skips or fails.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
# Modules the proof imports: the page, its server, its password hashing (a
# compiled extension) and the command line.
PROOF_IMPORTS = ("trustmilter.cli", "trustmilter.review.app", "trustmilter.review.serve",
                 "argon2")
PROOF_TIMEOUT = 120.0
# Variables of the tests' environment that would send the copy's
# interpreter elsewhere.
DROPPED_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE",
                     "VIRTUAL_ENV", "PYTHONSAFEPATH")
_READABLE_BY_OTHERS = stat.S_IROTH


class RuntimeUnavailable(Exception):
    """No interpreter can run trustmilter as the user; says why."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """An interpreter and import path that `uid` can use; how to start trustmilter with them."""

    python: str
    path: tuple[str, ...]  # PYTHONPATH, first wins
    uid: int
    gid: int
    root: Path  # the copy, removed by the caller

    def argv(self, *arguments: str) -> list[str]:
        """``trustmilter ARGUMENTS`` as this runtime starts it."""
        return [self.python, "-S", "-m", "trustmilter", *arguments]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with the copy's import path."""
        environment = {name: value for name, value in (os.environ if base is None
                                                       else base).items()
                       if name not in DROPPED_VARIABLES}
        environment.update(PYTHONPATH=os.pathsep.join(self.path), PYTHONNOUSERSITE="1",
                           PYTHONDONTWRITEBYTECODE="1")
        return environment

    def process_options(self) -> dict[str, object]:
        """subprocess keyword arguments that drop to `uid` (and its group, nothing more)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "env": self.env()}


def prepare_runtime(root: Path, uid: int = NOBODY, gid: int = NOBODY,
                    package: Path | None = None,
                    site_packages: Iterable[Path] | None = None) -> Runtime:
    """Copy the package and the venv's site-packages under `root` (which must exist and
    be root's alone) and find an interpreter `uid` can run them with."""
    package = package or _package_directory()
    sites = list(site_packages) if site_packages is not None else _site_packages()
    root.chmod(0o755)
    source = root / "src"
    source.mkdir(mode=0o755)
    _link_tree(package, source / package.name)
    path = [str(source)]
    for number, site in enumerate(dict.fromkeys(sites)):
        target = root / f"site{number}"
        _link_tree(site, target)
        path.append(str(target))
    reasons: list[str] = []
    for python in _interpreters():
        runtime = Runtime(python, tuple(path), uid, gid, root)
        problem = _proof(runtime)
        if problem is None:
            return runtime
        reasons.append(f"{python}: {problem}")
    raise RuntimeUnavailable(f"uid {uid} cannot run trustmilter with any interpreter: "
                             + "; ".join(reasons or ["no candidate interpreter"]))


def _package_directory() -> Path:
    import trustmilter

    return Path(trustmilter.__file__).resolve().parent


def _site_packages() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[name]) for name in ("purelib", "platlib") if Path(paths[name]).is_dir()]


def _interpreters() -> list[str]:
    """The venv's base interpreter, then Debian's of the same minor version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", "") or sys.executable
    found = [os.path.realpath(base), f"/usr/bin/python{version}"]
    return [python for python in dict.fromkeys(found) if os.access(python, os.X_OK)]


def _editable_leftover(name: str) -> bool:
    """The editable install's files: they point the interpreter back into the checkout."""
    return name.endswith(".pth") or name.startswith("__editable__")


def _link_tree(source: Path, target: Path) -> None:
    """`source` re-created at `target`: directories 0755, files hard-linked or copied
    readable by everyone, the editable install's leftovers left out."""
    target.mkdir(mode=0o755)
    for directory, subdirectories, files in os.walk(source):
        here = target / os.path.relpath(directory, source)
        for name in subdirectories:
            (here / name).mkdir(mode=0o755, exist_ok=True)
        for name in files:
            if _editable_leftover(name) and directory == str(source):
                continue
            _link_file(Path(directory, name), here / name)


def _link_file(source: Path, target: Path) -> None:
    status = source.lstat()
    if stat.S_ISLNK(status.st_mode):
        target.symlink_to(os.readlink(source))
        return
    if status.st_mode & _READABLE_BY_OTHERS:
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another file system, or links forbidden: copy
    shutil.copy2(source, target)
    target.chmod(0o644 | (0o111 if status.st_mode & stat.S_IXUSR else 0))


def _proof(runtime: Runtime) -> str | None:
    """None when `runtime` imports the page as its user, else why not (one line)."""
    code = ("import sys, importlib\n"
            f"assert sys.version_info[:2] == {tuple(sys.version_info[:2])!r}, sys.version\n"
            f"for name in {PROOF_IMPORTS!r}: importlib.import_module(name)\n")
    try:
        done = subprocess.run([runtime.python, "-S", "-c", code], capture_output=True,
                              text=True, timeout=PROOF_TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL,
                              **runtime.process_options())  # type: ignore[call-overload]
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"
