"""`Task`: one object binds a domain, so that the core reaches domains only through it.

A domain is a module of `tasks/` with a registered `Task` subclass (docs/adding-a-task.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from docvlm.tasks.sample import Sample

if TYPE_CHECKING:
    from PIL import Image

ImageMode = Literal["pad", "stretch"]
MAX_NEW_TOKENS = 1 << 16  # longest output: as many positions as docvlm's attention window (tables ask 4096)


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


@dataclass(frozen=True)
class Metric:
    """One value that `Task.score` returns, declared by its task so that the core names no metric.

    Attributes:
        name: the key in `score`'s dict, logged as `val/<name>`.
        higher_is_better: the direction checkpoint selection and the report's ranking of samples use.
        corpus: computed over the pooled set (SMT's total edits over total length, corpus BLEU, CIDEr-D's
            document frequencies), so the set's value is not the mean of its samples' values.
        perfect: what predictions identical to their references score; None where that depends on the
            set (CIDEr-D, macro averages over labels a set may not have).
        optional: left out where it is undefined or not asked for (chirality accuracy on a set without
            a chiral reference; RadGraph F1 without its option), so not every `score` returns it.
        note: what a reader of the value must know (how it was computed), shown under the reports' metrics.
    """

    name: str
    higher_is_better: bool = True
    corpus: bool = False
    perfect: float | None = 1.0
    optional: bool = False
    note: str = ""


@dataclass
class Task:
    """Base class of tasks. Subclasses are dataclasses whose fields are the task's options.

    Attributes:
        prefix: the fixed prompt given before each image's target (the papers published none).
        max_target_tokens: the longest target the model is trained or asked to produce.
        image_mode: `pad` pads to a white square then resizes (tables, molecules, as in the paper);
            `stretch` resizes to the square directly (the processor's default).
        metrics: every metric `score` returns, in the order reports list them.
        main_metric: the one metric that picks the best checkpoint and ranks samples in reports; a
            single sample's value of it must mean something (not CIDEr-D, which is 0 for one report).
    """

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    main_metric: ClassVar[str] = ""
    augments_targets: ClassVar[bool] = False  # `augment_pair` moves the target's coordinates with the pixels
    wants_token_scores: ClassVar[bool] = False  # `parse_generation` reads the tokens' probabilities (decoded then)
    export_wants_image: ClassVar[bool] = False  # `export` draws on the page: `convert` hands it the page as `image`
    prefix: str = ""
    max_target_tokens: int = 128
    image_mode: ImageMode = "stretch"

    def __post_init__(self) -> None:
        """Options come from configs, `--task-option` and model folders: a wrong one stops here, named."""
        from docvlm.errors import check_range, check_types

        check_types(self, f"task {self.name!r}")
        check_range(f"task {self.name!r}", "max_target_tokens", self.max_target_tokens, 1, MAX_NEW_TOKENS)

    def read(self, source: str | Path, split: str | None = None) -> list[Sample]:
        """Samples of a dataset on disk (the domain's real layouts and the generic manifest). What cannot be
        read raises `docvlm.tasks.manifest.ManifestError` (a `DataError`) naming the file."""
        from docvlm.tasks.manifest import read_manifest

        return read_manifest(source)

    def sample_from_record(self, record: Mapping[str, Any], columns: Mapping[str, str | None], source: str) -> Sample:
        """One row of a Hugging Face `datasets` dataset as a sample (see `docvlm.hub_data`). `columns` maps
        `image`, `target`, `prefix` and `id` to the dataset's column names (a `None` target: unlabelled
        data); the image cell arrives as a lazy callable. Tasks whose datasets keep the target in a domain
        structure override this. A missing column raises `KeyError(column)`, which the caller words."""
        target, id_ = columns.get("target"), record.get(columns.get("id") or "")
        return Sample(
            id=source if id_ is None else str(id_),
            image=record[columns["image"]],
            target=record[target] if target else None,
            prefix=record.get(columns.get("prefix") or "") or "",
            source=source,
        )

    def synthesize(self, n: int, seed: int = 0) -> Iterable[Sample]:
        """`n` synthetic samples rendered locally, deterministic in `seed` (tests, demo)."""
        raise NotImplementedError(f"task {self.name!r} has no synthetic data")

    @property
    def targets_locate(self) -> bool:
        """True when targets hold image coordinates (`<locNNNN>`): geometric augmentation would make
        them wrong, so the data module keeps only photometric transforms (unless `augments_targets`)."""
        return False

    def augmentation(self, augment: Any) -> Any:
        """The training pipeline of `augment` (a `docvlm.images.Augment`) that `augment_pair` applies; built
        once per data-loader worker."""
        return augment.build()

    def augment_pair(self, pipeline: Any, image: Image.Image, target: str | None) -> tuple[Image.Image, str | None]:
        """One training augmentation of a fitted image and its target. The image alone by default; a task
        whose targets locate things (layout) moves them with the pixels and sets `augments_targets`."""
        import numpy as np
        from PIL import Image

        return Image.fromarray(pipeline(image=np.asarray(image))["image"]), target

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

    def parse_generation(self, generation: Any) -> Parsed:
        """`parse` of a decoded output (a `docvlm.decode.Generation`), where the model's scores are at hand:
        validation, `evaluate`, `convert` and `docvlm.load(...)` parse through this. A task that
        `wants_token_scores` gets each token's piece and probability and may attach confidences (layout:
        each region's `score`); the others parse the text alone. Never raises."""
        return self.parse(generation.text)

    def confidences(self, generation: Any) -> list[float | None] | None:
        """The confidences `parse_generation` gives the parts of a decoded output (layout: one per region, in
        parse order), kept beside the prediction in predictions files and given back to `score_with`; None
        where it gives none."""
        return None

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """The task's metrics over a whole set (corpus level where the domain's reference says so)."""
        raise NotImplementedError

    def score_with(self, predictions: Sequence[str], references: Sequence[str],
                   confidences: Sequence[list[float | None] | None]) -> dict[str, float]:
        """`score`, given each prediction's `confidences` (None for one decoded without scores): a task whose
        metrics rank by confidence (layout's mAP) uses them; the others score the texts alone."""
        return self.score(predictions, references)

    def scoring_problems(self, prediction: str, reference: str) -> list[str]:
        """Why a pair's scores are not its metrics' own (a limit on untrusted output, say); listed in reports."""
        return []

    def export(self, parsed: Parsed, stem: str | Path) -> list[Path]:
        """Write the files `docvlm convert` produces for one prediction; returns their paths. A task that sets
        `export_wants_image` is called with `image=`, the page as it was read (PIL), by `convert`."""
        path = Path(f"{stem}.txt")
        path.write_text(parsed.text, encoding="utf-8")
        return [path]

    def illustrate(self, image: Image.Image, target: str | None, prediction: str) -> Image.Image | None:
        """The sample's image with its reference and the prediction drawn on it, for reports (layout: both
        sets of boxes); None where the task draws nothing on images, which are then shown as they are."""
        return None

    def metric(self, name: str) -> Metric:
        """The declaration of the metric `name`."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"task {self.name!r} declares no metric {name!r}; it declares {[m.name for m in self.metrics]}")

    def main_score(self, scores: Mapping[str, float]) -> float:
        """The main metric of `score`'s result as a score in [0, 1], higher better: a mixture selects checkpoints
        on the mean of its tasks' (`docvlm.mixture`). By default the value itself, or 1 - the value for a metric
        where lower is better (a fraction, such as CER); a task reporting it otherwise (in percent) says how."""
        value = scores[self.main_metric]
        value = value if self.metric(self.main_metric).higher_is_better else 1.0 - value
        return min(1.0, max(0.0, value))

    def options(self) -> dict[str, Any]:
        """The task's options as a plain dict (logged with each run)."""
        return dataclasses.asdict(self)


_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available as `docvlm.tasks.get(cls.name)`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} needs a `name`")
    declared = {m.name: m for m in cls.metrics}
    if cls.main_metric not in declared or declared[cls.main_metric].optional:
        raise ValueError(f"{cls.__qualname__}.main_metric {cls.main_metric!r} is not one of its non-optional `metrics`")
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
