"""What a reload changed, and what of it waits for a restart, in one log line.

The settings are compared as the file writes them (config/dump.py: inline
policy keys at the top level), key by key: ``thresholds.quarantine``,
``scores.dkim.fail``, ``rules.dmarc-reject`` (a list of named entries is
compared entry by entry, by name), ``milter.processes``.

Some settings are fixed when the milter starts (the socket, the processes
and their threads, the state store, metrics, logging): a reload takes the
rest. Whether one of them "takes effect at the next restart" is decided
against the values the milter *runs with* — those of its start — not the
previous file: a reload that puts them back says nothing about a restart,
and one that changes `milter.processes` says it needs one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trustmilter.config.dump import plain
from trustmilter.config.settings import Settings

# Read once at start-up by serve.py, apps.py or the state opener.
FIXED_AT_START = ("milter.socket", "milter.processes", "milter.check_threads",
                  "milter.large_message_slots", "state", "metrics", "logging")
# Keys named in one line at most; the rest are counted.
MAX_NAMED = 12


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """The keys a reload changed (against the policy in force before it), and
    the fixed ones whose new values differ from those the milter runs with."""

    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]

    def line(self, source: str) -> str:
        """``policy reloaded from FILE: changed a, b; c takes effect at the next restart``."""
        text = f"policy reloaded from {source}: "
        text += f"changed {_names(self.changed)}" if self.changed else "no changes"
        if self.needs_restart:
            verb = "takes" if len(self.needs_restart) == 1 else "take"
            text += (f"; {_names(self.needs_restart)} {verb} effect at the next restart"
                     " (running with the values from start-up)")
        return text


def compare(running: Settings, previous: Settings, new: Settings) -> ReloadReport:
    """What `new` changes over `previous`, and what of `new` differs from `running`
    among the settings fixed at start-up."""
    changed = tuple(differences(plain(previous), plain(new)))
    pending = tuple(differences(plain(running), plain(new)))
    return ReloadReport(changed, tuple(key for key in pending if _fixed(key)))


def differences(before: Any, after: Any, path: str = "") -> Iterator[str]:
    """The dotted keys whose values differ, in the file's order."""
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in list(before) + [key for key in after if key not in before]:
            yield from differences(before.get(key), after.get(key), _join(path, str(key)))
        return
    if _named_entries(before) and _named_entries(after):
        old = {entry["name"]: entry for entry in before}
        new = {entry["name"]: entry for entry in after}
        names = list(old) + [name for name in new if name not in old]
        moved = [name for name in old if name in new]
        changed = [name for name in names if old.get(name) != new.get(name)]
        if not changed and moved != [name for name in new if name in old]:
            yield f"{path} (order)"
        yield from (_join(path, name) for name in changed)
        return
    yield path


def _named_entries(value: Any) -> bool:
    """A list of mappings, each with a unique `name` (the rules)."""
    if not isinstance(value, list) or not value:
        return False
    if not all(isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in value):
        return False
    return len({entry["name"] for entry in value}) == len(value)


def _fixed(key: str) -> bool:
    return any(key == fixed or key.startswith(fixed + ".") for fixed in FIXED_AT_START)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _names(keys: tuple[str, ...]) -> str:
    shown = ", ".join(keys[:MAX_NAMED])
    rest = len(keys) - MAX_NAMED
    return f"{shown} and {rest} more" if rest > 0 else shown
