"""The task abstraction: one object binds a domain (readers, prompt, converter, metrics, export).

The core (`docvlm.data`, `docvlm.module`, `docvlm.cli`) reaches a domain only through a `Task`.
Adding a domain is one module in `tasks/` that subclasses `Task` and decorates it with `@register`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

ImageMode = Literal["pad", "stretch"]


@dataclass
class Sample:
    """One training or evaluation example.

    `image` is a path (loaded lazily, so that a reader of 500k samples holds no pixels), a PIL image
    (synthetic samples), or a zero-argument callable returning one (images inside parquet files).
    """

    id: str
    image: str | Path | Image.Image | Callable[[], Image.Image]
    target: str | None = None
    prefix: str = ""  # per-sample part of the prompt, appended to the task's prefix (e.g. INDICATION)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parsed:
    """A model output turned into a domain object, with everything that was wrong with the text.

    `value` is None when nothing usable could be recovered; `problems` is empty for clean output.
    """

    text: str
    value: Any = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None and not self.problems


@dataclass
class Task:
    """Base class of tasks. Subclasses are dataclasses whose fields are the task's options.

    Attributes:
        prefix: the fixed prompt given before each image's target (the papers published none).
        max_target_tokens: the longest target the model is trained or asked to produce.
        image_mode: `pad` pads to a white square then resizes (tables, molecules, as in the paper);
            `stretch` resizes to the square directly (the processor's default).
        main_metric: the `score` key evaluation reports rank samples by and plot (default: the first).
    """

    name: ClassVar[str] = ""
    main_metric: ClassVar[str] = ""
    prefix: str = ""
    max_target_tokens: int = 128
    image_mode: ImageMode = "stretch"

    def read(self, source: str | Path, split: str | None = None) -> Iterable[Sample]:
        """Samples of a dataset on disk (the domain's real layouts and the generic manifest)."""
        from docvlm.tasks.manifest import read_manifest

        return read_manifest(source)

    def synthesize(self, n: int, seed: int = 0) -> Iterable[Sample]:
        """`n` synthetic samples rendered locally, deterministic in `seed` (tests, demo)."""
        raise NotImplementedError(f"task {self.name!r} has no synthetic data")

    @property
    def targets_locate(self) -> bool:
        """True when targets hold image coordinates (`<locNNNN>`): geometric augmentation would make
        them wrong, so the data module keeps only photometric transforms."""
        return False

    def prompt(self, sample: Sample) -> str:
        """The prompt of one sample: the task's fixed prefix, then the sample's own part if any."""
        return f"{self.prefix} {sample.prefix}" if sample.prefix else self.prefix

    def to_target(self, sample: Sample) -> str:
        """The training target text of a sample."""
        if sample.target is None:
            raise ValueError(f"sample {sample.id!r} has no target")
        return sample.target

    def parse(self, text: str) -> Parsed:
        """Model output -> domain object. Never raises: problems are listed in the result."""
        return Parsed(text=text, value=text, problems=[] if text.strip() else ["empty prediction"])

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """The task's metrics over a whole set (corpus level where the domain's reference says so)."""
        raise NotImplementedError

    def export(self, parsed: Parsed, stem: str | Path) -> list[Path]:
        """Write the files `docvlm convert` produces for one prediction; returns their paths."""
        path = Path(f"{stem}.txt")
        path.write_text(parsed.text, encoding="utf-8")
        return [path]

    def options(self) -> dict[str, Any]:
        """The task's options as a plain dict (logged with each run)."""
        return dataclasses.asdict(self)


_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available as `docvlm.tasks.get(cls.name)`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} needs a `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"task name {cls.name!r} is already taken by {_REGISTRY[cls.name].__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str, **options: Any) -> Task:
    """The task registered as `name`, built with `options`."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}") from None
    return cls(**options)


def names() -> list[str]:
    return sorted(_REGISTRY)
