"""The errors a user fixes in their data, not in docvlm: the `docvlm` command prints them as one line
(`docvlm fit: error: <message>`, exit status 2) instead of a traceback. And `special_file_problem`, which
words the commonest of them in every layer that opens a user's file (images, pages, manifests): a path
that is no regular file; `check_types` and `check_range`, which check settings read from places a user does
not control (a model folder's `docvlm.json`, a checkpoint, a config, `--task-option`) against the dataclass
that holds them when it is made: a wrong type or an out-of-range value is one `SettingsError` naming the
field, before any work, not a traceback pages later."""

import math
import os
import stat
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path


class DataError(ValueError):
    """Input data that cannot be used; the message names the file (and line) and what to do."""


def file_kind(mode: int) -> str:
    """What a non-regular file is, from its `st_mode`, for messages."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def special_file_problem(path: str | Path) -> str | None:
    """Why `path` is not a regular file (or a link to one), or None when it is; never opens it.
    A missing file (not a dangling link) raises `FileNotFoundError`, for the caller to word.

    Reading a FIFO blocks until someone writes to it, and a device can stream forever, so only
    regular files are inputs."""
    try:
        mode = os.stat(path).st_mode  # follows links
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a link to a missing file ({os.readlink(path)})"
        raise
    except (OSError, ValueError) as e:  # permissions, a loop of links, a NUL byte in the name
        return f"cannot be read ({getattr(e, 'strerror', None) or e})"
    return None if stat.S_ISREG(mode) else f"{file_kind(mode)}, not a regular file"


class SettingsError(DataError):
    """A setting that cannot be used (a model's `docvlm.json`, a checkpoint's settings, a task option, a decoding
    flag): the message names where it came from, the field and what it must be."""


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


def read_text_file(path: Path, what: str, error: type[Exception]) -> str:
    """A user's small text file (UTF-8) read whole; `error` names `path` and why not: missing (`what` says which
    file was meant), not a regular file (a FIFO would block the read, a device stream forever), unreadable."""
    try:
        problem = special_file_problem(path)
        if problem is not None:
            raise error(f"{path}: {problem}")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
