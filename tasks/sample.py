"""`Sample`, what readers make. A module of its own: the manifest reader and `Task` both need it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class Sample:
    """One training or evaluation example.

    Attributes:
        image: a path or a zero-argument callable returning an image, an open file or a path, loaded when
            used (a reader of 500k samples holds no pixels; parquet and `datasets` rows), or a PIL image.
        prefix: the sample's own part of the prompt, after the task's prefix (the radiology INDICATION).
        meta: the task's own; the core never reads or writes it.
        source: the sample's row (`file:line`, a dataset row), named in the core's messages.
    """

    id: str
    image: str | Path | Image.Image | Callable[[], Any]
    target: str | None = None
    prefix: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
