"""The LightningDataModule: a task's samples (`docvlm.items`: read, synthesized or streamed, fitted and
collated as every decoding path does) checked and served to the Trainer.

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
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader
from tqdm import tqdm

from docvlm.errors import DataError
from docvlm.images import Augment, BadImageError, check_image
from docvlm.items import Collator, Source, StreamDataset, TaskDataset, check_prompts, image_problem, measure, row
from docvlm.mixture import Mixture, MixtureDataset, MixtureLoader
from docvlm.tasks.base import Sample, Task

log = logging.getLogger(__name__)


class DocDataModule(L.LightningDataModule):
    """Data of one task (or a mixture of tasks) for fit/validate/test/predict.

    Args:
        task: the task (e.g. `{class_path: docvlm.tasks.text.TextTask}`), which reads and renders samples.
        mixture: several tasks instead of `task`, each with its own data, weight and augmentation
            (`docvlm.mixture`) in place of `train`, `val` and `augment`; fit and validate only.
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
        task: Task | None = None,
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
        mixture: Mixture | None = None,
    ):
        super().__init__()
        if (task is None) == (mixture is None):
            raise DataError("set data.task (one task) or data.mixture (several), not both" if task else
                            "no task: set data.task (one task) or data.mixture (several)")
        if mixture is not None:
            mixture.check()
            given = [split for split, source in zip(("train", "val", "test", "predict"), (train, val, test, predict))
                     if source is not None]
            if given:
                raise DataError(f"data.{given[0]}: a mixture's tasks each have their own data "
                                f"(data.mixture.tasks[*].train, .val): set data.{given[0]}: null")
            augment = None  # each task has its own
        self.task = task or mixture
        self.mixture = mixture
        # a mixture is a data module per task, each checking, limiting and augmenting its own data
        self.parts = [DocDataModule(p.task, p.train, p.val, batch_size=batch_size, eval_batch_size=eval_batch_size,
                                    num_workers=num_workers, augment=p.augment, overlength=overlength,
                                    on_bad_image=on_bad_image) for p in mixture.tasks] if mixture else []
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        moves = augment is not None and (augment.rotate or augment.scale)
        if moves and task.targets_locate and not task.augments_targets:
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
        if self.mixture is not None:
            return self._setup_parts(stage)
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
            check_prompts(self.task, samples, self.processor, self._net())
            samples = self._check_images(split, samples)
            targets = [self.task.to_target(s) if s.target is not None else None for s in samples]
            truncated: set[int] = set()
            if split == "train":
                samples, targets, truncated = self._limit_length(samples, targets)
            self.datasets[split] = TaskDataset(
                samples, self.task, size, self.augment if split == "train" else None, targets, truncated
            )

    def _setup_parts(self, stage: str | None) -> None:
        if stage not in ("fit", "validate"):
            raise DataError(f"a mixture ({', '.join(self.mixture.names)}) trains and validates; to {stage} one "
                            "of its tasks, set data.task and that task's data")
        for i, part in enumerate(self.parts):
            part.processor = self.processor
            part.trainer = self.trainer  # its prompts bounded by the model's positions (`_net`)
            try:
                part.setup(stage)
            except DataError as e:
                raise type(e)(f"data.mixture.tasks[{i}] ({part.task.name}): {e}") from None
            self.overlength_counts[part.task.name] = part.overlength_counts.get("train", 0)
        if stage == "fit":
            self.datasets["train"] = MixtureDataset([part.datasets["train"] for part in self.parts])
            self.overlength_counts["train"] = sum(self.overlength_counts.values())

    def _net(self):
        """The model's network when a trainer runs this data module (its positions bound the prompts)."""
        return getattr(self.trainer.lightning_module, "net", None) if self.trainer is not None else None

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
            shuffle=split == "train", even=split == "train" and trainer is not None and trainer.world_size > 1,
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
        `BadImageError` (`on_bad_image: error`) on every rank at once, or logged (`skip`)."""
        if self.on_bad_image == "error":
            problem = self._first_of_all_ranks(batch["skipped"][0] if batch["skipped"] else None)
            if problem is not None:
                raise BadImageError(f"{problem}; fix or remove it, or set data.on_bad_image: skip to leave it out")
        for problem in batch["skipped"]:
            log.warning("skipped: %s", problem)
        return batch

    def _first_of_all_ranks(self, problem: str | None) -> str | None:
        """The problem of the first rank that has one, on every rank: a rank that stopped alone would leave the
        others waiting at their next collective until its timeout (30 minutes for NCCL and gloo). Only where
        every rank has as many batches: not in a streamed validation, test or predict split (unevened)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or self._uneven(trainer.state.stage):
            return problem
        import torch.distributed as dist

        found: list[str | None] = [None] * trainer.world_size
        dist.all_gather_object(found, problem)
        return next((p for p in found if p is not None), None)

    def _uneven(self, stage) -> bool:
        """Whether the ranks may get different numbers of batches in `stage` (a streamed split other than train,
        which `StreamDataset(even=True)` evens out)."""
        splits = {"sanity_check": "val", "validate": "val", "test": "test", "predict": "predict"}
        split = splits.get(getattr(stage, "value", stage))
        return split is not None and isinstance(self.datasets.get(split), StreamDataset)

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

    def _loader(self, split: str, shuffle: bool, with_targets: bool) -> DataLoader | list[DataLoader]:
        if self.mixture is not None and split != "train":
            return [part._loader(split, shuffle, with_targets) for part in self.parts]  # one per task, in order
        if split not in self.datasets:
            raise ValueError(f"no {split} data: set `data.{split}` in the config")
        dataset = self.datasets[split]
        options = {"batch_size": self.batch_size if split == "train" else self.eval_batch_size,
                   "num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                   "collate_fn": Collator(self.processor, with_targets, "skip")}  # see `on_before_batch_transfer`
        if isinstance(dataset, MixtureDataset):
            return MixtureLoader(dataset, self.mixture, self.trainer, **options)
        shuffle = shuffle and not isinstance(dataset, StreamDataset)  # a stream shuffles itself
        return DataLoader(dataset, shuffle=shuffle, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, with_targets=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, with_targets=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, with_targets=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False, with_targets=False)
