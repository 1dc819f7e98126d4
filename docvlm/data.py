"""The LightningDataModule: samples from a task's readers or synthesizer, images fitted to the model's
square input, collation through `PaliGemmaProcessor` (prefix-LM layout, labels on the suffix only).

Data problems are found in `setup`, before the model trains a step, and raised as `DataError`s naming
the file and line (a sample's row is its `Sample.source`) and what to do: missing targets, every
target over the token budget, unreadable images (every image header is opened up front). A streamed
split (`streaming: true`, a `datasets` source) is never materialised: its first row is checked in
`setup`, the rest as they are read, with the same image fitting, length limit and `on_bad_image` policy.
The module never writes into a task's samples: what it decides per sample (a cut target) it keeps itself.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm import tqdm

from docvlm import hub_data
from docvlm.errors import DataError
from docvlm.images import Augment, BadImageError, augment, check_image, fit, load_image
from docvlm.pixels import PixelTable
from docvlm.tasks.base import Sample, Task

log = logging.getLogger(__name__)


@dataclass
class Source:
    """Where a split's samples come from: a dataset on disk, a Hugging Face `datasets` dataset, or the
    task's synthetic generator.

    Attributes:
        path: dataset root or manifest file, read by the task's reader.
        dataset: a Hugging Face `datasets` dataset instead of `path`: a hub id or a `save_to_disk` folder
            (needs `pip install docvlm[hub]`).
        split: the split to read (`train`, `val`, `test`; readers that need none ignore it).
        columns: the `dataset`'s column names for docvlm's `image`, `target`, `prefix` and `id`, over the
            defaults (the same names); `target: null` reads unlabelled data. Tasks may read more keys
            (tables: `html`, PubTabNet's structure).
        streaming: read the `dataset` lazily, never materialised (large sets): rows are shared out among
            data-loader workers and ranks by shards; training order is shuffled within a buffer; set
            `trainer.max_steps`.
        synthetic: number of synthetic samples to render instead of reading `path`.
        seed: seed of the synthetic samples (use different seeds for train and val).
        limit: keep only the first `limit` samples (quick runs).
    """

    path: str | None = None
    dataset: str | None = None
    split: str | None = None
    columns: dict[str, str | None] | None = None
    streaming: bool = False
    synthetic: int = 0
    seed: int = 0
    limit: int | None = None

    def samples(self, task: Task) -> list[Sample]:
        if self.path and self.dataset:
            raise DataError(f"a data source reads `path` ({self.path}) or `dataset` ({self.dataset}), not both")
        if self.synthetic:
            samples = list(task.synthesize(self.synthetic, self.seed))
        elif self.dataset:
            return hub_data.read(task, self.dataset, self.split, self.columns, self.limit)
        elif self.path:
            samples = list(task.read(self.path, self.split))
        else:
            raise DataError("a data source needs a `path`, a `dataset` or a number of `synthetic` samples")
        return samples[: self.limit] if self.limit is not None else samples

    def stream(self, task: Task, part: int = 0, parts: int = 1, seed: int | None = None) -> Iterator[tuple[int, Sample]]:
        """(index, sample) of part `part` of `parts` of a streamed `dataset` (see `hub_data.stream`)."""
        if not self.dataset:
            raise DataError("`streaming: true` reads a `dataset` (a hub id or a save_to_disk folder); "
                            "set `dataset`, or streaming: false")
        return hub_data.stream(task, self.dataset, self.split, self.columns, self.limit, part, parts, seed)


def row(sample: Sample) -> str:
    """Where a sample comes from, for messages: its manifest `file:line` when the reader kept it."""
    return sample.source or f"sample {sample.id!r}"


def image_problem(sample: Sample, error: BadImageError) -> str:
    """The error prefixed with the sample's row, unless the row is already the image's name."""
    source = sample.source
    return f"{source}: {error}" if source and not str(error).startswith(source) else str(error)


def _image_name(sample: Sample) -> str | None:
    """How `load_image` names an image that is not a path: by the sample's row."""
    return None if isinstance(sample.image, (str, Path)) else f"{row(sample)}: image"


class _Items:
    """Samples to items: (index, id, prompt, target, fitted image), loaded in the workers."""

    def __init__(self, task: Task, image_size: int, augment: Augment | None):
        self.task = task
        self.image_size = image_size
        self.augment = augment
        self._pipeline = None

    def item(self, index: int, sample: Sample, target: str | None, truncated: bool) -> dict[str, Any]:
        item = {"index": index, "id": sample.id, "prompt": self.task.prompt(sample), "target": target,
                "truncated": truncated}
        try:
            image = fit(load_image(sample.image, _image_name(sample)), self.image_size, self.task.image_mode)
        except BadImageError as e:
            return {**item, "error": image_problem(sample, e)}
        if self.augment is not None:
            if self._pipeline is None:  # built lazily: once per worker process
                self._pipeline = self.augment.build()
            image = augment(self._pipeline, image)
        return {**item, "image": image}


class TaskDataset(_Items, Dataset):
    """Samples as (index, id, prompt, target, fitted image); images are loaded in the workers. `truncated`:
    the indices whose targets were cut to the token budget (they get no `<eos>`)."""

    def __init__(self, samples: list[Sample], task: Task, image_size: int, augment: Augment | None = None,
                 targets: list[str | None] | None = None, truncated: Iterable[int] = ()):
        super().__init__(task, image_size, augment)
        self.samples = samples
        self.targets = targets if targets is not None else [s.target for s in samples]
        self.truncated = frozenset(truncated)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index, self.samples[index], self.targets[index], index in self.truncated)


class StreamDataset(_Items, IterableDataset):
    """A streamed split as the same items as `TaskDataset`, read lazily: each data-loader worker of each
    rank reads its own shards (`Source.stream`); missing targets raise and over-long targets are skipped
    or cut as they come (counted in the log per worker); training order is shuffled within a buffer."""

    SHUFFLE_BUFFER = 256  # rows

    def __init__(self, source: Source, task: Task, image_size: int, augment: Augment | None = None, *,
                 split: str, tokenizer=None, overlength: str = "skip", rank: int = 0, world_size: int = 1,
                 shuffle: bool = False):
        super().__init__(task, image_size, augment)
        self.source = source
        self.split = split
        self.tokenizer = tokenizer  # set for training: the length limit applies
        self.overlength = overlength
        self.rank, self.world_size = rank, world_size
        self.shuffle = shuffle
        self._epoch = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        seed = torch.initial_seed() + self._epoch if self.shuffle else None  # workers differ, epochs too
        self._epoch += 1
        rows = self.source.stream(self.task, self.rank * workers + worker_id, self.world_size * workers, seed)
        if self.shuffle:  # rows, not items: the buffer holds encoded images, not fitted pixels
            rows = _buffer_shuffled(rows, random.Random(seed), self.SHUFFLE_BUFFER)
        return self._items(rows)

    def _items(self, rows: Iterable[tuple[int, Sample]]) -> Iterator[dict[str, Any]]:
        over = seen = 0
        for index, sample in rows:
            seen += 1
            if sample.target is None:
                if self.split != "predict":
                    raise DataError(f"{row(sample)}: no 'target': data.{self.split} samples need the text their "
                                    "image should give")
                yield self.item(index, sample, None, False)
                continue
            target, truncated = self.task.to_target(sample), False
            if self.tokenizer is not None:
                (tokens, cut), = measure(self.tokenizer, [target], self.task.max_target_tokens)
                if tokens + 1 > self.task.max_target_tokens:
                    over += 1
                    if self.overlength == "skip":
                        continue
                    target, truncated = cut, True
            yield self.item(index, sample, target, truncated)
        if over:
            log.warning("data.%s (streamed): %d of %d targets read by this worker exceed max_target_tokens=%d: %s",
                        self.split, over, seen, self.task.max_target_tokens,
                        "skipped" if self.overlength == "skip" else "truncated")


def _buffer_shuffled(items: Iterator[Any], rng: random.Random, size: int) -> Iterator[Any]:
    """`items` in a random order, holding at most `size` of them."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def measure(tokenizer, targets: list[str | None], limit: int) -> list[tuple[int, str | None]]:
    """(tokens without `<eos>`, the target cut to `limit` tokens with `<eos>`) of each target."""
    encoded = tokenizer([t or "" for t in targets], add_special_tokens=False, return_offsets_mapping=True)
    return [(len(ids), t if len(ids) + 1 <= limit else t[: offsets[limit - 1][1]])
            for t, ids, offsets in zip(targets, encoded["input_ids"], encoded["offset_mapping"])]


_STAND_IN = Image.new("RGB", (1, 1))
_NO_PIXEL_WORK = {"do_resize": False, "do_rescale": False, "do_normalize": False}


class Collator:
    """Batches through `PaliGemmaProcessor`: `<image>`×N `<bos>` prompt `\\n` [target `<eos>`], left-padded.
    Pixel values come from a `PixelTable` where it gives the processor's values (the same bits, faster).

    Items whose image failed to load raise with the file named (`on_bad_image="error"`), or are dropped
    and listed under `skipped` (`"skip"`) for the caller to log or raise: `DocDataModule` raises in the
    main process, since an exception raised in a data-loader worker arrives there wrapped in the
    worker's traceback text.
    """

    def __init__(self, processor, with_targets: bool, on_bad_image: str = "error"):
        self.processor = processor
        self.with_targets = with_targets
        self.on_bad_image = on_bad_image
        self._table: PixelTable | None | bool = False  # built on first use, in the process that collates

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        bad = [item for item in items if "error" in item]
        if bad and self.on_bad_image == "error":
            raise BadImageError(bad[0]["error"])
        items = [item for item in items if "error" not in item]
        batch: dict[str, Any] = {"skipped": [item["error"] for item in bad]}
        if not items:
            return batch
        prompts = [self.processor.image_token + item["prompt"] for item in items]
        images = [item["image"] for item in items]
        suffix = [item["target"] for item in items] if self.with_targets else None
        if self._table is False:
            self._table = PixelTable.build(self.processor.image_processor)
        fast = self._table is not None and self._table.accepts(images)
        with warnings.catch_warnings():  # numpy 2 deprecation inside the processor's tensor conversion
            warnings.simplefilter("ignore", DeprecationWarning)
            if fast:  # the processor's own text path, with 1-pixel stand-ins for the images it does not need
                encoded = self.processor(text=prompts, images=[_STAND_IN] * len(images), suffix=suffix,
                                         padding="longest", return_tensors="pt", **_NO_PIXEL_WORK)
                encoded["pixel_values"] = self._table(images)
            else:
                encoded = self.processor(text=prompts, images=images, suffix=suffix, padding="longest",
                                         return_tensors="pt")
        batch.update(encoded)
        if self.with_targets:
            batch["labels"][batch["attention_mask"] == 0] = -100
            for row, item in enumerate(items):
                if item["truncated"]:  # a cut target must not teach the model to stop there
                    batch["labels"][row, -1] = -100
        batch["index"] = torch.tensor([item["index"] for item in items])
        batch["id"] = [item["id"] for item in items]
        batch["target"] = [item["target"] for item in items]
        return batch


class DocDataModule(L.LightningDataModule):
    """Data of one task for fit/validate/test/predict.

    Args:
        task: the task (e.g. `{class_path: docvlm.tasks.text.TextTask}`), which reads and renders samples.
        train: training samples.
        val: validation samples (decoded and scored with the task's metrics).
        test: test samples.
        predict: samples to transcribe.
        batch_size: samples per training step and device (accumulate to reach the paper's 256).
        eval_batch_size: samples per decoding batch (default: `batch_size`).
        num_workers: data-loader worker processes per device.
        augment: training augmentation; `null` turns it off. Never applied to val/test/predict.
        overlength: what to do with targets longer than the task's `max_target_tokens`: `skip`
            drops them, `truncate` cuts them (without `<eos>`); either way they are counted in the log.
        on_bad_image: `error` stops with the file (and manifest line) named; `skip` drops the sample and
            logs it. Every image header is checked in `setup`, before training; an image that fails
            only when decoded (truncated data) is handled the same way when its batch is loaded.
    """

    def __init__(
        self,
        task: Task,
        train: Source | None = None,
        val: Source | None = None,
        test: Source | None = None,
        predict: Source | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: Augment | None = Augment(),
        overlength: Literal["skip", "truncate"] = "skip",
        on_bad_image: Literal["error", "skip"] = "error",
    ):
        super().__init__()
        self.task = task
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        if augment is not None and task.targets_locate and (augment.rotate or augment.scale):
            log.warning("targets hold coordinates: geometric augmentation (rotate, scale) turned off")
            augment = dataclasses.replace(augment, rotate=0.0, scale=0.0)
        self.augment = augment
        self.overlength = overlength
        self.on_bad_image = on_bad_image
        self.processor = None
        self.datasets: dict[str, TaskDataset | StreamDataset] = {}
        self.overlength_counts: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.processor is None:
            self.processor = self.trainer.lightning_module.processor
        size = self.processor.image_processor.size["height"]
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}
        for split in wanted.get(stage, list(self.sources)) if stage else list(self.sources):
            source = self.sources[split]
            if source is None or split in self.datasets:
                continue
            if source.streaming:
                self.datasets[split] = self._stream(split, source, size)
                continue
            samples = source.samples(self.task)
            if not samples:
                raise DataError(f"data.{split}: {source.path or source} gave no samples "
                                f"(split {source.split!r}); check data.{split}.path and data.{split}.split")
            if split != "predict":
                missing = [s for s in samples if s.target is None]
                if missing:
                    raise DataError(f"{row(missing[0])}: no 'target' ({len(missing)} of {len(samples)} samples of "
                                    f"data.{split} have none): {split} samples need the text their image should give")
            samples = self._check_images(split, samples)
            targets = [self.task.to_target(s) if s.target is not None else None for s in samples]
            truncated: set[int] = set()
            if split == "train":
                samples, targets, truncated = self._limit_length(samples, targets)
            self.datasets[split] = TaskDataset(
                samples, self.task, size, self.augment if split == "train" else None, targets, truncated
            )

    def _stream(self, split: str, source: Source, size: int) -> StreamDataset:
        """A streamed split, its first row read now so that a wrong column mapping or a missing target
        stops the run before it trains (the other rows are checked as they are read)."""
        first = next(Source(**{**dataclasses.asdict(source), "limit": 1}).stream(self.task), None)
        if first is None:
            raise DataError(f"data.{split}: {source.dataset} gave no samples (split {source.split!r}); "
                            f"check data.{split}.dataset and data.{split}.split")
        if first[1].target is None and split != "predict":
            raise DataError(f"{row(first[1])}: no 'target': data.{split} samples need the text their image should "
                            f"give; map the dataset's column with data.{split}.columns.target")
        trainer = self.trainer
        return StreamDataset(
            source, self.task, size, self.augment if split == "train" else None, split=split,
            tokenizer=self.processor.tokenizer if split == "train" else None, overlength=self.overlength,
            rank=trainer.global_rank if trainer else 0, world_size=trainer.world_size if trainer else 1,
            shuffle=split == "train",
        )

    def _check_images(self, split: str, samples: list[Sample]) -> list[Sample]:
        """The samples whose image file opens (header only, `check_image`); the others raise a
        `BadImageError` naming the first and counting the rest (`on_bad_image: error`), or are logged
        and left out (`skip`). A progress bar shows for large sets."""
        bad: dict[int, str] = {}
        paths = [(i, s) for i, s in enumerate(samples) if isinstance(s.image, (str, Path))]
        for i, sample in tqdm(paths, desc=f"checking data.{split} images", unit="image", leave=False,
                              disable=len(paths) < 1000 or None):
            try:
                check_image(sample.image)
            except BadImageError as e:
                bad[i] = image_problem(sample, e)
        if not bad:
            return samples
        first = next(iter(bad.values()))
        if self.on_bad_image == "error":
            more = f" (and {len(bad) - 1} more unreadable images in data.{split})" if len(bad) > 1 else ""
            raise BadImageError(f"{first}{more}; fix or remove them, or set data.on_bad_image: skip to leave them out")
        for message in bad.values():
            log.warning("skipped: %s", message)
        if len(bad) == len(samples):
            raise DataError(f"data.{split}: none of its {len(samples)} images can be read; the first: {first}")
        return [s for i, s in enumerate(samples) if i not in bad]

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Images that failed to decode in the workers: raised here, in the main process, as one clean
        `BadImageError` (`on_bad_image: error`), or logged (`skip`)."""
        for problem in batch["skipped"]:
            if self.on_bad_image == "error":
                raise BadImageError(f"{problem}; fix or remove it, or set data.on_bad_image: skip to leave it out")
            log.warning("skipped: %s", problem)
        return batch

    def _limit_length(self, samples: list[Sample], targets: list[str | None]):
        """Skip or cut targets over `max_target_tokens`; count them. Skipping them all is an error.
        Returns the kept samples, their targets and the indices (among the kept) of the cut ones."""
        limit = self.task.max_target_tokens
        measured = measure(self.processor.tokenizer, targets, limit)
        kept_samples, kept_targets, truncated, over = [], [], set(), 0
        for sample, target, (tokens, cut) in zip(samples, targets, measured):
            if tokens + 1 > limit:  # + <eos>
                over += 1
                if self.overlength == "skip":
                    continue
                target = cut
                truncated.add(len(kept_samples))
            kept_samples.append(sample)
            kept_targets.append(target)
        self.overlength_counts["train"] = over
        if not kept_samples:
            shortest = min(tokens for tokens, _ in measured) + 1
            source = self.sources["train"]
            raise DataError(
                f"{source.path or 'data.train'}: all {len(samples)} training targets are longer than the task's "
                f"max_target_tokens={limit} (the shortest has {shortest} tokens with <eos>): raise "
                "data.task.init_args.max_target_tokens, or set data.overlength: truncate")
        if over:
            log.warning("%d of %d training targets exceed max_target_tokens=%d: %s", over, len(samples), limit,
                        "skipped" if self.overlength == "skip" else "truncated")
        return kept_samples, kept_targets, truncated

    def _loader(self, split: str, shuffle: bool, with_targets: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} data: set `data.{split}` in the config")
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle and not isinstance(dataset, StreamDataset),  # a stream shuffles itself
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=Collator(self.processor, with_targets, "skip"),  # see `on_before_batch_transfer`
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, with_targets=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, with_targets=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, with_targets=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False, with_targets=False)
