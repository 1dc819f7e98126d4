"""The generic manifest every task reads: JSONL or CSV rows of `{image, target, prefix?, id?}`.

Image paths are relative to the manifest's folder (`..` and absolute paths are the user's to choose).
A malformed row raises `ManifestError` naming the file, the line and, for bad JSON or bytes that are
not UTF-8, the column, before any training starts. Each sample keeps its row as
`Sample.source = "file:line"`, so that later errors (an unreadable image) name the row too.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from docvlm.errors import DataError, special_file_problem
from docvlm.tasks.sample import Sample


class ManifestError(DataError):
    """A manifest row that cannot be read; the message names the file and line."""


def read_manifest(path: str | Path) -> list[Sample]:
    path = Path(path)
    _require_file(path)
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else jsonl_rows(path)
    samples = []
    for line, row in rows:
        if not row.get("image"):
            raise ManifestError(f"{path}:{line}: row has no 'image' path")
        if not isinstance(row["image"], str):
            raise ManifestError(f"{path}:{line}: 'image' must be a path (a string), got {type(row['image']).__name__}")
        target = row.get("target")
        if target is not None and not isinstance(target, str):
            raise ManifestError(f"{path}:{line}: 'target' must be a string, got {type(target).__name__}")
        prefix = row.get("prefix") or ""
        if not isinstance(prefix, str):
            raise ManifestError(f"{path}:{line}: 'prefix' must be a string")
        image = path.parent / row["image"]
        meta = {k: v for k, v in row.items() if k not in {"image", "target", "prefix", "id"}}
        samples.append(Sample(id=str(row.get("id") or row["image"]), image=image, target=target, prefix=prefix,
                              meta=meta, source=f"{path}:{line}"))
    if not samples:
        raise ManifestError(f"{path}: the manifest has no rows "
                            "(expected one {\"image\": ..., \"target\": ...} per line)")
    return samples


def _require_file(path: Path) -> None:
    """`ManifestError` unless `path` is a regular file: reading a FIFO named `data.jsonl` would block."""
    try:
        problem = special_file_problem(path)
    except FileNotFoundError:
        problem = "no such manifest file"
    if problem is not None:
        raise ManifestError(f"{path}: {problem}")


def _decode(path: Path, line: int, raw: bytes) -> str:
    """One line as text; bytes that are not UTF-8 are named by line and column."""
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        column = len(raw[: e.start].decode("utf-8", errors="replace")) + 1
        raise ManifestError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); "
                            "save the manifest as UTF-8") from None


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; `ManifestError` names the file and line otherwise."""
    _require_file(path)
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            text = _decode(path, line, raw).rstrip("\r\n")  # an error at the end is then on this line
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{line}: not valid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise ManifestError(f"{path}:{line}: not valid JSON (nested too deeply)") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
            yield line, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    lines = [_decode(path, line, raw) for line, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1)]
    read = 0  # lines handed to the CSV reader: its own count lags behind when a line fails

    def numbered() -> Iterator[str]:
        nonlocal read
        for text in lines:
            read += 1
            yield text

    reader = csv.DictReader(numbered())
    try:
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise ManifestError(f"{path}:1: CSV header must name an 'image' column, got {reader.fieldnames}")
        for row in reader:
            if None in row:
                raise ManifestError(f"{path}:{reader.line_num}: more fields than the header names")
            yield reader.line_num, row
    except csv.Error as e:  # a field over the size limit, a quote where none may be
        raise ManifestError(f"{path}:{read}: not valid CSV ({e})") from None
