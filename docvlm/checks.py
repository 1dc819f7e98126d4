"""Settings read from places a user does not control (a model folder's `docvlm.json`, a checkpoint, a config,
`--task-option`) checked against the dataclass that holds them, when it is made: a wrong type or an
out-of-range value is one `SettingsError` naming the field, before any work, not a traceback pages later."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields, is_dataclass

from docvlm.errors import SettingsError


def check_types(obj, where: str) -> None:
    """Every field of the dataclass `obj` holds a value of its annotated type (bool is no int here)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            raise SettingsError(f"{where}: {f.name} must be {_wording(hints[f.name])}, not {_shown(value)}")


def check_range(where: str, name: str, value: int, low: int, high: int | None = None) -> None:
    """`low <= value <= high`, or a `SettingsError` saying so."""
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise SettingsError(f"{where}: {name} must be {bound}, not {_shown(value)}")


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    checks = {type(None): lambda: value is None, bool: lambda: isinstance(value, bool),
              int: lambda: isinstance(value, int) and not isinstance(value, bool),
              float: lambda: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
              str: lambda: isinstance(value, str)}
    if hint in checks:
        return checks[hint]()
    return isinstance(value, hint) if is_dataclass(hint) else True


def _wording(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_wording(a) for a in args)
    if origin is list:
        return f"a list of {_wording(args[0])}"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
