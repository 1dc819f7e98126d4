"""The errors a user fixes in their data, not in docvlm: the `docvlm` command prints them as one line
(`docvlm fit: error: <message>`, exit status 2) instead of a traceback. And `special_file_problem`, which
words the commonest of them in every layer that opens a user's file (images, pages, manifests): a path
that is no regular file."""

import os
import stat
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
