"""The error a policy dataclass raises from `__post_init__` to name the bad field.

A configuration dataclass (the policy's own, or a check's `Config`) that
finds a bad value raises `InvalidField` with the path of the offending
field below itself, what it expected and what it got. The loader turns
that into ``FILE:LINE: KEY.PATH: expected WHAT, got GOT`` pointing at the
exact YAML line. A plain ValueError works too; it is reported at the line
of the dataclass's own mapping. This module imports nothing from the
project, so check modules can use it without import cycles.
"""

from __future__ import annotations


class InvalidField(ValueError):
    """A field value a configuration dataclass does not accept."""

    def __init__(self, path: tuple[str | int, ...], expected: str, got: object) -> None:
        self.path = path
        self.expected = expected
        self.got = got
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        super().__init__(f"{where}: expected {expected}, got {got!r}")
