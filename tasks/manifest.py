"""The generic manifest every task reads: JSONL or CSV rows of `{image, target, prefix?, id?}`.

Image paths are relative to the manifest's folder. A malformed row raises `ManifestError` naming the
file and the line, before any training starts.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from docvlm.tasks.base import Sample


class ManifestError(ValueError):
    """A manifest row that cannot be read; the message names the file and line."""


def read_manifest(path: str | Path) -> list[Sample]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else jsonl_rows(path)
    samples = []
    for line, row in rows:
        if not isinstance(row.get("image"), str) or not row["image"]:
            raise ManifestError(f"{path}:{line}: row has no 'image' path")
        target = row.get("target")
        if target is not None and not isinstance(target, str):
            raise ManifestError(f"{path}:{line}: 'target' must be a string, got {type(target).__name__}")
        prefix = row.get("prefix") or ""
        if not isinstance(prefix, str):
            raise ManifestError(f"{path}:{line}: 'prefix' must be a string")
        image = path.parent / row["image"]
        meta = {k: v for k, v in row.items() if k not in {"image", "target", "prefix", "id"}}
        meta["source"] = f"{path}:{line}"
        samples.append(Sample(id=str(row.get("id") or row["image"]), image=image, target=target, prefix=prefix, meta=meta))
    return samples


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; `ManifestError` names the file and line otherwise."""
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{line}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
            yield line, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise ManifestError(f"{path}:1: CSV header must name an 'image' column, got {reader.fieldnames}")
        for row in reader:
            if None in row:
                raise ManifestError(f"{path}:{reader.line_num}: more fields than the header names")
            yield reader.line_num, row
