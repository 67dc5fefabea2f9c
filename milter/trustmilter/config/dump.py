"""The effective settings as YAML, every default filled in (``trustmilter policy show``).

The output loads back (load.py) to equal Settings for any the loader
produced; a test keeps it so. It carries no comments: the shipped
policy.yaml is the commented version. Inline fields (`Settings.policy`)
are written at their parent's level, as the file has them. Pure; raises
nothing for valid Settings.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import yaml

from trustmilter.config.settings import Settings

_HEADER = "# trustmilter effective policy: every setting, defaults filled in.\n"


def plain(value: Any) -> Any:
    """`value` as YAML-ready builtins: dataclass -> dict in field order, enum -> value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            inner = plain(getattr(value, f.name))
            if f.metadata.get("inline"):
                fields.update(inner)
            else:
                fields[f.name] = inner
        return fields
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


class _Dumper(yaml.SafeDumper):
    """Block mappings, one-line lists of scalars: the shape of the shipped file."""


def _list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=not data)


_Dumper.add_representer(list, _list)
_Dumper.add_representer(dict, _dict)


def settings_to_yaml(settings: Settings) -> str:
    """The whole file as a YAML document the loader reads back unchanged."""
    body = yaml.dump(
        plain(settings), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return _HEADER + body
