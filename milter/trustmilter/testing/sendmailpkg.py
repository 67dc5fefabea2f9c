"""Debian's Sendmail for the tests: downloaded and unpacked, never installed.

Debian's ``sendmail`` and ``postfix`` packages conflict (each is the MTA),
and the suite needs Postfix. `fetch()` downloads ``sendmail-bin`` and
``sendmail-cf`` (and the two small libraries they need that a Postfix host
may lack) with ``apt-get download`` and unpacks them with ``dpkg-deb -x``
into a cache directory, ``~/.cache/trustmilter-test/sendmail`` or
``$TRUSTMILTER_SENDMAIL_CACHE``, once per machine. ``packaging/install.sh
--test`` runs it before the suite:

    python -m trustmilter.testing.sendmailpkg fetch

DIAGNOSTICS: `SendmailPackageError` with apt's or dpkg-deb's output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# sendmail-bin links liblockfile1 and libwrap0; unpacked beside it, they are
# found through LD_LIBRARY_PATH (see `library_dirs`).
PACKAGES = ("sendmail-bin", "sendmail-cf", "liblockfile1", "libwrap0")
SENDMAIL_BINARY = Path("usr/libexec/sendmail/sendmail")
CF_DIR = Path("usr/share/sendmail/cf")
APT_TIMEOUT = 300.0


class SendmailPackageError(RuntimeError):
    """apt-get or dpkg-deb failed; carries their output."""


def default_cache() -> Path:
    """Where `fetch()` unpacks: $TRUSTMILTER_SENDMAIL_CACHE, else under ~/.cache."""
    configured = os.environ.get("TRUSTMILTER_SENDMAIL_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "trustmilter-test" / "sendmail"


def unpacked(cache: Path | None = None) -> Path | None:
    """The prefix Sendmail is unpacked in, if a `fetch()` completed there."""
    prefix = (cache or default_cache()) / "prefix"
    if (prefix / SENDMAIL_BINARY).is_file() and (prefix / CF_DIR / "m4" / "cf.m4").is_file():
        return prefix
    return None


def library_dirs(prefix: Path) -> list[Path]:
    """The prefix's multiarch library directories (usr/lib/x86_64-linux-gnu, ...)."""
    return sorted(prefix.glob("usr/lib/*-linux-gnu*"))


def fetch(cache: Path | None = None) -> Path:
    """Download and unpack Sendmail into `cache` unless it is there; the prefix.

    Set-ID bits are cleared (the rig runs Sendmail as root anyway), so that
    the dynamic loader honours LD_LIBRARY_PATH for the unpacked libraries.
    """
    cache = cache or default_cache()
    ready = unpacked(cache)
    if ready is not None:
        return ready
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as scratch:
        downloads = Path(scratch) / "debs"
        downloads.mkdir()
        _apt_download(downloads)
        staging = Path(scratch) / "prefix"
        for deb in sorted(downloads.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(staging)])
        _clear_set_id_bits(staging)
        if unpacked(cache) is None:
            # An incomplete prefix (an interrupted run) goes; one that another
            # run completed meanwhile stays, and is as good as ours.
            shutil.rmtree(cache / "prefix", ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.rename(cache / "prefix")
    prefix = unpacked(cache)
    if prefix is None:
        raise SendmailPackageError(f"{', '.join(PACKAGES)} unpacked, but no Sendmail in {cache}")
    return prefix


def _apt_download(into: Path) -> None:
    """apt-get download PACKAGES into `into`, after an apt-get update if the lists are stale."""
    # Root downloads into a directory the _apt user cannot enter: say that
    # this is meant, instead of apt warning about it.
    download = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", *PACKAGES]
    try:
        _run(download, cwd=into)
    except SendmailPackageError:
        _run(["apt-get", "-q", "update"])
        _run(download, cwd=into)


def _clear_set_id_bits(root: Path) -> None:
    for path in root.rglob("*"):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
            path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))


def _run(argv: Sequence[str], *, cwd: Path | None = None) -> None:
    done = subprocess.run(
        list(argv), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
        timeout=APT_TIMEOUT, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        raise SendmailPackageError(f"{' '.join(argv)} exited {done.returncode}:\n{output}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trustmilter.testing.sendmailpkg fetch``: unpack Sendmail for the tests."""
    parser = argparse.ArgumentParser(prog="python -m trustmilter.testing.sendmailpkg")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("--cache", type=Path, default=None,
                        help="where to unpack (default: $TRUSTMILTER_SENDMAIL_CACHE "
                             "or ~/.cache/trustmilter-test/sendmail)")  # fmt: skip
    options = parser.parse_args(argv)
    try:
        prefix = fetch(options.cache)
    except (SendmailPackageError, OSError, subprocess.TimeoutExpired) as error:
        print(f"cannot fetch Sendmail for the tests: {error}", file=sys.stderr)
        return 1
    print(f"Sendmail for the tests: {prefix / SENDMAIL_BINARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
