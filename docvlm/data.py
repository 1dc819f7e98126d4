"""The LightningDataModule: samples from a task's readers or synthesizer, images fitted to the model's
square input, collation through `PaliGemmaProcessor` (prefix-LM layout, labels on the suffix only).

Data problems are found in `setup`, before the model trains a step, and raised as `DataError`s naming
the file and line (a sample's row is its `meta["source"]`) and what to do: missing targets, every
target over the token budget, unreadable images (every image header is opened up front).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from docvlm.errors import DataError
from docvlm.images import Augment, BadImageError, augment, check_image, fit, load_image
from docvlm.tasks.base import Sample, Task

log = logging.getLogger(__name__)


@dataclass
class Source:
    """Where a split's samples come from: a dataset on disk or the task's synthetic generator.

    Attributes:
        path: dataset root or manifest file, read by the task's reader.
        split: the split to read (`train`, `val`, `test`; readers that need none ignore it).
        synthetic: number of synthetic samples to render instead of reading `path`.
        seed: seed of the synthetic samples (use different seeds for train and val).
        limit: keep only the first `limit` samples (quick runs).
    """

    path: str | None = None
    split: str | None = None
    synthetic: int = 0
    seed: int = 0
    limit: int | None = None

    def samples(self, task: Task) -> list[Sample]:
        if self.synthetic:
            samples = list(task.synthesize(self.synthetic, self.seed))
        elif self.path:
            samples = list(task.read(self.path, self.split))
        else:
            raise DataError("a data source needs a `path` or a number of `synthetic` samples")
        return samples[: self.limit] if self.limit is not None else samples


def row(sample: Sample) -> str:
    """Where a sample comes from, for messages: its manifest `file:line` when the reader kept it."""
    return sample.meta.get("source") or f"sample {sample.id!r}"


def image_problem(sample: Sample, error: BadImageError) -> str:
    """The error prefixed with the sample's row, unless the row is already the image's name."""
    source = sample.meta.get("source")
    return f"{source}: {error}" if source and not str(error).startswith(source) else str(error)


def _image_name(sample: Sample) -> str | None:
    """How `load_image` names an image that is not a path: by the sample's row."""
    return None if isinstance(sample.image, (str, Path)) else f"{row(sample)}: image"


class TaskDataset(Dataset):
    """Samples as (index, id, prompt, target, fitted image); images are loaded in the workers."""

    def __init__(self, samples: list[Sample], task: Task, image_size: int, augment: Augment | None = None,
                 targets: list[str | None] | None = None):
        self.samples = samples
        self.task = task
        self.image_size = image_size
        self.augment = augment
        self.targets = targets if targets is not None else [s.target for s in samples]
        self._pipeline = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item = {"index": index, "id": sample.id, "prompt": self.task.prompt(sample), "target": self.targets[index],
                "truncated": sample.meta.get("truncated", False)}
        try:
            image = fit(load_image(sample.image, _image_name(sample)), self.image_size, self.task.image_mode)
        except BadImageError as e:
            return {**item, "error": image_problem(sample, e)}
        if self.augment is not None:
            if self._pipeline is None:  # built lazily: once per worker process
                self._pipeline = self.augment.build()
            image = augment(self._pipeline, image)
        return {**item, "image": image}


class Collator:
    """Batches through `PaliGemmaProcessor`: `<image>`×N `<bos>` prompt `\\n` [target `<eos>`], left-padded.

    Items whose image failed to load raise with the file named (`on_bad_image="error"`), or are dropped
    and listed under `skipped` (`"skip"`) for the caller to log or raise: `DocDataModule` raises in the
    main process, since an exception raised in a data-loader worker arrives there wrapped in the
    worker's traceback text.
    """

    def __init__(self, processor, with_targets: bool, on_bad_image: str = "error"):
        self.processor = processor
        self.with_targets = with_targets
        self.on_bad_image = on_bad_image

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
        with warnings.catch_warnings():  # numpy 2 deprecation inside the processor's tensor conversion
            warnings.simplefilter("ignore", DeprecationWarning)
            encoded = self.processor(text=prompts, images=images, suffix=suffix, padding="longest", return_tensors="pt")
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
        self.datasets: dict[str, TaskDataset] = {}
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
            if split == "train":
                samples, targets = self._limit_length(samples, targets)
            self.datasets[split] = TaskDataset(
                samples, self.task, size, self.augment if split == "train" else None, targets
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
        """Skip or cut targets over `max_target_tokens`; count them. Skipping them all is an error."""
        limit = self.task.max_target_tokens
        tokenizer = self.processor.tokenizer
        encoded = tokenizer([t or "" for t in targets], add_special_tokens=False, return_offsets_mapping=True)
        kept_samples, kept_targets, over = [], [], 0
        for sample, target, ids, offsets in zip(samples, targets, encoded["input_ids"], encoded["offset_mapping"]):
            if len(ids) + 1 > limit:  # + <eos>
                over += 1
                if self.overlength == "skip":
                    continue
                target = target[: offsets[limit - 1][1]]
                sample.meta["truncated"] = True
            kept_samples.append(sample)
            kept_targets.append(target)
        self.overlength_counts["train"] = over
        if not kept_samples:
            shortest = min(len(ids) for ids in encoded["input_ids"]) + 1
            source = self.sources["train"]
            raise DataError(
                f"{source.path or 'data.train'}: all {len(samples)} training targets are longer than the task's "
                f"max_target_tokens={limit} (the shortest has {shortest} tokens with <eos>): raise "
                "data.task.init_args.max_target_tokens, or set data.overlength: truncate")
        if over:
            log.warning("%d of %d training targets exceed max_target_tokens=%d: %s", over, len(samples), limit,
                        "skipped" if self.overlength == "skip" else "truncated")
        return kept_samples, kept_targets

    def _loader(self, split: str, shuffle: bool, with_targets: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} data: set `data.{split}` in the config")
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
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
