"""Mixtures: one model trained on several tasks at once, as PaliGemma's `mix` checkpoints and big_vision's
weighted dataset lists are.

A `Mixture` (`data.mixture` in a config) lists tasks, each with its own data, options, augmentation and
sampling weight. To the rest of the core it is a list of (task, data) pairs: each task's data is checked,
length-limited and augmented by a `DocDataModule` of its own, training draws examples from all of them by
weight (`MixtureSampler`: per example, so a batch holds several tasks), and validation decodes each task's
set with its own prompt and scores it with its own metrics (`val/<task>/<metric>`), beside one figure that
selects checkpoints: `val/score`, the mean over tasks of each task's `Task.main_score`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from docvlm.errors import DataError
from docvlm.images import Augment
from docvlm.items import Source
from docvlm.tasks.base import Task

SCORE = "score"  # `val/score`: the figure a mixture run selects checkpoints on


@dataclass
class MixtureTask:
    """One task of a mixture.

    Attributes:
        task: the task and its options (e.g. `{class_path: docvlm.tasks.tables.TablesTask}`); its prompt
            must differ from every other task's, or the model could not tell them apart.
        train: its training samples.
        val: its validation samples (required: each task is scored on its own).
        weight: its share of the training examples, relative to the others' (> 0); big_vision's mixtures
            weigh each dataset by its size.
        augment: its training augmentation; `null` turns it off.
    """

    task: Task
    train: Source
    val: Source | None = None
    weight: float = 1.0
    augment: Augment | None = field(default_factory=Augment)


@dataclass
class Mixture:
    """Several tasks trained as one model, examples drawn per task by weight.

    Attributes:
        tasks: the tasks, each with its data, weight and augmentation.
        seed: seed of the draws (which task, which example); a resumed run draws what the uninterrupted one would.
        epoch_size: examples per epoch over all ranks (default: all tasks' training samples together).
    """

    tasks: list[MixtureTask]
    seed: int = 0
    epoch_size: int | None = None

    def check(self) -> None:
        """Mistakes that would waste a run, found before any data is read (`DocDataModule` calls it: raised
        from `__post_init__`, they would reach the user inside the config parser's own message)."""
        if not self.tasks:
            raise DataError("data.mixture.tasks: a mixture needs at least one task")
        seen: dict[str, str] = {}
        for i, part in enumerate(self.tasks):
            where, name = f"data.mixture.tasks[{i}]", part.task.name
            if not part.weight > 0 or not math.isfinite(part.weight):
                raise DataError(f"{where} ({name}): weight {part.weight} must be a positive number")
            if part.val is None:
                raise DataError(f"{where} ({name}): no validation data: set its `val` (each task is scored on its own)")
            if part.train.streaming or part.val.streaming:
                raise DataError(f"{where} ({name}): a mixture draws from samples it can count: streaming is not "
                                "supported here")
            for other, label in ((name, "name"), (part.task.prefix, "prompt")):
                if (label, other) in seen:
                    raise DataError(f"{where} ({name}) has the same {label} as {seen[label, other]}: {other!r}; "
                                    "neither the model nor --task could tell them apart")
                seen[label, other] = f"{where} ({name})"
        if self.epoch_size is not None and self.epoch_size < 1:
            raise DataError(f"data.mixture.epoch_size: {self.epoch_size} must be at least 1")

    @property
    def names(self) -> list[str]:
        return [part.task.name for part in self.tasks]

    @property
    def weights(self) -> list[float]:
        total = sum(part.weight for part in self.tasks)
        return [part.weight / total for part in self.tasks]

    @property
    def max_target_tokens(self) -> int:
        """The longest output any of its tasks asks for (the exported generation config's default)."""
        return max(part.task.max_target_tokens for part in self.tasks)


def tasks_of(task: Task | Mixture) -> list[tuple[str | None, Task]]:
    """(name, task) of each task a run decodes: a single task unnamed (its metrics keep their `val/<metric>`
    keys), a mixture's tasks by name (`val/<task>/<metric>`), in the order of its validation loaders."""
    return [(part.task.name, part.task) for part in task.tasks] if isinstance(task, Mixture) else [(None, task)]


def score(scores: dict[str | None, dict[str, float]], tasks: Sequence[tuple[str | None, Task]]) -> float:
    """The mean over tasks of each task's main metric as a score in [0, 1] (`Task.main_score`)."""
    values = [task.main_score(scores[name]) for name, task in tasks if name in scores]
    return sum(values) / len(values)


class MixtureDataset(Dataset):
    """The tasks' training datasets one after another; item `i` of task `t` is `offsets[t] + i`."""

    def __init__(self, datasets: Sequence[Dataset]):
        self.datasets = list(datasets)
        self.offsets = [0]
        for dataset in self.datasets:
            self.offsets.append(self.offsets[-1] + len(dataset))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        part = next(t for t in range(len(self.datasets)) if index < self.offsets[t + 1])
        return self.datasets[part][index - self.offsets[part]]


class MixtureSampler(DistributedSampler):
    """Indices into a `MixtureDataset`, each example's task drawn by weight (so a batch mixes tasks), the
    example within its task from a fresh permutation of the task's set (every sample is seen before one
    repeats). The whole epoch's draw depends on (seed, epoch) alone; rank `r` of `n` takes every n-th index
    from `r`, so each rank sees its share of every task.

    `state_dict` / `load_state_dict` carry where a rank is in its epoch (`MixtureLoader` keeps them in the
    checkpoint), so a run resumed mid-epoch draws the same next examples as one that was never stopped.
    A `DistributedSampler` (its `__init__` unused) so that Lightning, which wraps other samplers in one under
    DDP, leaves it as it is and calls `set_epoch`.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int = 0, epoch_size: int | None = None,
                 rank: int = 0, world_size: int = 1):
        self.sizes, self.weights = list(sizes), list(weights)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_replicas, self.shuffle, self.drop_last = world_size, True, False  # as DistributedSampler's
        self.per_rank = math.ceil((epoch_size or sum(self.sizes)) / world_size)
        self.epoch = 0
        self.start = 0  # indices of this epoch already consumed by this rank (set on resuming)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning as each epoch starts; a resumed position holds for its own epoch only."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def draw(self, epoch: int) -> list[tuple[int, int]]:
        """Every rank's (task, example) of `epoch`, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        total = self.per_rank * self.world_size
        tasks = torch.multinomial(torch.tensor(self.weights, dtype=torch.double), total, replacement=True,
                                  generator=generator).tolist()
        orders: list[list[int]] = [[] for _ in self.sizes]
        draws = []
        for task in tasks:
            if not orders[task]:
                orders[task] = torch.randperm(self.sizes[task], generator=generator).tolist()[::-1]
            draws.append((task, orders[task].pop()))
        return draws

    def __iter__(self) -> Iterator[int]:
        offsets = [sum(self.sizes[:t]) for t in range(len(self.sizes))]
        mine = self.draw(self.epoch)[self.rank::self.world_size]
        start, self.start = self.start, 0
        return iter([offsets[task] + example for task, example in mine[start:]])

    def state_dict(self, consumed: int) -> dict[str, int]:
        """The position after `consumed` indices of the current epoch on this rank."""
        return {"epoch": self.epoch, "consumed": consumed, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state["seed"], state["world_size"]) != (self.seed, self.world_size):
            raise DataError(f"the checkpoint's mixture was drawn with seed {state['seed']} on {state['world_size']} "
                            f"ranks, this run's with seed {self.seed} on {self.world_size}: the draws would differ; "
                            "resume with the same data.mixture.seed and devices")
        self.epoch, self.start = state["epoch"], state["consumed"]


class MixtureLoader(DataLoader):
    """A mixture's training loader, resumable: Lightning saves its `state_dict` with the fit loop and loads it
    before the resumed epoch is iterated. The position is the batches the loop has trained on, not those the
    loader has handed out (workers and Lightning's fetcher read ahead)."""

    def __init__(self, dataset: MixtureDataset, mixture: Mixture, trainer, **options):
        sampler = MixtureSampler([len(d) for d in dataset.datasets], mixture.weights, mixture.seed, mixture.epoch_size,
                                 trainer.global_rank, trainer.world_size)
        super().__init__(dataset, sampler=sampler, **options)
        self.trainer = trainer

    def state_dict(self) -> dict[str, int]:
        batches = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return self.sampler.state_dict(batches * self.batch_size)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


_TASK_KEYS = ("task", "options", "prompt", "image_mode", "max_target_tokens", "metrics", "measured_on")


def description(mix: Mixture, image_size: int, decoding, metrics: dict[str, float], step: int,
                base_model: str | None = None) -> dict[str, Any]:
    """`docvlm.json` of a mixture model trained from `base_model`: each task as a single task's description gives
    it (name, options, prompt, image mode, length, its last metrics and what they were measured on, in words) and
    its weight, the shared settings once. `metrics`: the last validation values without `val/` (`tables/teds`,
    `score`)."""
    from docvlm import describe

    tasks = []
    for part in mix.tasks:
        name = part.task.name
        mine = {key[len(name) + 1:]: value for key, value in metrics.items() if key.startswith(f"{name}/")}
        count = int(mine.pop("samples", None) or 0)
        measured_on = {"split": "val", "samples": count, "step": step,
                       "source": part.val.describe(count, "validation") if part.val is not None else None} \
            if mine else None
        one = describe.description(part.task, image_size, decoding, mine, measured_on)
        tasks.append({**{key: one[key] for key in _TASK_KEYS}, "weight": part.weight})
    shared = describe.description(mix.tasks[0].task, image_size, decoding, base_model=base_model)
    return {"tasks": tasks, "base_model": base_model, "image_size": image_size,
            "max_target_tokens": mix.max_target_tokens, "decoding": shared["decoding"],
            "docvlm_version": shared["docvlm_version"], "seed": mix.seed, "score": metrics.get(SCORE)}
