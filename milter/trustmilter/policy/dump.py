"""The effective policy as YAML, every default filled in (``trustmilter policy show``).

The output loads back (load.py) to an equal Policy for any policy the
loader produced; a test keeps it so. It carries no comments: the shipped
policy.yaml is the commented version. Pure; raises nothing for a valid Policy.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import yaml

from trustmilter.policy.model import Policy

_HEADER = "# trustmilter effective policy: every setting, defaults filled in.\n"


def plain(value: Any) -> Any:
    """`value` as YAML-ready builtins: dataclass -> dict in field order, enum -> value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
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


def policy_to_yaml(policy: Policy) -> str:
    """The whole policy as a YAML document the loader reads back unchanged."""
    body = yaml.dump(plain(policy), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return _HEADER + body
