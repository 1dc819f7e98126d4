"""`<out>/manifest.jsonl` of `docvlm convert`, written safely by many processes.

Each process of a run (a rank of `--devices N --num-nodes M`, a `--shard I/N`, or the one process of a plain
run) appends its rows to a part file of its own, `manifest.part-<R>-of-<W>.jsonl`, holding an exclusive lock
on it while it runs: a row is durable (flushed, synced) as soon as its page is done, and two processes never
write one file. Parts that no process holds are merged into `manifest.jsonl` at the start and at the end of a
run (under `.convert.lock`), keeping the latest row of each (input, page); readers see `manifest.jsonl` plus
every part, so a resume with another world size still knows every finished page.

Rows are untrusted (a crafted or damaged manifest): a row whose id or outputs would point outside `--out`
is ignored with a warning, never used to choose a path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.jsonl"
PART_GLOB = "manifest.part-*.jsonl"
LOCK = ".convert.lock"
STAGING = ".staging"  # per part: exports are written here, then moved into place with their row


def row_key(row: dict) -> tuple[str, int | None]:
    return str(row.get("input")), row.get("page")


def safe_relative(path: object) -> bool:
    """A relative POSIX path that stays inside the folder it is joined to (no `..`, no root, no drive)."""
    if not isinstance(path, str) or not path or "\\" in path or "\0" in path:
        return False
    parts = PurePosixPath(path).parts
    return not PurePosixPath(path).is_absolute() and ".." not in parts and ":" not in parts[0]


def _valid(row: object) -> bool:
    if not isinstance(row, dict) or "input" not in row:
        return False
    page = row.get("page")
    if page is not None and (not isinstance(page, int) or isinstance(page, bool)):
        return False
    outputs = row.get("outputs", [])
    return (row.get("id") is None or safe_relative(row["id"])) and isinstance(outputs, list) and all(
        safe_relative(p) for p in outputs)


def read_rows(path: Path, warn) -> list[dict]:
    """The rows of one manifest file; a cut or foreign line is reported through `warn` and skipped."""
    rows = []
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line_no, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError:
                    row = None
                if not _valid(row):
                    warn(f"{path}:{line_no}: not a manifest row of this folder (cut by a kill, or crafted), ignored")
                    continue
                rows.append(row)
    except FileNotFoundError:  # merged and removed by another process meanwhile
        pass
    return rows


def latest(rows: list[dict]) -> list[dict]:
    """The latest row of each (input, page), in the order of those rows; a file-level error row of an input
    that gave pages later is dropped (the input was fixed)."""
    keep: dict[tuple[str, int | None], int] = {}
    for i, row in enumerate(rows):
        keep.pop(row_key(row), None)
        keep[row_key(row)] = i
    paged_since: dict[str, int] = {}
    for (input_, page), i in keep.items():
        if page is not None:
            paged_since[input_] = max(paged_since.get(input_, -1), i)
    return [rows[i] for (input_, page), i in sorted(keep.items(), key=lambda kv: kv[1])
            if not (page is None and paged_since.get(input_, -1) > i)]


def _write_atomically(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def _folder_lock(out: Path, exclusive: bool):
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): one process per folder
        yield
        return
    with (out / LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def _try_lock(path: Path):
    """`path` opened for appending with an exclusive lock, or None when another process holds it."""
    handle = path.open("a", encoding="utf-8")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        handle.close()
        return None
    return handle


def warn_stderr(message: str) -> None:
    print(f"docvlm convert: warning: {message}", file=sys.stderr)


class RunManifest:
    """The manifest as one process of a run sees and writes it."""

    def __init__(self, out: Path, rank: int = 0, world: int = 1, warn=warn_stderr):
        self.out, self.warn = out, warn
        self.path = out / MANIFEST
        self.part = out / f"manifest.part-{rank + 1}-of-{world}.jsonl"
        self.staging = out / STAGING / self.part.stem
        self._handle = None

    def merge(self) -> int:
        """Fold every part no process holds into `manifest.jsonl` (latest row per page); returns the rows."""
        broken: list[str] = []

        def warn(message: str) -> None:
            broken.append(message)
            self.warn(message)

        with _folder_lock(self.out, exclusive=True):
            rows = read_rows(self.path, warn) if self.path.is_file() else []
            merged, added = [], 0
            for part in sorted(self.out.glob(PART_GLOB)):
                handle = _try_lock(part)
                if handle is None:
                    continue  # a running process's part: merged when it is done
                with handle:
                    new = read_rows(part, warn)
                    rows += new
                    added += len(new)
                    merged.append(part)
            kept = latest(rows)
            if added or broken or len(kept) != len(rows):  # else the file is already what it would become
                _write_atomically(self.path, kept)
            rows = kept
            for part in merged:  # after the merged rows are durable; with what its process left half-written
                part.unlink(missing_ok=True)
                shutil.rmtree(self.out / STAGING / part.stem, ignore_errors=True)
            return len(rows)

    def read(self) -> dict[tuple[str, int | None], dict]:
        """The latest row of every page, from `manifest.jsonl` and all parts."""
        with _folder_lock(self.out, exclusive=False):
            rows = read_rows(self.path, self.warn) if self.path.is_file() else []
            for part in sorted(self.out.glob(PART_GLOB)):
                rows += read_rows(part, self.warn)
        return {row_key(row): row for row in latest(rows)}

    def open(self) -> bool:
        """Take this process's part; False when another process is writing it (the same run twice)."""
        self._handle = _try_lock(self.part)
        if self._handle is None:
            return False
        self._handle.seek(0, os.SEEK_END)
        if self._handle.tell():
            with self.part.open("rb") as f:  # after a line cut by a kill, start a fresh one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._handle.write("\n")
        return True

    def append(self, rows: list[dict]) -> None:
        """Append rows and make them durable before returning."""
        if not rows:
            return
        for row in rows:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
