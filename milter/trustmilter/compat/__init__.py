"""Every replacement of library code, under a version contract.

dkimpy, pyspf, authres and the standard library's email package have
functions that are slow or super-linear on what a sender writes, and pyspf
asks DNS through a module global. The modules of this package replace or
reach into them, each entry a `Patch` (patches.py) that names the
distribution and versions it was written for and the sha256 of the code it
replaces. Nothing outside this package touches those internals.

`install()` runs at start-up (App.build, and the commands that parse
strangers' mail or evaluate SPF): a patch that does not fit the installed
library gets one log line and the original is kept where that only costs
speed or linear time, or start-up is refused (StartupError) where the
milter depends on it. Never a silent half-patch. `python -m
trustmilter.compat` prints the status and the fingerprints for an upgrade.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from trustmilter.compat import authres, dkimpy, pyspf, stdlib_email
from trustmilter.compat.patches import Patch
from trustmilter.startup import StartupError

log = logging.getLogger(__name__)

REGISTRY: tuple[Patch, ...] = (
    *pyspf.PATCHES,
    *dkimpy.PATCHES,
    *stdlib_email.PATCHES,
    *authres.PATCHES,
)


def original(name: str) -> object:
    """The library's own object a patch replaces, by its name (``dkim.select_headers``),
    as it was before anything was installed: what the equivalence tests compare with."""
    for patch in REGISTRY:
        if patch.name == name:
            return patch.original
    raise KeyError(name)


def verify(patches: Sequence[Patch] | None = None) -> list[str]:
    """One line per patch (of the registry) that does not fit the installed
    libraries; empty when all fit."""
    return [
        f"{p.name}: {reason}" for p in _chosen(patches) if (reason := p.verify()) is not None
    ]


def status(patches: Sequence[Patch] | None = None) -> list[str]:
    """One line per patch (of the registry): what start-up does with it here."""
    return [f"{p.name}: {_decision(p)}" for p in _chosen(patches)]


def _chosen(patches: Sequence[Patch] | None) -> Sequence[Patch]:
    return REGISTRY if patches is None else patches


def _decision(patch: Patch, strict: bool = True) -> str:
    reason = patch.verify()
    if reason is None:
        return "in place" if patch.replacement is not None else "relied on, unchanged"
    if patch.required and strict:
        return f"{reason}: refusing to start"
    return f"{reason}: keeping the original ({patch.lost})"


def install(patches: Sequence[Patch] | None = None, *, strict: bool = True) -> None:
    """Apply every patch (of the registry) that fits the installed libraries (idempotent).

    A safe-to-skip mismatch logs one warning and keeps the original. A
    required one logs one error; with `strict` start-up stops (StartupError
    naming every required mismatch, after nothing was applied), without it
    the original is kept too.
    """
    refused: list[str] = []
    fitting: list[Patch] = []
    for patch in _chosen(patches):
        if patch.verify() is None:
            fitting.append(patch)
            continue
        line = f"compat: {patch.name}: {_decision(patch, strict)}"
        if patch.required:
            log.error("%s", line)
            refused.append(line)
        else:
            log.warning("%s", line)
    if refused and strict:
        raise StartupError("; ".join(refused))
    for patch in fitting:
        patch.apply()
