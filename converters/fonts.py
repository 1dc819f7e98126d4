"""Fonts for synthetic renderings: the system's TrueType fonts, else Pillow's bundled one."""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import ImageFont

_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")


@functools.cache
def font_files() -> tuple[Path, ...]:
    """TrueType files found on this machine, sorted for reproducible choices by index."""
    found = [p for d in _FONT_DIRS if Path(d).is_dir() for p in Path(d).rglob("*.ttf")]
    return tuple(sorted(found))


def font(index: int, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The `index`-th font (modulo the number found) at `size` pixels."""
    files = font_files()
    if not files:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(files[index % len(files)]), size=size)
