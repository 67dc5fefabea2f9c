"""Read policy.yaml into `Settings`, or say in one line exactly what is wrong.

The YAML is composed into a node tree with the safe loader (never
constructed as arbitrary objects), then converted into the settings'
dataclasses by their type hints: nested dataclasses, ``tuple[X, ...]``,
``list[X]``, ``dict[str, X]``, ``X | None``, ``X | SomeDataclass`` (a
mapping is the dataclass, anything else X), Enum (by value), Literal,
bool, int (not bool), float (int accepted) and str. A YAML value of the
wrong type is an error, not a coercion: ``"3"`` is not a number and
``yes`` is not a string. Keys left out take the dataclass defaults; a
mapping-typed field (``scores``) is merged over its default, a list
(``rules``) replaces it; an empty section means all defaults. A field
marked ``metadata={"inline": True}`` (`Settings.policy`) is built from
the keys of its own dataclass found in the same mapping, so its keys sit
beside the others in the file and in error messages.

DIAGNOSTICS: every problem raises `ConfigError`, whose str() is one line:
``FILE:LINE: KEY.PATH: expected WHAT, got GOT``, or ``...: unknown key;
expected one of: ...`` (``...: no longer read: WHAT TO WRITE INSTEAD`` for a
key a section's `RETIRED_KEYS` names). YAML syntax errors, duplicate keys, bad UTF-8,
out-of-range numbers and unknown signal names are all reported that way.
Errors raised by a dataclass's `__post_init__` are placed at its line
(`InvalidField` names the field below it). Reading the file may raise
OSError, which is left to the caller.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trustmilter.config.errors import InvalidField
from trustmilter.config.settings import Settings

Path = tuple[str | int, ...]

# Values converted per document, aliases included: stops "billion laughs".
MAX_VALUES = 100_000
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"


class ConfigError(ValueError):
    """A policy file that cannot be used, with the place that is wrong."""

    def __init__(self, source: str, line: int, path: Path, message: str) -> None:
        self.source = source
        self.line = line
        self.path = path
        self.message = " ".join(message.split())  # one line, whatever the text
        super().__init__(str(self))

    def __str__(self) -> str:
        where = format_path(self.path)
        prefix = f"{self.source}:{self.line}: "
        return prefix + (f"{where}: {self.message}" if where else self.message)


def format_path(path: Path) -> str:
    """``checks.dnsbl.lists[0].weight`` from its parts."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """The settings in the file at `path`; raises ConfigError or OSError."""
    source = os.fspath(path)
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(source, line, (), "expected UTF-8 text, got invalid bytes") from None
    return parse_settings(text, source)


def parse_settings(text: str, source: str = "<policy>") -> Settings:
    """The settings `text` describes; `source` names it in error messages."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as error:
        line, problem = _syntax_error(text, error)
        raise ConfigError(source, line, (), f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:  # ReaderError: a character YAML does not allow
        position = getattr(error, "position", 0)
        line = text[:position].count("\n") + 1
        raise ConfigError(source, line, (), "YAML error: a non-printable character") from None
    settings: Settings = _Builder(source).convert(root, Settings, (), {})
    return settings


def _syntax_error(text: str, error: yaml.MarkedYAMLError) -> tuple[int, str]:
    """The line (from 1) and the wording of a YAML syntax error, said where the admin erred.

    Indentation is what goes wrong most in a hand-edited policy, and PyYAML
    notices it late. A key dedented by mistake is reported at the next line
    indented deeper than it ("did not find expected key"), after any
    comments and any value of its own between them: the line to fix is the
    nearest one above that is indented less. A line indented deeper than
    the ``key: value`` line before it continues that value, and PyYAML
    stops at its colon ("mapping values are not allowed"): either line may
    be the wrong one, so both are named.
    """
    mark = error.problem_mark or error.context_mark
    problem = error.problem or error.context or "cannot parse"
    if mark is None:
        return 1, problem
    lines = text.splitlines()
    found = lines[mark.line] if mark.line < len(lines) else ""
    if found[mark.column:mark.column + 1] == "\t":
        return mark.line + 1, f"{problem} (a tab: YAML indents with spaces only)"
    if (problem == "did not find expected key" and error.context == "while parsing a block mapping"
            and _indentation_used_elsewhere(lines, mark.line, mark.column)):
        # (An indentation no other line has marks that line itself as the odd one.)
        for number, indent in _content_above(lines, mark.line):
            if indent > mark.column:
                continue  # the value of a key further up
            if indent < mark.column:
                return number + 1, (f"this line is indented less than line {mark.line + 1} "
                                    "after it: is one of them misplaced?")
            break
    if problem.startswith("mapping values are not allowed"):
        indent = len(found) - len(found.lstrip(" "))
        for number, above in _content_above(lines, mark.line):
            key, colon, value = lines[number].partition(":")
            if above < indent and colon and value.strip() and not key.lstrip().startswith("-"):
                return mark.line + 1, (f"{problem}: this line is indented more than line "
                                       f"{number + 1} before it: is one of them misplaced?")
            break
    return mark.line + 1, problem


def _indentation_used_elsewhere(lines: list[str], line: int, column: int) -> bool:
    """Whether a line with content other than `line` is indented by `column` spaces."""
    return any(len(text) - len(text.lstrip(" ")) == column and text.strip()
               and not text.lstrip().startswith("#")
               for number, text in enumerate(lines) if number != line)


def _content_above(lines: list[str], line: int) -> Iterator[tuple[int, int]]:
    """(index, indentation) of each line above `line` with content, nearest first."""
    for number in range(min(line, len(lines)) - 1, -1, -1):
        content = lines[number].strip()
        if content and not content.startswith("#"):
            yield number, len(lines[number]) - len(lines[number].lstrip(" "))


def _got(node: Node | None) -> str:
    """What the admin wrote, for "got ..." in messages."""
    if node is None:
        return "nothing"
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = str(node.value)
    if len(value) > 60:
        value = value[:57] + "..."
    if node.tag == _TAG + "null":
        return "null" if value else "an empty value"
    if node.tag == _TAG + "str":
        return repr(value)
    return value


def show(value: object) -> str:
    """A Python value as an admin would recognise it in policy.yaml."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    return "a mapping"


def number(value: float) -> str:
    """3 for 3.0, 0.05 for 0.05; never 1e+07 for a round number."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _bounded(kind: str, meta: Mapping[str, Any]) -> str:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"{kind} between {number(low)} and {number(high)}"
    if low is not None:
        return f"{kind} >= {number(low)}"
    if high is not None:
        return f"{kind} <= {number(high)}"
    return kind


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def _record_choice(hint: Any) -> tuple[Any, type[Any]] | None:
    """(X, D) for a hint ``X | D`` where D is a dataclass (and X is not), else None."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(hint)
    records = [a for a in args if dataclasses.is_dataclass(a) and isinstance(a, type)]
    if len(args) != 2 or len(records) != 1 or type(None) in args:
        return None
    (other,) = [a for a in args if a is not records[0]]
    return other, records[0]


class _Builder:
    """Converts one document's node tree; holds the per-document budget."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.values = 0
        self.constructor = SafeConstructor()

    def fail(self, node: Node | None, path: Path, message: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigError(self.source, line, path, message)

    def expected(self, node: Node | None, path: Path, what: str) -> ConfigError:
        return self.fail(node, path, f"expected {what}, got {_got(node)}")

    def describe(self, hint: Any, meta: Mapping[str, Any]) -> str:
        """What a value of type `hint` looks like, in words."""
        origin = typing.get_origin(hint)
        if _is_optional(hint):
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            return self.describe(inner[0], meta) + ", or null"
        choice = _record_choice(hint)
        if choice is not None:
            return self.describe(choice[0], meta) + " or a mapping"
        if origin is typing.Literal:
            return "one of: " + ", ".join(str(a) for a in typing.get_args(hint))
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return "one of: " + ", ".join(str(m.value) for m in hint)
        if origin in (tuple, list):
            return "a list"
        if origin is dict or dataclasses.is_dataclass(hint):
            return "a mapping"
        if hint is bool:
            return "true or false"
        if hint is int:
            return _bounded("an integer", meta)
        if hint is float:
            return _bounded("a number", meta)
        if hint is str:
            return "a string"
        raise TypeError(f"policy loader: unsupported type {hint!r}")

    def convert(self, node: Node | None, hint: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        """The value of type `hint` that `node` describes; raises ConfigError."""
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.fail(node, path, f"more than {MAX_VALUES} values (alias expansion?)")
        is_null = node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null")
        origin = typing.get_origin(hint)
        if _is_optional(hint):
            if is_null:
                return None
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(inner) != 1:
                raise TypeError(f"policy loader: unsupported union {hint!r}")
            return self.convert(node, inner[0], path, meta)
        choice = _record_choice(hint)
        if choice is not None:
            if isinstance(node, MappingNode):
                return self.build(node, choice[1], path, at=node)
            if not isinstance(node, ScalarNode):
                raise self.expected(node, path, self.describe(hint, meta))
            return self.convert(node, choice[0], path, meta)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            return self.build(None if is_null else node, hint, path, at=node)
        if origin in (tuple, list):
            return self.sequence(None if is_null else node, hint, path, meta)
        if origin is dict:
            return self.mapping(None if is_null else node, hint, path, meta)
        return self.scalar(node, hint, path, meta)

    def sequence(self, node: Node | None, hint: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"policy loader: only tuple[X, ...] is supported, not {hint!r}")
        if node is None:
            items: list[Any] = []
        elif not isinstance(node, SequenceNode):
            raise self.expected(node, path, "a list")
        else:
            items = [
                self.convert(child, args[0], (*path, index), meta)
                for index, child in enumerate(node.value)
            ]
        return tuple(items) if typing.get_origin(hint) is tuple else items

    def keys(self, node: MappingNode, path: Path) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping; keys are unique strings."""
        seen: dict[str, Node] = {}
        pairs: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _TAG + "str":
                raise self.expected(key_node, path, "a string key")
            key = str(key_node.value)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise self.fail(key_node, (*path, key), f"duplicate key (first at line {first})")
            seen[key] = key_node
            pairs.append((key, key_node, value_node))
        return pairs

    def mapping(self, node: Node | None, hint: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        key_type, value_type = typing.get_args(hint)
        if key_type is not str:
            raise TypeError(f"policy loader: only dict[str, X] is supported, not {hint!r}")
        if node is None:
            return {}
        if not isinstance(node, MappingNode):
            raise self.expected(node, path, "a mapping")
        return {
            key: self.convert(value, value_type, (*path, key), meta)
            for key, _, value in self.keys(node, path)
        }

    def scalar(self, node: Node | None, hint: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        what = self.describe(hint, meta)
        if not isinstance(node, ScalarNode):
            raise self.expected(node, path, what)
        tag = node.tag.removeprefix(_TAG)
        origin = typing.get_origin(hint)
        if origin is typing.Literal or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
            allowed = typing.get_args(hint) if origin is typing.Literal else tuple(hint)
            for choice in allowed:
                if tag == "str" and node.value == str(getattr(choice, "value", choice)):
                    return choice
            raise self.expected(node, path, what)
        wanted = {bool: ("bool",), int: ("int",), float: ("int", "float"), str: ("str",)}
        if hint not in wanted:
            raise TypeError(f"policy loader: unsupported type {hint!r}")
        if tag not in wanted[hint]:
            raise self.expected(node, path, what)
        if hint is str:
            return str(node.value)
        try:
            value = self.constructor.construct_object(node)
        except (ConstructorError, ValueError):
            raise self.expected(node, path, what) from None
        if hint is float:
            value = float(value)
            if not math.isfinite(value):
                raise self.expected(node, path, what)
        if hint is not bool:
            low, high = meta.get("min"), meta.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                raise self.expected(node, path, what)
        return value

    def build(self, node: Node | None, cls: type[Any], path: Path, at: Node | None = None) -> Any:
        """An instance of dataclass `cls` from a mapping node (None: all defaults).

        `at` is the node to blame when `node` is None (an empty section).
        """
        at = node if node is not None else at
        if node is not None and not isinstance(node, MappingNode):
            raise self.expected(node, path, "a mapping")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        # Inline fields: their dataclass's keys are read from this same mapping.
        inline = {name: hints[name] for name, f in fields.items() if f.metadata.get("inline")}
        owner = {key: name for name, hint in inline.items() for key in _init_fields(hint)}
        known = {*(name for name in fields if name not in inline), *owner}
        kwargs: dict[str, Any] = {}
        inline_kwargs: dict[str, dict[str, Any]] = {name: {} for name in inline}
        pairs = self.keys(node, path) if isinstance(node, MappingNode) else []
        for key, key_node, value_node in pairs:
            if key not in known:
                # A key a section no longer reads says what replaced it
                # (a `RETIRED_KEYS` mapping on the section's dataclass).
                retired = getattr(cls, "RETIRED_KEYS", {}).get(key)
                if retired is not None:
                    raise self.fail(key_node, (*path, key), f"no longer read: {retired}")
                expected = ", ".join(sorted(known))
                raise self.fail(key_node, (*path, key), f"unknown key; expected one of: {expected}")
            if key in owner:
                target_cls = inline[owner[key]]
                spec = _init_fields(target_cls)[key]
                hint = typing.get_type_hints(target_cls)[key]
                target = inline_kwargs[owner[key]]
            else:
                spec, hint, target = fields[key], hints[key], kwargs
            value = self.convert(value_node, hint, (*path, key), spec.metadata)
            default = _default(spec)
            if isinstance(value, dict) and isinstance(default, Mapping):
                value = {**default, **value}  # a mapping merges over its default
            target[key] = value
        for name, target_cls in inline.items():
            kwargs[name] = self.construct(target_cls, inline_kwargs[name], node, path, at)
        for name, spec in fields.items():
            if name not in kwargs and _default(spec) is dataclasses.MISSING:
                raise self.fail(at, (*path, name), "required key missing")
        return self.construct(cls, kwargs, node, path, at)

    def construct(
        self, cls: type[Any], kwargs: dict[str, Any], node: Node | None, path: Path,
        at: Node | None,
    ) -> Any:
        """`cls(**kwargs)`, its InvalidField placed at the YAML line it names."""
        try:
            return cls(**kwargs)
        except InvalidField as error:
            where = self.locate(node, error.path) or at
            raise self.fail(
                where, (*path, *error.path), f"expected {error.expected}, got {show(error.got)}"
            ) from None
        except ValueError as error:
            raise self.fail(at, path, str(error)) from None

    @staticmethod
    def locate(node: Node | None, path: Path) -> Node | None:
        """The node that `path` names below `node` (or its deepest ancestor there)."""
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, MappingNode) and isinstance(part, str):
                found = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
                if not found:
                    break
                # The key's line for the entry itself; its value to go deeper.
                node = found[0][0] if last else found[0][1]
            elif isinstance(node, SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
            else:
                break
        return node


def _init_fields(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """The fields of dataclass `cls` that its constructor takes, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _default(spec: dataclasses.Field[Any]) -> Any:
    """The default of a dataclass field, or MISSING if it is required."""
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return dataclasses.MISSING
