"""`docvlm convert`: transcribe scanned documents in bulk with a (fine-tuned) model.

    docvlm convert --task T --model DIR_OR_ID INPUTS... --out DIR [--pages 1-3,7] [--skip-existing]

Inputs are image files, folders (searched recursively for images and PDFs) and PDFs, whose pages are
rasterised with pypdfium2. Each page is fitted to the model's input with the task's image mode, decoded
with the task's prompt, parsed, and exported with the task's `export` to `<out>/<name>.*`, where `<name>`
is the input's name without its suffix (relative to the folder given, for files found in folders),
`-p<N>` added for pages of PDFs and multi-page TIFFs, and `-2`, `-3`... when two inputs would share it.

`<out>/manifest.jsonl` gets one row per page as soon as its batch is done (appended, flushed, synced):
`{input, page, id, task, outputs, problems, error, text}`. A file that cannot be read (missing, corrupt,
truncated) gives an error row naming it and the run goes on. An interrupted run keeps every finished row
and file; `--skip-existing` then converts only the pages that have no successful row with all its files.
When a page is converted again, its newer row replaces the older one (the manifest is compacted at the end).

Parsing and export run in a child process: the renderers behind some exports are native code that can
abort or crash the whole process on odd model output (verovio segfaults on some **kern, for one). A crash
there costs only that page (an error row), and the child is restarted for the next page.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docvlm.tasks
from docvlm.export_worker import ExportError, ExportWorker
from docvlm.pages import Page, PageRange, PageRangeError, expand, parse_page_range
from docvlm.tasks.base import Task

MANIFEST = "manifest.jsonl"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = r"""exit status:
  0    every page was converted (pages whose output has parse problems count as converted:
       the problems are listed in the manifest)
  1    at least one input or page failed (missing or unreadable file, corrupt image or PDF, a
       decoding or export error): its manifest row has the error; the other pages were converted
  2    bad arguments, or the model could not be loaded
  130  interrupted: finished pages are kept; run again with --skip-existing to finish

examples:
  docvlm convert --task tables --model runs/pubtabnet-3b-896/lightning_logs/version_0/hf \
      scans/ report.pdf --pages 2-5 --out converted/
  docvlm convert --task music --model runs/grandstaff-3b-896/lightning_logs/version_0/hf \
      scores/ --out out/ --skip-existing
"""


# ---- arguments -----------------------------------------------------------------------------------
def _page_range(text: str) -> PageRange:
    try:
        return parse_page_range(text)
    except PageRangeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _task_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value (e.g. encoding=bekern)")
    return key.strip(), parse_scalar(value)


def parse_scalar(text: str) -> Any:
    """A `--task-option` value as a YAML scalar (`512` -> int, `true` -> bool, `null` -> None); text that
    is not a YAML scalar (`a: b`, `[x`) stays the string it is."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if value is None or isinstance(value, (str, int, float, bool)) else text


def _positive(kind: type):
    def check(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
        return value

    return check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docvlm convert",
        description="Convert scanned documents (images, folders, PDFs) with a fine-tuned model; one manifest "
                    "row per page in <out>/manifest.jsonl. A file that cannot be read gives an error row and the "
                    "run goes on; the exit status is then 1 (see below).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, PDFs, or folders (searched recursively for images and PDFs)")
    parser.add_argument("--task", required=True, choices=docvlm.tasks.names(), help="the task the model was trained for")
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="Hugging Face folder (e.g. a run's exported hf/), hub id, a `docvlm fit` checkpoint "
                             "(.ckpt), or `tiny` (random test model)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--pages", type=_page_range, metavar="RANGES",
                        help="pages of PDFs and multi-page TIFFs, e.g. 1-3,7 or 2- (to the end); default all. "
                             "Single images are always converted")
    parser.add_argument("--dpi", type=_positive(float), default=200.0,
                        help="PDF rasterisation resolution (default 200; pages over 40 megapixels are rendered smaller)")
    parser.add_argument("--batch-size", type=_positive(int), default=8, help="pages per decoding batch (default 8)")
    parser.add_argument("--num-beams", type=_positive(int), default=1, help="beam width; 1 = greedy (default)")
    parser.add_argument("--max-new-tokens", type=_positive(int),
                        help="longest output in tokens (default: the task's max_target_tokens)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights' dtype (default auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--skip-existing", "--resume", action="store_true", dest="skip_existing",
                        help="skip pages the manifest records as done (no error, all outputs present); "
                             "failed and missing pages are converted")
    parser.add_argument("--task-option", action="append", type=_task_option, default=[], metavar="KEY=VALUE",
                        help="task option, value read as a YAML scalar (repeatable), e.g. encoding=bekern")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="processes that load and rasterise pages while the model decodes (default 0)")
    parser.add_argument("--export-timeout", type=_positive(float), default=300.0, metavar="SECONDS",
                        help="longest parse + export of one page before it is stopped and counted failed (default 300)")
    return parser


def make_task(name: str, options: list[tuple[str, Any]]) -> Task:
    """`docvlm.tasks.get(name, **options)`, with a message listing the task's options on a bad key."""
    kwargs = dict(options)
    cls = type(docvlm.tasks.get(name))
    known = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    unknown = sorted(set(kwargs) - set(known)) if known else []
    if unknown:
        raise ValueError(f"task {name!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(known)}")
    try:
        return docvlm.tasks.get(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"task {name!r}: bad --task-option ({e})") from None


# ---- manifest --------------------------------------------------------------------------------------
def row_key(row: dict) -> tuple[str, int | None]:
    return str(row.get("input")), row.get("page")


class Manifest:
    """`<out>/manifest.jsonl`: rows appended as pages finish; the latest row for an (input, page) counts."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        self.broken = 0
        if path.is_file():
            with path.open(encoding="utf-8") as f:
                for line_no, text in enumerate(f, start=1):
                    if not text.strip():
                        continue
                    try:
                        row = json.loads(text)
                    except json.JSONDecodeError:
                        row = None
                    if not isinstance(row, dict) or "input" not in row:
                        # an interrupted write leaves a cut last line; anything else is not ours
                        print(f"docvlm convert: warning: {path}:{line_no}: not a manifest row, ignored", file=sys.stderr)
                        self.broken += 1
                        continue
                    self.rows.append(row)
        self.latest: dict[tuple[str, int | None], dict] = {}
        for row in self.rows:
            self.latest[row_key(row)] = row

    def append(self, rows: list[dict]) -> None:
        """Append rows and make them durable before returning."""
        if not rows:
            return
        needs_newline = False
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        with self.path.open("a", encoding="utf-8") as f:
            if needs_newline:  # after a cut last line
                f.write("\n")
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
        for row in rows:
            self.latest[row_key(row)] = row

    def compact(self) -> None:
        """Keep only the latest row per (input, page), dropping a file-level error row of an input that
        gave pages later; rewritten atomically, only when something is to be dropped."""
        keep: dict[tuple[str, int | None], int] = {}
        for i, row in enumerate(self.rows):
            keep.pop(row_key(row), None)
            keep[row_key(row)] = i
        paged_since = {}
        for key, i in keep.items():
            if key[1] is not None:
                paged_since[key[0]] = max(paged_since.get(key[0], -1), i)
        keep = {k: i for k, i in keep.items() if not (k[1] is None and paged_since.get(k[0], -1) > i)}
        if len(keep) == len(self.rows) and not self.broken:
            return
        rows = [self.rows[i] for i in sorted(keep.values())]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.rows, self.broken = rows, 0


def is_done(row: dict | None, task: str, out: Path) -> bool:
    """A successful row of this task whose output files all exist."""
    return (
        row is not None and row.get("error") is None and row.get("task") == task and bool(row.get("outputs"))
        and all((out / p).is_file() for p in row["outputs"])
    )


# ---- the run -----------------------------------------------------------------------------------------
@dataclass
class Job:
    page: Page
    id: str  # output stem relative to <out>, posix

    @property
    def key(self) -> tuple[str, int | None]:
        return str(self.page.input), self.page.page


def plan(pages: list[Page], manifest: Manifest) -> list[Job]:
    """One job per distinct (input, page), each with an output name no other page of the manifest or of
    this run has (compared case-insensitively); a page the manifest knows keeps its earlier name."""
    taken = {str(r["id"]).casefold() for r in manifest.latest.values() if r.get("id")}
    jobs, seen = [], set()
    for page in pages:
        key = (str(page.input), page.page)
        if key in seen:
            continue
        seen.add(key)
        earlier = manifest.latest.get(key)
        if earlier is not None and earlier.get("id"):
            jobs.append(Job(page, str(earlier["id"])))
            continue
        name, n = page.name, 2
        while name.casefold() in taken:
            name, n = f"{page.name}-{n}", n + 1
        taken.add(name.casefold())
        jobs.append(Job(page, name))
    return jobs


def _row(task: Task, input_: Path, page: int | None, id_: str | None, *, outputs=(), problems=(), error=None,
         text=None) -> dict:
    return {"input": str(input_), "page": page, "id": id_, "task": task.name, "outputs": list(outputs),
            "problems": list(problems), "error": error, "text": text}


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        task = make_task(args.task, args.task_option)
    except ValueError as e:
        parser.error(str(e))
    out: Path = args.out
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    out = Path(os.path.abspath(out))
    lock = _lock(out)
    if lock is None:
        parser.error(f"--out {out}: another docvlm convert is writing to this folder")

    try:
        return _run(args, task, out)
    finally:
        if lock is not True:
            lock.close()


def _run(args, task: Task, out: Path) -> int:
    manifest = Manifest(out / MANIFEST)
    pages, input_errors, warnings = expand(args.inputs, args.pages, exclude=out)
    for warning in warnings:
        print(f"docvlm convert: warning: {warning}", file=sys.stderr)
    jobs = plan(pages, manifest)
    todo = [j for j in jobs if not (args.skip_existing and is_done(manifest.latest.get(j.key), task.name, out))]
    skipped = len(jobs) - len(todo)
    failures = [e.error for e in input_errors]
    manifest.append([_row(task, e.input, None, None, error=e.error) for e in input_errors])

    stats = {"converted": 0, "problems": 0}
    code = EXIT_OK
    if todo:
        try:
            code = _convert(args, task, out, todo, manifest, failures, stats)
        except KeyboardInterrupt:
            print(f"\ndocvlm convert: interrupted; the pages finished so far are recorded in {manifest.path} "
                  f"(run again with --skip-existing to convert the rest)", file=sys.stderr)
            code = EXIT_INTERRUPTED
    manifest.compact()
    for error in failures[:20]:
        print(f"docvlm convert: error: {error}", file=sys.stderr)
    if len(failures) > 20:
        print(f"docvlm convert: ... and {len(failures) - 20} more errors (see {manifest.path})", file=sys.stderr)
    print(f"docvlm: {stats['converted']} pages converted ({stats['problems']} with problems in the output), "
          f"{len(failures)} failed, {skipped} skipped as done; manifest {manifest.path}")
    if code != EXIT_OK:
        return code
    return EXIT_FAILED if failures else EXIT_OK


def _lock(out: Path):
    """An open file holding an exclusive advisory lock on `<out>/.convert.lock` (released when the process
    ends, however it ends); None when another process holds it. Without `fcntl` (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:
        return True
    handle = (out / ".convert.lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _convert(args, task: Task, out: Path, todo: list[Job], manifest: Manifest, failures: list[str],
             stats: dict) -> int:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from docvlm.decode import Decoding
    from docvlm.model import load_for_inference

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine")
    except (RuntimeError, ValueError) as e:
        print(f"docvlm convert: error: --device {args.device}: {e}", file=sys.stderr)
        return EXIT_USAGE
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")

    worker = ExportWorker(task, args.export_timeout)
    worker.start()  # the child imports while the model loads
    try:
        try:
            model, processor = load_for_inference(args.model, dtype)
        except Exception as e:  # noqa: BLE001  missing folder, unknown hub id, no network, bad files
            print(f"docvlm convert: error: cannot load model {args.model!r}: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_USAGE
        model.to(device).eval()
        decoding = Decoding(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
        max_new_tokens = args.max_new_tokens or task.max_target_tokens
        size = processor.image_processor.size["height"]
        dataset = _PageDataset(todo, task, size, args.dpi)
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=max(args.num_workers, 0),
                            collate_fn=list)
        with tqdm(total=len(todo), unit="page", desc="converting", dynamic_ncols=True) as bar:
            for items in loader:
                rows = []
                good = [item for item in items if "error" not in item]
                for item in items:
                    if "error" in item:
                        job = todo[item["index"]]
                        rows.append(_row(task, job.page.input, job.page.page, job.id, error=item["error"]))
                texts = _decode(model, processor, good, decoding, max_new_tokens, device) if good else []
                for item, text in zip(good, texts):
                    rows.append(_export(worker, task, out, todo[item["index"]], text))
                manifest.append(rows)
                for row in rows:
                    if row["error"] is not None:
                        failures.append(row["error"])
                    else:
                        stats["converted"] += 1
                        stats["problems"] += bool(row["problems"])
                bar.update(len(items))
                bar.set_postfix(failed=len(failures), refresh=False)
    finally:
        worker.close()
    return EXIT_OK


class _PageDataset:
    """Jobs -> items for `docvlm.data.Collator`: the page loaded and fitted, or the error naming it."""

    def __init__(self, jobs: list[Job], task: Task, size: int, dpi: float):
        self.jobs, self.task, self.size, self.dpi = jobs, task, size, dpi

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from docvlm.images import BadImageError, fit

        job = self.jobs[index]
        item = {"index": index, "id": job.id, "prompt": self.task.prefix, "target": None, "truncated": False}
        try:
            return {**item, "image": fit(job.page.load(self.dpi), self.size, self.task.image_mode)}
        except BadImageError as e:
            return {**item, "error": str(e)}
        except Exception as e:  # noqa: BLE001  one odd file must not stop the batch
            return {**item, "error": f"{job.page.where}: cannot load ({type(e).__name__}: {e})"}


def _decode(model, processor, items: list[dict], decoding, max_new_tokens: int, device) -> list[str | Exception]:
    """Texts for the items; if the batch fails, each item alone, so one bad page fails alone (its entry is
    then the exception)."""
    import torch

    from docvlm.data import Collator
    from docvlm.decode import generate

    def run(group):
        batch = Collator(processor, with_targets=False)(group)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return generate(model, processor, batch, decoding, max_new_tokens)

    try:
        return run(items)
    except Exception as e:  # noqa: BLE001
        if len(items) == 1:
            return [e]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results: list[str | Exception] = []
    for item in items:
        try:
            results.extend(run([item]))
        except Exception as e:  # noqa: BLE001
            results.append(e)
    return results


def _export(worker: ExportWorker, task: Task, out: Path, job: Job, text: str | Exception) -> dict:
    page = job.page
    if isinstance(text, Exception):
        error = f"{page.where}: decoding failed ({type(text).__name__}: {text})"
        return _row(task, page.input, page.page, job.id, error=error)
    stem = out / job.id
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths, problems = worker.export(text, stem)
    except (ExportError, OSError) as e:
        return _row(task, page.input, page.page, job.id, error=f"{page.where}: {e}", text=text)
    outputs = [Path(os.path.relpath(p, out)).as_posix() if Path(p).is_absolute() else Path(p).as_posix() for p in paths]
    return _row(task, page.input, page.page, job.id, outputs=outputs, problems=problems, text=text)
