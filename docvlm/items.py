"""Samples into the model's inputs, the same for training, validation, `evaluate` and `convert`: where a
split's samples come from (`Source`), datasets of items (prompt, target, fitted image) that data-loader
workers load, and collation through `PaliGemmaProcessor` (prefix-LM layout, labels on the suffix only).
Nothing here needs Lightning, so decoding imports it without the training stack.
"""

from __future__ import annotations

import itertools
import logging
import random
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from docvlm import hub_data
from docvlm.errors import DataError
from docvlm.images import Augment, BadImageError, fit, load_image
from docvlm.pixels import PixelTable, to_image
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

    def describe(self, samples: int, role: str = "") -> str:
        """The samples as a person names them ("64 synthetic validation samples, seed 1"), for model cards and
        reports; `role` (validation, training) is said when given."""
        kind = " ".join(filter(None, [str(samples), "synthetic" if self.synthetic else "", role, "samples"]))
        if self.synthetic:
            return f"{kind}, seed {self.seed}"
        where = f"the dataset {self.dataset}" if self.dataset else str(self.path)
        split = f", split {self.split}" if self.split else ""
        return f"{kind} of {where}{split}"

    def stream(self, task: Task, part: int = 0, parts: int = 1,
               seed: int | None = None) -> Iterator[tuple[int, Sample]]:
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
                self._pipeline = self.task.augmentation(self.augment)
            image, item["target"] = self.task.augment_pair(self._pipeline, image, target)
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


FILLER = -1  # the index of a filler item: `StreamDataset(even=True)` after its rows


class StreamDataset(_Items, IterableDataset):
    """A streamed split as the same items as `TaskDataset`, read lazily: each data-loader worker of each
    rank reads its own shards (`Source.stream`); missing targets raise and over-long targets are skipped
    or cut as they come (counted in the log per worker); training order is shuffled within a buffer.

    Ranks get unequal numbers of rows (shards differ in size, and in number per rank), and a DDP rank whose
    epoch ends first would wait for the others at a different collective than theirs, forever. With `even`,
    the rows are followed by endless filler items (index `FILLER`, a blank page), and every rank ends the
    epoch at the first step where any rank's batch holds one (`DocVLM.on_train_batch_start`): the epoch
    lasts as long as the rank with the fewest rows, whose remaining rows wait for the next epoch's order."""

    SHUFFLE_BUFFER = 256  # rows

    def __init__(self, source: Source, task: Task, image_size: int, augment: Augment | None = None, *,
                 split: str, tokenizer=None, overlength: str = "skip", rank: int = 0, world_size: int = 1,
                 shuffle: bool = False, even: bool = False):
        super().__init__(task, image_size, augment)
        self.source = source
        self.split = split
        self.tokenizer = tokenizer  # set for training: the length limit applies
        self.overlength = overlength
        self.rank, self.world_size = rank, world_size
        self.shuffle = shuffle
        self.even = even
        self._epoch = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        seed = torch.initial_seed() + self._epoch if self.shuffle else None  # workers differ, epochs too
        self._epoch += 1
        rows = self.source.stream(self.task, self.rank * workers + worker_id, self.world_size * workers, seed)
        if self.shuffle:  # rows, not items: the buffer holds encoded images, not fitted pixels
            rows = _buffer_shuffled(rows, random.Random(seed), self.SHUFFLE_BUFFER)
        return itertools.chain(self._items(rows), self._fillers()) if self.even else self._items(rows)

    def _fillers(self) -> Iterator[dict[str, Any]]:
        """Blank pages, never trained on: they only say that this loader's rows are done."""
        page = Image.new("RGB", (self.image_size, self.image_size), "white")
        prompt = self.task.prompt(Sample(id="filler", image=page))
        while True:
            yield {"index": FILLER, "id": "filler", "prompt": prompt, "target": "", "truncated": False, "image": page}

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


GEMMA2_POSITIONS = 8192  # Gemma 2's positions, in every PaliGemma 2 and the tiny model: when the model is not at hand


def prompt_budget(processor, net=None) -> int:
    """Tokens one prompt may have: the language model's positions less the image's tokens, `<bos>` and the
    newline. A longer prompt is no prompt the model can read (a 10 MB one took minutes and gigabytes)."""
    config = getattr(getattr(net, "config", None), "text_config", None)
    positions = getattr(config, "max_position_embeddings", None) or GEMMA2_POSITIONS
    return positions - processor.image_seq_length - 2


def check_prompts(task: Task, samples: Iterable[Sample], processor, net=None) -> None:
    """A `DataError` naming the first sample (its manifest row) whose prompt is longer than `prompt_budget`,
    before any work; the task's own prompt is checked once, then each sample's own part."""
    budget = prompt_budget(processor, net)
    for sample in [Sample(id="", image=None, source=f"task {task.name!r}: its prefix"), *samples]:
        if sample.id and not sample.prefix:
            continue
        tokens = _prompt_tokens(processor.tokenizer, task.prompt(sample), budget)
        if tokens > budget:
            raise DataError(f"{row(sample)}: the prompt has {tokens} tokens or more, longer than the {budget} the "
                            f"model has for one (its positions less the image's {processor.image_seq_length} tokens); "
                            "shorten the prompt")


def _prompt_tokens(tokenizer, prompt: str, budget: int) -> int:
    """The prompt's tokens, found without tokenizing all of a huge one: its start is over budget already."""
    start = prompt[: (budget + 1) * 64]
    tokens = len(tokenizer(start, add_special_tokens=False)["input_ids"])
    if tokens > budget or len(start) == len(prompt):
        return tokens
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


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

    def pixel_values(self, images: list) -> torch.Tensor | None:
        """The table's pixel values of `images`, or None where the processor must make them. Thread-safe,
        and the look-up releases the GIL: decoding makes the next batch's while the model runs."""
        if self._table is False:
            self._table = PixelTable.build(self.processor.image_processor)
        return self._table(images) if self._table is not None and self._table.accepts(images) else None

    def __call__(self, items: list[dict[str, Any]], pixel_values: torch.Tensor | None = None) -> dict[str, Any]:
        """The batch of `items`; `pixel_values`: this method's `pixel_values` of their images, made ahead."""
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
        if pixel_values is None:
            pixel_values = self.pixel_values(images)
        with warnings.catch_warnings():  # numpy 2 deprecation inside the processor's tensor conversion
            warnings.simplefilter("ignore", DeprecationWarning)
            if pixel_values is not None:  # the processor's own text path, with 1-pixel stand-ins for the images
                encoded = self.processor(text=prompts, images=[_STAND_IN] * len(images), suffix=suffix,
                                         padding="longest", return_tensors="pt", **_NO_PIXEL_WORK)
                encoded["pixel_values"] = pixel_values
            else:
                encoded = self.processor(text=prompts, images=[to_image(image) for image in images], suffix=suffix,
                                         padding="longest", return_tensors="pt")
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
