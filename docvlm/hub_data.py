"""Samples from a Hugging Face `datasets` dataset: a hub id with a split, or a `save_to_disk` folder.

Many users keep PubTabNet, GrandStaff or MIMIC-style sets as `datasets`; this reads them without holding
their pixels: each row's image stays in the (memory-mapped or streamed) dataset until the sample is
loaded. The task turns a row into a `Sample` (`Task.sample_from_record`), through a mapping of docvlm's
names (`image`, `target`, `prefix`, `id`) to the dataset's columns. `datasets` is an optional
dependency (`pip install docvlm[hub]`), imported only here and only when such a source is used.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from docvlm.errors import DataError
from docvlm.tasks.base import Sample, Task

# docvlm's name -> the dataset's column; a `None` target reads unlabelled data (predict).
COLUMNS: dict[str, str | None] = {"image": "image", "target": "target", "prefix": "prefix", "id": "id"}
STREAM_SHARDS = 64  # a local dataset is streamed in this many shards (at most one per row): workers x ranks share them
_BATCH = 256  # rows per read of the non-image columns


def columns(mapping: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The column mapping: `COLUMNS` with the user's entries on top (a task may read more keys, e.g. `html`)."""
    return {**COLUMNS, **(mapping or {})}


def read(task: Task, dataset: str, split: str | None, mapping: Mapping[str, str | None] | None,
         limit: int | None = None) -> list[Sample]:
    """Every row (or the first `limit`) as a sample. Only the non-image columns are read here; each image
    is a callable that reads its own row from the memory-mapped dataset."""
    data = _load(dataset, split, streaming=False)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    cols = columns(mapping)
    image = cols["image"]
    if image in data.column_names:
        images = data.select_columns([image])
        rest = data.remove_columns([image])
    else:  # the task's hook names the missing column, with the row
        images, rest = None, data
    samples = []
    for i, record in enumerate(_records(rest)):
        if images is not None:
            record[image] = functools.partial(_row_image, images, i, image)
        samples.append(_sample(task, record, cols, f"{_name(dataset, split)} row {i}"))
    return samples


def stream(task: Task, dataset: str, split: str | None, mapping: Mapping[str, str | None] | None,
           limit: int | None = None, part: int = 0, parts: int = 1, seed: int | None = None
           ) -> Iterator[tuple[int, Sample]]:
    """(index, sample) of part `part` of `parts` (a data-loader worker of a rank) of the streamed split,
    read lazily. The parts take whole shards (shuffled with `seed`); a part left without one gets nothing.
    With `limit`, the first `limit` rows are dealt out one by one instead. Indices are unique across parts."""
    data = _load(dataset, split, streaming=True)
    cols = columns(mapping)
    name = _name(dataset, split)
    if limit is not None:
        for i, record in enumerate(_records(data.take(limit))):
            if i % parts == part:
                yield i, _streamed(task, record, cols, f"{name} row {i}")
        return
    shards = list(range(part, data.num_shards, parts))
    if seed is not None:
        random.Random(seed).shuffle(shards)
    for shard in shards:
        for i, record in enumerate(_records(data.shard(data.num_shards, shard))):
            yield shard << 32 | i, _streamed(task, record, cols, f"{name} shard {shard} row {i}")


def _streamed(task: Task, record: dict[str, Any], cols: dict[str, str | None], source: str) -> Sample:
    image = cols["image"]
    if image in record:
        record[image] = functools.partial(_open_cell, record[image])
    return _sample(task, record, cols, source)


def _sample(task: Task, record: dict[str, Any], cols: dict[str, str | None], source: str) -> Sample:
    _check_text(record, cols, source)
    try:
        return task.sample_from_record(record, cols, source)
    except KeyError as e:
        column = e.args[0] if e.args else "?"
        raise DataError(f"{source}: no column {column!r} (the dataset has {sorted(record)}); map docvlm's names to "
                        f"the dataset's columns with `columns`, e.g. {{target: text}}") from None


def _check_text(record: dict[str, Any], cols: dict[str, str | None], source: str) -> None:
    """The target and prefix cells hold text (or nothing), named by row and column when they do not: an
    integer label column mapped as the target would otherwise fail in the tokenizer, deep in a batch."""
    for role in ("target", "prefix"):
        column = cols.get(role)
        value = record.get(column) if column else None
        if value is not None and not isinstance(value, str):
            raise DataError(f"{source}: column {column!r} (the {role}) holds {type(value).__name__} {value!r:.40}, "
                            f"not text")


def _name(dataset: str, split: str | None) -> str:
    return f"{dataset} [{split}]" if split else dataset


def _records(data) -> Iterator[dict[str, Any]]:
    """The rows of a `Dataset` or `IterableDataset` as dicts. `iter` is used, not `iter(data)`, which
    inside a data-loader worker would deal out shards among the workers a second time."""
    if not data.column_names and hasattr(data, "num_rows"):
        yield from ({} for _ in range(data.num_rows))
        return
    for batch in data.iter(batch_size=_BATCH):
        names = list(batch)
        for values in zip(*(batch[n] for n in names)):
            yield dict(zip(names, values))


def _row_image(images, index: int, column: str):
    return _open_cell(images[index][column])


def _open_cell(cell: Any):
    """An image cell for `docvlm.images.load_image`: encoded bytes as a file, a path, or a decoded image."""
    if isinstance(cell, dict):
        cell = cell.get("bytes") or cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return io.BytesIO(cell)
    if cell is None:
        raise ValueError("the row has no image")
    return cell


def _load(dataset: str, split: str | None, streaming: bool):
    """One split, its images encoded: a `Dataset`, or an `IterableDataset` when `streaming`."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{dataset}: reading `datasets` data needs the `datasets` library: "
                        "pip install 'docvlm[hub]'") from None
    try:
        if Path(dataset).exists():
            data = datasets.load_from_disk(dataset)
            if isinstance(data, datasets.DatasetDict):
                data = _split(dataset, data, split)
            if streaming:
                data = data.to_iterable_dataset(num_shards=max(1, min(STREAM_SHARDS, len(data))))
        else:
            data = datasets.load_dataset(dataset, split=split, streaming=streaming)
            if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
                data = _split(dataset, data, split)
    except (OSError, ValueError, ConnectionError) as e:  # not a dataset folder, unknown hub id, offline
        raise DataError(f"{dataset}: cannot load this dataset ({type(e).__name__}: {e})") from None
    return _undecoded(data)


def _undecoded(data):
    """`data` with its `Image` columns left encoded: decoding is `load_image`'s job, when a sample is used.
    (A stream's features may be unknown: its rows then hold decoded images, which `_open_cell` passes on.)"""
    import datasets

    for name, feature in (data.features or {}).items():
        if isinstance(feature, datasets.Image):
            data = data.cast_column(name, datasets.Image(decode=False))
    return data


def _split(dataset: str, splits, split: str | None):
    if split not in splits:
        raise DataError(f"{dataset}: {'no split ' + repr(split) if split else 'name a split'}; "
                        f"it has {sorted(splits)} (set `split`)")
    return splits[split]
