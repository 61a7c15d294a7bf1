"""Configs are dataclasses: built from YAML, then ``key=value`` overrides (dotted for nested fields).

Every problem is reported at once, with the field's dotted name and what was expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ssrl.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field names, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["seed=3", "task_options.shuffle.rows=3"]`` -> nested keys set; values parsed as YAML scalars/lists.

    >>> apply_overrides({"a": {"b": 1}}, ["a.b=2", "c=[x, y]"])
    {'a': {'b': 2}, 'c': ['x', 'y']}
    """
    out = dict(data)
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} must look like key=value")
            continue
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            child = node.get(p)
            node[p] = dict(child) if isinstance(child, dict) else {}
            node = node[p]
        try:
            node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            node[leaf] = raw
    if problems:
        raise ConfigError(problems)
    return out


def _coerce(value: Any, tp: Any, name: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name, problems) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            problems.append(f"{name}: expected a mapping, got {value!r}")
            return None
        return _build(tp, value, problems, prefix=f"{name}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            problems.append(f"{name}: expected a list, got {value!r}")
            return None
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{name}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{name}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{name}: expected true or false, got {value!r}")
        return None
    if tp in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            with contextlib.suppress(ValueError):
                value = float(value) if tp is float else int(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or (tp is int and value != int(value)):
            problems.append(f"{name}: expected {tp.__name__}, got {value!r}")
            return None
        return tp(value)
    if tp is str:  # YAML reads `true` as a bool: keep the word as written (auto/true/false fields)
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    return value


def _build(cls: type[T], data: dict[str, Any], problems: list[str], prefix: str = "") -> T | None:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {prefix}{near[0]}?)" if near else f" (known: {', '.join(sorted(fields))})"
            problems.append(f"unknown field {prefix}{key}{hint}")
            continue
        kwargs[key] = _coerce(value, hints[key], prefix + key, problems)
    if problems:
        return None
    try:
        return cls(**kwargs)
    except ConfigError as e:
        problems.extend(e.problems)
    except (TypeError, ValueError) as e:
        problems.append(f"{prefix.rstrip('.') or cls.__name__}: {e}")
    return None


def build_config(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from plain data, reporting every problem at once."""
    problems: list[str] = []
    cfg = _build(cls, data, problems)
    if problems or cfg is None:
        raise ConfigError(problems or [f"invalid {cls.__name__}"])
    return cfg


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                **values: Any) -> T:
    """YAML file (optional) < explicit ``values`` (from CLI flags) < ``key=value`` overrides."""
    data = load_yaml(path) if path else {}
    data.update({k: v for k, v in values.items() if v is not None})
    return build_config(cls, apply_overrides(data, overrides or []))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-ready data (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))
