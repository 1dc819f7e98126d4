"""Files written into an output folder that the user gave: whatever stands at an output's name is replaced, never
followed, so that a link planted there (another user's, or an earlier run's) cannot lead a report, a predictions
file or a page image outside the folder, or overwrite what the link points to."""

from __future__ import annotations

import io
import os
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_new(path: Path):
    """`path` opened for writing text from scratch (UTF-8): a link there is removed first, not followed; a link
    made in between fails the open (ELOOP) instead of being followed."""
    if path.is_symlink():
        path.unlink()
    return os.fdopen(os.open(path, _FLAGS | os.O_TRUNC, 0o666), "w", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    """`path` written whole: a new file beside it, renamed over whatever is there (a link is replaced, not
    followed), so that a reader never sees half a report."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(temporary, _FLAGS | os.O_EXCL, 0o666), "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def save_image(path: Path, image, format: str = "PNG") -> None:
    """A PIL image written as `write_bytes` writes."""
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    write_bytes(path, buffer.getvalue())
