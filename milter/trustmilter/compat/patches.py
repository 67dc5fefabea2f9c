"""One replacement of library code, and the contract it was written under.

A `Patch` names what it replaces (an attribute of a module or class), the
distribution and versions it was written for, and the sha256 of the
original's source (`guards`: the replaced object itself, plus the library
code that calls it in the way the replacement relies on, named from the
owner's module). Assigning to a
module attribute always succeeds, so without this check an upstream rename
or rewrite would leave a replacement silently inert, or silently wrong.

The original is captured when the Patch is built, at import of the compat
module that declares it, before anything is installed: `verify()` and the
equivalence tests always see the library's own code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import re
import sys
from dataclasses import dataclass, field
from types import ModuleType

# What keeping the original costs, for the start-up line of a skipped patch.
LINEAR_TIME_LOST = "linear-time protection lost"
SPEED_LOST = "speed only"
# The `dist` of a patch of the standard library: versions are Python's.
PYTHON = "python"


class _Missing:
    """The original of an attribute the library no longer has."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


@dataclass(frozen=True)
class Patch:
    """`owner.attr` = `replacement`, valid for `dist` at `versions` with `fingerprint`.

    `replacement` None: nothing is replaced; the project's own code relies on
    the guarded library code (it writes attributes that code reads, say), and
    asks `holds()` before it does.
    `required`: the milter depends on the replacement for correct or safe
    behaviour; a mismatch refuses start-up. Otherwise the original is kept and
    `lost` says what that costs.
    """

    owner: ModuleType | type
    attr: str
    replacement: object | None
    dist: str
    versions: frozenset[str]
    fingerprint: str
    guards: tuple[str, ...] = ()
    required: bool = False
    lost: str = LINEAR_TIME_LOST
    original: object = field(init=False, repr=False, compare=False)
    _guarded: tuple[object, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        original = getattr(self.owner, self.attr, MISSING)
        module = inspect.getmodule(self.owner)
        guarded = tuple(_resolve(module, name) for name in self.guards)
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "_guarded", (original, *guarded))

    @property
    def name(self) -> str:
        """The replaced name as the library spells it: ``dkim.select_headers``."""
        owner = self.owner
        if isinstance(owner, ModuleType):
            return f"{owner.__name__}.{self.attr}"
        return f"{owner.__module__}.{owner.__qualname__}.{self.attr}"

    @functools.cached_property
    def actual_fingerprint(self) -> str | None:
        """sha256 of the installed originals' source; None if one cannot be read."""
        return fingerprint(self._guarded)

    def verify(self) -> str | None:
        """None when the patch fits the installed library, else why it does not."""
        if self.original is MISSING:
            return f"{self.name} no longer exists"
        version = installed_version(self.dist)
        if not version_accepted(version, self.versions):
            accepted = ", ".join(sorted(self.versions))
            return f"{self.dist} {version} not in {{{accepted}}}"
        if self.actual_fingerprint != self.fingerprint:
            short = (self.actual_fingerprint or "unreadable")[:12]
            return f"{self.dist} {version}: source differs from the one patched (sha256 {short})"
        return None

    def holds(self) -> bool:
        """Whether this patch fits the installed library (remembered per process)."""
        return _holds(self)

    def apply(self) -> None:
        """Put the replacement in place (idempotent); a no-op for a reliance."""
        if self.replacement is not None:
            setattr(self.owner, self.attr, self.replacement)


@functools.cache
def _holds(patch: Patch) -> bool:
    return patch.verify() is None


def _resolve(owner: object, dotted: str) -> object:
    """`owner.a.b` for "a.b", or MISSING."""
    value = owner
    for part in dotted.split("."):
        value = getattr(value, part, MISSING)
    return value


def fingerprint(objects: tuple[object, ...]) -> str | None:
    """sha256 over the source of each object (a compiled pattern: its text and
    flags; a module: its name); None when one is missing or has no readable source."""
    digest = hashlib.sha256()
    for obj in objects:
        if obj is MISSING:
            return None
        if isinstance(obj, re.Pattern):
            text = f"re.compile({obj.pattern!r}, {int(obj.flags)})"
        elif isinstance(obj, ModuleType):
            # A module the library imported (dkimpy's `re`): its name, not the
            # source of the standard library, which every Python release changes.
            text = f"module {obj.__name__}"
        else:
            try:
                text = inspect.getsource(obj)  # type: ignore[arg-type]
            except (OSError, TypeError):
                return None
        digest.update(text.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


def installed_version(dist: str) -> str:
    """The installed version of `dist` (Python's own for the standard library)."""
    if dist == PYTHON:
        return ".".join(str(part) for part in sys.version_info[:3])
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def version_accepted(version: str, accepted: frozenset[str]) -> bool:
    """`version` is one of `accepted`, or in a series of it ("3.11" takes "3.11.7")."""
    return any(version == v or version.startswith(v + ".") for v in accepted)
