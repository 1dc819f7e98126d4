"""`docvlm convert`: transcribe scanned documents in bulk with a (fine-tuned) model.

    docvlm convert --model DIR_OR_ID INPUTS... --out DIR [--pages 1-3,7] [--skip-existing]
    docvlm convert --model DIR INPUTS... --out DIR --devices 8 [--num-nodes 4]   # or --shard I/N

Inputs are image files, folders (searched recursively for images and PDFs), PDFs, whose pages are
rasterised with pypdfium2, and manifests (`.jsonl`/`.csv` with `{image, prefix?}` rows, read as training
reads them) whose `prefix` is the page's own prompt part (a radiology INDICATION). Each page is fitted to the
model's input with the task's image mode, decoded with the task's prompt exactly as validation decodes
(`docvlm.inference`), parsed, and exported with the task's `export` to `<out>/<name>.*`, where `<name>` is
the input's name without its suffix (relative to the folder given, for files found in folders; dots made
`_`), `-p<N>` added for pages of PDFs and multi-page TIFFs, and `-2`, `-3`... when two inputs would share it.
Pages are decoded in batches of similar expected output length (`docvlm.batching`; `--no-length-buckets`
keeps the input order).

Every page gets one manifest row as soon as it is done (`{input, page, prefix, id, task, outputs, problems,
error, text, model}`, see `docvlm.convert_manifest`); a page is an (input, page, prompt part) triple, so an
image that a manifest lists with two prompts is converted for each. A file that cannot be read gives an error
row naming it and the run goes on. An interrupted run keeps every finished row and file; `--skip-existing`
then converts only the pages that have no successful row with all its files, whatever the number of processes
of either run.

Pages are spread over processes by a stable hash of (input, page): `--devices N --num-nodes M` through
Lightning Fabric (under `torchrun` or SLURM the world comes from the environment, as in Lightning), or
`--shard I/N` for one shard of a job array. Parsing and export run in `--export-workers` child processes
while the model decodes: the renderers behind some exports are native code that can crash on odd model
output, and such a crash (or a hang past `--export-timeout`) costs only that page. They get the decoded
output whole (a layout model's regions then carry their confidences) and, for a task whose export draws on
the page (layout: boxes in the page's pixels, the page with its boxes), the page, loaded again there.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from pathlib import Path
from typing import Any

from docvlm.convert_manifest import RunManifest
from docvlm.convert_run import (
    EXIT_OK,
    EXIT_USAGE,
    Job,
    Printer,
    World,
    count_row,
    execute,
    is_done,
    launch,
    place,
    plan,
    terminate,
)
from docvlm.export_worker import ExportError, ExportPool
from docvlm.inference import (
    Model,
    ModelLoadError,
    TaskMismatchError,
    add_model_arguments,
    check_task_early,
    load_from_args,
    positive,
    source_name,
)
from docvlm.pages import PageRange, PageRangeError, parse_page_range
from docvlm.pipeline.arguments import add_pipeline_arguments, refuse_without_pipeline
from docvlm.tasks.base import Sample, Task

EPILOG = r"""exit status:
  0    every page was converted (pages whose output has parse problems count as converted:
       the problems are listed in the manifest)
  1    at least one input or page failed (missing or unreadable file, corrupt image or PDF, a
       decoding or export error): its manifest row has the error; the other pages were converted
  2    bad arguments, or the model could not be loaded
  130  interrupted: finished pages are kept; run again with --skip-existing to finish
  143  terminated (SIGTERM: a scheduler's stop or preemption), handled as an interrupt

examples:
  docvlm convert --model runs/pubtabnet/lightning_logs/version_0/hf scans/ report.pdf --pages 2-5 --out converted/
  docvlm convert --model runs/mimic/hf studies.jsonl --out reports/          # per-page INDICATION prefixes
  docvlm convert --model google/paligemma2-3b-pt-896 --task tables scans/ --out out/
  docvlm convert --model runs/grandstaff/hf scores/ --out out/ --devices 8 --skip-existing
  srun docvlm convert --model hf/ corpus/ --out out/ --devices 4 --num-nodes 2   # SLURM, 2 x 4 GPUs
  docvlm convert --model hf/ corpus/ --out out/ --shard $((SLURM_ARRAY_TASK_ID + 1))/16
  docvlm convert --pipeline pipeline.yaml papers/ --out docs/     # regions routed to models, one document each
"""


# ---- arguments -----------------------------------------------------------------------------------
def _page_range(text: str) -> PageRange:
    try:
        return parse_page_range(text)
    except PageRangeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N with 1 <= I <= N, e.g. 3/16")
    return int(index), int(count)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docvlm convert",
        description="Convert scanned documents (images, folders, PDFs, manifests) with a fine-tuned model; one "
                    "manifest row per page in <out>/manifest.jsonl. A file that cannot be read gives an error row "
                    "and the run goes on; the exit status is then 1 (see below).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, PDFs, folders (searched recursively for images and PDFs), or "
                             ".jsonl/.csv manifests of {image, prefix?} rows")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder (created); it may not contain the inputs")
    parser.add_argument("--pages", type=_page_range, metavar="RANGES",
                        help="pages of PDFs and multi-page TIFFs, e.g. 1-3,7 or 2- (to the end); default all. "
                             "Single images are always converted")
    parser.add_argument("--dpi", type=positive(float), default=200.0,
                        help="PDF rasterisation resolution (default 200; pages over 40 megapixels are rendered "
                             "smaller)")
    parser.add_argument("--skip-existing", "--resume", action="store_true", dest="skip_existing",
                        help="skip pages the manifest records as done (no error, all outputs present); "
                             "failed and missing pages are converted")
    add_model_arguments(parser)
    add_pipeline_arguments(parser)
    parser.add_argument("--length-buckets", action=argparse.BooleanOptionalAction, default=True,
                        help="decode pages of similar expected output length together (sorted by the amount of "
                             "detail in each page within a few batches): fewer wasted decoding steps; manifest rows "
                             "then come in that order (default on)")
    work = parser.add_argument_group("processes")
    work.add_argument("--export-workers", type=positive(int), default=2,
                      help="processes that parse and export outputs while the model decodes (default 2)")
    work.add_argument("--export-timeout", type=positive(float), default=300.0, metavar="SECONDS",
                      help="longest parse + export of one page before it is stopped and counted failed (default 300)")
    work.add_argument("--devices", type=positive(int), default=1,
                      help="devices per node, one process each, through Lightning Fabric (default 1)")
    work.add_argument("--num-nodes", type=positive(int), default=1, help="nodes (default 1)")
    work.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "gpu", "mps"],
                      help="accelerator of --devices (default auto)")
    work.add_argument("--shard", type=_shard, metavar="I/N",
                      help="convert only shard I of N (1-based), e.g. one task of a job array; no launcher needed")
    return parser


def _ignore_sigterm(worker_id: int) -> None:
    """A page loader's start: SIGTERM (a scheduler signals every process of a job) is the main process's to
    handle, which then stops its loaders; a loader dying of it would fail the page it was reading."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ---- the world: which pages are this process's ------------------------------------------------------


# ---- pages and their output names -------------------------------------------------------------------


def _row(task: Task, job: Job, *, outputs=(), problems=(), error=None, text=None) -> dict:
    return {"input": str(job.page.input), "page": job.page.page, "prefix": job.prefix, "id": job.id,
            "task": task.name, "outputs": list(outputs), "problems": list(problems), "error": error, "text": text}


# ---- the command -------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    parser = build_parser()
    options = argv[: argv.index("--")] if "--" in argv else argv
    if {"-h", "--help"} & set(options):  # also `--pipeline --help`, where argparse would take --help for the file
        parser.print_help()
        return EXIT_OK
    args = parser.parse_args(argv)
    if args.pipeline is not None:
        from docvlm.pipeline.convert import main as convert_pages

        return convert_pages(args, parser)
    refuse_without_pipeline(args, parser)
    if args.model is None:
        parser.error("--model (or --pipeline) is required")
    if args.device is not None and args.devices * args.num_nodes > 1:
        parser.error("--device picks one device: use --accelerator with --devices")
    try:
        check_task_early(args)
    except ModelLoadError as e:  # a mistyped path: one line, before --out exists
        print(f"docvlm convert: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (TaskMismatchError, ValueError) as e:
        parser.error(f"--model {args.model}: {e}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a folder")
    try:
        world, device = launch(args)
    except (ValueError, RuntimeError) as e:
        parser.error(str(e))
    signal.signal(signal.SIGTERM, terminate)
    return world.worst(run(args, world, lambda: load_from_args(args, device), model_name=source_name(args.model)))


def convert_with(model: Model, inputs: list[str | Path], out: str | Path, **options) -> int:
    """`docvlm convert` in this process with a loaded model (`docvlm.load(...)`); returns its exit status.
    `options` are the command's long options with `_` for `-` (`pages="1-3"`, `skip_existing=True`)."""
    args = build_parser().parse_args(["--model", "-", "--out", str(out), "--", *map(str, inputs)])
    for key, value in options.items():
        if not hasattr(args, key):
            raise TypeError(f"convert() got an unknown option {key!r}")
        setattr(args, key, parse_page_range(value) if key == "pages" and isinstance(value, str) else value)
    shard_index, shard_count = args.shard or (1, 1)
    return run(args, World(shard_index - 1, shard_count), lambda: model, task=model.task, model_name=model.source)


def run(args: argparse.Namespace, world: World, load_model, task: Task | None = None,
        model_name: str | None = None) -> int:
    """Convert this process's share of the pages (`convert_run.execute`); `load_model()` is called only when
    there is work. Rows record `model_name`, the model that converted them."""
    task_name = task.name if task is not None else _task_name(args)

    def convert(found, known: dict, manifest: RunManifest, stats: dict, say: Printer) -> int:
        jobs = [j for j in plan(found, known) if world.owns(j.key)]
        done = {j.key for j in jobs if args.skip_existing and is_done(known.get(j.key), task_name, manifest.out)}
        todo = [j for j in jobs if j.key not in done]
        _warn_other_models([known[key] for key in done], model_name, say)
        stats["skipped"] = len(jobs) - len(todo)
        return _convert(args, load_model, manifest.out, todo, manifest, stats, say) if todo else EXIT_OK

    return execute(args, world, {"model": model_name}, task_name, convert)


def _warn_other_models(skipped: list[dict], model_name: str | None, say: "Printer") -> None:
    """Say when pages skipped as done were converted by another model than this run's (same task): they are
    kept as they are, and the folder then holds two models' outputs."""
    others = sorted({str(r["model"]) for r in skipped if r.get("model") not in (None, model_name)})
    if others and model_name is not None:
        count = sum(r.get("model") not in (None, model_name) for r in skipped)
        say.warning(f"--skip-existing: {count} pages skipped as done were converted by another model ({others[0]}"
                    f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}), not {model_name}: they are "
                    f"kept as they are; run without --skip-existing (or into another folder) to convert them "
                    f"with this model")


def _task_name(args: argparse.Namespace) -> str:
    """The task's name as the manifest records it, without loading the model (a .ckpt says it on loading)."""
    from docvlm import describe

    path = Path(str(args.model))
    description = describe.read(path) if path.is_dir() else None
    return describe.pick(description, args.task)["task"] if description else args.task


def _convert(args, load_model, out: Path, todo: list[Job], manifest: RunManifest, stats: dict, say: Printer) -> int:
    from concurrent.futures import FIRST_COMPLETED, wait

    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from docvlm.batching import by_length, window_batches
    from docvlm.errors import DataError
    from docvlm.inference import decode_items
    from docvlm.items import check_prompts
    from docvlm.pixels import hand_over

    try:
        model = load_model()
    except (ModelLoadError, TaskMismatchError, ValueError) as e:
        return say.error(f"--model {args.model}: {e}", EXIT_USAGE)
    try:  # before any page is decoded: a manifest row's prefix can be far longer than the model can read
        check_prompts(model.task, [Sample(id=j.id, image=None, prefix=j.prefix, source=f"{j.page.input}: its manifest "
                                          "row's prefix") for j in todo if j.prefix], model.processor, model.net)
    except DataError as e:
        return say.error(str(e), EXIT_USAGE)
    decoding, max_new_tokens = model.decoding_for(args.num_beams, args.max_new_tokens, args.repetition_guard)
    dataset = _PageDataset(todo, model.task, model.image_size, args.dpi)
    window = window_batches(args.batch_size, model.image_size) if args.length_buckets else 1
    workers = max(args.num_workers, 0)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=hand_over,
                        prefetch_factor=max(2, -(-window // workers)) if workers else None,  # a window ahead
                        worker_init_fn=_ignore_sigterm if workers else None)
    groups = by_length(loader, args.batch_size, window) if args.length_buckets else loader
    staging = manifest.staging
    pool = ExportPool(model.task, args.export_workers, args.export_timeout)
    pending: dict = {}

    def finish(futures) -> None:
        rows = []
        try:
            for future in futures:
                rows.append(_finish(future, *pending.pop(future), model.task, out, staging))
        finally:  # the rows of the pages placed, durable (one sync for them all) before decoding goes on
            manifest.append(rows)
            for row in rows:
                count_row(row, stats)
            bar.update(len(rows))
        bar.set_postfix(failed=len(stats["failed"]), refresh=False)

    with tqdm(total=len(todo), unit="page", desc="converting", dynamic_ncols=True, disable=None) as bar:
        try:
            for group in decode_items(model.net, model.processor, groups, decoding, max_new_tokens,
                                      model.task.wants_token_scores):
                failed = []
                for item, generation in group:
                    job = todo[item["index"]]
                    if isinstance(generation, Exception):
                        reason = item.get("error") or (f"{job.page.where}: decoding failed "
                                                       f"({type(generation).__name__}: {generation})")
                        failed.append(_row(model.task, job, error=reason))
                    else:
                        stem = staging / f"{item['index']}" / Path(job.id).name
                        # the page itself only for an export that draws on it: reloaded in the export process
                        page = functools.partial(job.page.load, args.dpi) if model.task.export_wants_image else None
                        pending[pool.submit(generation, stem, page)] = (job, generation)
                manifest.append(failed)
                for row in failed:
                    count_row(row, stats)
                bar.update(len(failed))
                while len(pending) > 4 * args.export_workers:  # decoding may run ahead, within bounds
                    finish(wait(list(pending), return_when=FIRST_COMPLETED).done)
            finish(list(pending))
        finally:
            if pending:  # interrupted: keep the exports that finished
                done = [f for f in pending if f.done()]
                pool.close(cancel=True)
                finish(done)
            pool.close()
    return EXIT_OK


def _finish(future, job: Job, generation, task: Task, out: Path, staging: Path) -> dict:
    """The page's row: its exported files moved from the staging folder into place, or the error."""
    page = job.page
    try:
        written, problems = future.result()
        outputs = [place(Path(path), staging, out, job.id) for path in written]
    except (ExportError, OSError, ValueError) as e:
        return _row(task, job, error=f"{page.where}: {e}", text=generation.text)
    return _row(task, job, outputs=outputs, problems=[*generation.problems, *problems], text=generation.text)


class _PageDataset:
    """Jobs -> `TaskDataset`-style items: the page loaded and fitted with its prompt and its expected output
    length (`docvlm.batching.detail`), or the error naming it."""

    def __init__(self, jobs: list[Job], task: Task, size: int, dpi: float):
        self.jobs, self.task, self.size, self.dpi = jobs, task, size, dpi

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from docvlm.batching import detail
        from docvlm.images import BadImageError, fit

        job = self.jobs[index]
        prompt = self.task.prompt(Sample(id=job.id, image=job.page.input, prefix=job.prefix))
        item = {"index": index, "id": job.id, "prompt": prompt, "target": None, "truncated": False}
        try:
            image = fit(job.page.load(self.dpi), self.size, self.task.image_mode)
        except BadImageError as e:
            return {**item, "error": str(e)}
        except Exception as e:  # noqa: BLE001  one odd file must not stop the batch
            return {**item, "error": f"{job.page.where}: cannot load ({type(e).__name__}: {e})"}
        return {**item, "image": image, "length": detail(image)}

