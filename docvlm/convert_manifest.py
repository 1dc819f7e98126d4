"""`<out>/manifest.jsonl` of `docvlm convert`, written safely by many processes.

Each process of a run (a rank of `--devices N --num-nodes M`, a `--shard I/N`, or the one process of a plain
run) appends its rows to a part file of its own, `manifest.part-<R>-of-<W>.jsonl`, holding an exclusive lock
on it while it runs: a row is durable (flushed, synced) as soon as its page is done, and two processes never
write one file. Parts that no process holds are merged into `manifest.jsonl` at the start and at the end of a
run (under `.convert.lock`), keeping the latest row of each (input, page); readers see `manifest.jsonl` plus
every part, so a resume with another world size still knows every finished page.

Rows are untrusted (a crafted or damaged manifest): a row whose id or outputs would point outside `--out`
is ignored with a warning, never used to choose a path. So are the folder's entries: every file and folder
kept here for the bookkeeping (the manifest, its parts and temporary file, the locks, the staging folders) is
opened without following links, and a folder holding a link (or a folder, a FIFO...) under one of those names
is refused before any work (`check_bookkeeping`): a planted link would lead writes and deletions outside.

Only one run writes to a folder at a time (`RunManifest.join`): the processes of a run (Fabric ranks, the
shards of one job array) share `.convert.run`, and a run with other inputs, pages or number of processes is
refused while they hold it, as it would give the same names to other pages.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.jsonl"
PART_GLOB = "manifest.part-*.jsonl"
LOCK = ".convert.lock"
RUN = ".convert.run"  # held (shared) by every process of the run writing here; holds the run's identity
STAGING = ".staging"  # per part: exports are written here, then moved into place with their row
TMP_SUFFIX = ".tmp"


class BookkeepingError(ValueError):
    """A bookkeeping name in `--out` is a link or the wrong kind of file; the message names it."""


def _open_nofollow(path: Path, flags: int) -> int:
    """`os.open` that refuses a link at `path` instead of following it (`BookkeepingError`)."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BookkeepingError(_refusal(path, "is a symbolic link")) from None
        raise


def _refusal(path: Path, what: str) -> str:
    return (f"{path} {what}: docvlm convert keeps its own files there (manifest, parts, locks, staging) and "
            f"never follows links for them: remove it")


def check_bookkeeping(out: Path) -> None:
    """Refuse (`BookkeepingError`) a link, or an entry of the wrong kind, under a bookkeeping name of `out`,
    before anything is written: staging files would be written through a linked `.staging`, and its clean-up
    would delete what the link leads to."""
    files = [out / MANIFEST, out / (MANIFEST + TMP_SUFFIX), out / LOCK, out / RUN, *out.glob(PART_GLOB)]
    staging = out / STAGING
    folders = [staging, *(staging.iterdir() if _is_real(staging, stat.S_ISDIR) else ())]
    for paths, kind, name in ((files, stat.S_ISREG, "a file"), (folders, stat.S_ISDIR, "a folder")):
        for path in paths:
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                raise BookkeepingError(_refusal(path, "is a symbolic link"))
            if not kind(mode):
                raise BookkeepingError(_refusal(path, f"is not {name}"))


def _is_real(path: Path, kind) -> bool:
    """`path` exists and is of `kind` (`stat.S_ISDIR`...) itself, not through a link."""
    try:
        return kind(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _delete_staging(out: Path, name: str) -> None:
    """Delete `out/.staging/<name>` and what it holds, following no link on the way (the folder is opened
    with `O_NOFOLLOW`, and `shutil.rmtree` with a folder descriptor never follows links below it)."""
    try:
        fd = _open_nofollow(out / STAGING, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (OSError, BookkeepingError):
        return  # no staging folder (or not ours to clean)
    try:
        shutil.rmtree(name, dir_fd=fd, ignore_errors=True)
    finally:
        os.close(fd)


def row_key(row: dict) -> tuple[str, int | None, str]:
    """A page and its prompt part (rows written before `prefix` was recorded have none)."""
    return str(row.get("input")), row.get("page"), str(row.get("prefix") or "")


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
        safe_relative(p) for p in outputs) and _encodable(row)


def _encodable(row: dict) -> bool:
    """Whether the row can be written back: JSON's `\\ud800` escape reads as a lone surrogate, which UTF-8
    cannot hold (the merge would fail on it)."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_rows(path: Path, warn) -> list[dict]:
    """The rows of one manifest file; a cut or foreign line is reported through `warn` and skipped."""
    rows = []
    try:
        with open(_open_nofollow(path, os.O_RDONLY), encoding="utf-8", errors="replace") as f:
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
    keep: dict[tuple[str, int | None, str], int] = {}
    for i, row in enumerate(rows):
        keep.pop(row_key(row), None)
        keep[row_key(row)] = i
    paged_since: dict[str, int] = {}
    for (input_, page, _), i in keep.items():
        if page is not None:
            paged_since[input_] = max(paged_since.get(input_, -1), i)
    return [rows[i] for (input_, page, _), i in sorted(keep.items(), key=lambda kv: kv[1])
            if not (page is None and paged_since.get(input_, -1) > i)]


def _write_atomically(path: Path, rows: list[dict]) -> None:
    """`path` replaced by `rows` all at once; the temporary file is created anew, never opened through a link."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.unlink(missing_ok=True)  # a stale one, or a link: the link itself goes, not what it leads to
    with open(_open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w", encoding="utf-8") as f:
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
    with open(_open_nofollow(out / LOCK, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def _try_lock(path: Path):
    """`path` opened for appending (and reading) with an exclusive lock, or None when another process holds it."""
    handle = open(_open_nofollow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND), "a", encoding="utf-8")
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

    def __init__(self, out: Path, rank: int = 0, world: int = 1, warn=warn_stderr, stamp: dict | None = None):
        self.out, self.warn = out, warn
        self.stamp = stamp or {}  # fields added to every row this process appends (the model converting)
        self.path = out / MANIFEST
        self.part = out / f"manifest.part-{rank + 1}-of-{world}.jsonl"
        self.staging = out / STAGING / self.part.stem
        self._handle = None
        self._run = None  # the descriptor of `.convert.run`, held shared while this process runs

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
                _delete_staging(self.out, part.stem)
            return len(rows)

    def read(self) -> dict[tuple[str, int | None, str], dict]:
        """The latest row of every page, from `manifest.jsonl` and all parts."""
        with _folder_lock(self.out, exclusive=False):
            rows = read_rows(self.path, self.warn) if self.path.is_file() else []
            for part in sorted(self.out.glob(PART_GLOB)):
                rows += read_rows(part, self.warn)
        return {row_key(row): row for row in latest(rows)}

    def join(self, identity: str) -> bool:
        """Join the run writing to this folder, or start one; False when another run is writing here.

        `identity` says what decides the run's output names and pages (its inputs, pages and number of
        processes): processes with the same one plan the same names and split the pages between them, while
        a run with another could give a name to a page of its own that this run gives to another page, and
        the two would overwrite each other's files under rows that no longer describe them."""
        try:
            import fcntl
        except ImportError:  # no advisory locks (Windows): one process per folder
            return True
        with _folder_lock(self.out, exclusive=True):  # one process at a time decides
            fd = _open_nofollow(self.out / RUN, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                started = True
            except BlockingIOError:  # a run holds it
                started = False
            if os.pread(fd, 4096, 0).decode(errors="replace") != identity:
                if not started:  # another run
                    os.close(fd)
                    return False
                os.ftruncate(fd, 0)  # no run here: this one starts, and the other processes of it join
                os.pwrite(fd, identity.encode(), 0)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
        self._run = fd
        return True

    def open(self) -> bool:
        """Take this process's part and a fresh staging folder; False when another process is writing the
        part (the same run twice)."""
        self._handle = _try_lock(self.part)
        if self._handle is None:
            return False
        fd = self._handle.fileno()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # after a line cut by a kill, start a fresh one
            self._handle.write("\n")
        self._fresh_staging()
        return True

    def _fresh_staging(self) -> None:
        """An empty staging folder of this part, made here (what a killed run left in it is deleted), inside
        a `.staging` that is a folder and not a link."""
        (self.out / STAGING).mkdir(exist_ok=True)
        if not _is_real(self.out / STAGING, stat.S_ISDIR):
            raise BookkeepingError(_refusal(self.out / STAGING, "is not a folder"))
        _delete_staging(self.out, self.staging.name)
        self.staging.mkdir()

    def remove_staging(self) -> None:
        """Delete this part's staging folder, and `.staging` when no other part uses it."""
        _delete_staging(self.out, self.staging.name)
        try:
            os.rmdir(self.out / STAGING)
        except OSError:  # another process's staging is in it, or it is not a folder
            pass

    def append(self, rows: list[dict]) -> None:
        """Append rows and make them durable before returning."""
        if not rows:
            return
        for row in rows:
            self._handle.write(json.dumps({**row, **self.stamp}, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._run is not None:
            os.close(self._run)
            self._run = None
