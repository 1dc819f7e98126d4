"""`Sample`, what readers make: its own module so that the manifest reader and `Task` both use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class Sample:
    """One training or evaluation example.

    `image` is a path (loaded lazily, so that a reader of 500k samples holds no pixels), a PIL image
    (synthetic samples), or a zero-argument callable returning one, an open file or a path (images inside
    parquet files and `datasets` rows). `source` names the sample's row (`file:line`, a dataset row) for
    the core's messages; `meta` is the task's own and the core never reads or writes it.
    """

    id: str
    image: str | Path | Image.Image | Callable[[], Any]
    target: str | None = None
    prefix: str = ""  # per-sample part of the prompt, appended to the task's prefix (e.g. INDICATION)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
