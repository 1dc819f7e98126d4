"""`docvlm convert --pipeline P.yaml [--regions R.jsonl] INPUTS --out OUT`: documents, not crops.

Convert's guarantees hold, for pages: one manifest row per page (`docvlm.convert_manifest`), written as soon as
the page is done, listing its regions (label, box, confidence, task, source, outputs, problems); exactly once
under `kill -9` and `--skip-existing`; `--devices N`, `--shard I/N`; nothing written outside `--out`; a page
that fails is an error row and the others go on. Pages are spread over processes by input, not by page, so
that the process holding a document's last page assembles it.

Per page `<out>/<doc>/`: each region's content exported with its task's `export` (in an export process, as
convert does: a renderer crashing on odd output costs only that region) as `p<N>-r<K>-<label>.*`, the page
drawn with its boxes (`p<N>.png`), and the page's result (`p<N>.page.json`), from which a resumed run rebuilds
the document without decoding the page again. When every page of a document has its row: `<out>/<doc>.docling.json`,
`<out>/<doc>.md` and, with music, `<out>/<doc>.krn`, listed with the row of the page that completed it. At the
end, `<out>/review.html` lists the pages to check first (failed, with problems, least confident regions).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from docvlm.convert_manifest import RunManifest, safe_relative
from docvlm.convert_run import (
    EXIT_OK,
    EXIT_USAGE,
    Printer,
    World,
    count_row,
    execute,
    is_done,
    launch,
    place,
    terminate,
)
from docvlm.pages import Page
from docvlm.pipeline.results import PageResult, RegionResult

TASK = "pipeline"  # the manifest's `task` of a page row
PAGE_JSON = ".page.json"
REVIEW = "review.html"  # the run's, beside the manifest: no page's output
REGION_STEM = re.compile(r"p\d+-r\d+-.*", re.IGNORECASE)  # a region's files, `p<N>-r<K>-<label>.*`


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The command with `--pipeline` (convert's `main` hands over once the arguments are parsed)."""
    from docvlm.pipeline.regions_file import RegionsFileError, read_regions
    from docvlm.pipeline.spec import PipelineSpecError

    if args.model is not None:
        parser.error("--pipeline names its models: leave out --model")
    if args.task is not None or args.task_option:
        parser.error("--pipeline names its models' tasks (routes: label: {model, task}): leave out --task and "
                     "--task-option")
    if args.device is not None and args.devices * args.num_nodes > 1:
        parser.error("--device picks one device: use --accelerator with --devices")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a folder")
    root = os.path.realpath(args.out)
    for path in (args.pipeline, args.regions):  # inputs as much as the pages: an output could replace them
        if path is not None and os.path.commonpath([root, os.path.realpath(path)]) == root:
            print(f"docvlm convert: error: --out {args.out} contains the input {path}: outputs could overwrite "
                  f"inputs; write to a folder outside the inputs", file=sys.stderr)
            return EXIT_USAGE
    try:
        pipeline = _pipeline(args, device="cpu")  # every model and task checked once, before processes start
        given = read_regions(args.regions) if args.regions is not None else None
    except (PipelineSpecError, RegionsFileError, ValueError) as e:
        print(f"docvlm convert: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for warning in pipeline.warnings:
        print(f"docvlm convert: warning: {warning}", file=sys.stderr)
    try:
        world, device = launch(args)
    except (ValueError, RuntimeError) as e:
        parser.error(str(e))
    signal.signal(signal.SIGTERM, terminate)
    return world.worst(run(args, world, lambda: _pipeline(args, str(device)), given))


def _pipeline(args: argparse.Namespace, device: str):
    from docvlm.pipeline.crops import DEFAULT_MARGIN
    from docvlm.pipeline.run import load_pipeline

    return load_pipeline(args.pipeline, device=device, dtype=args.dtype, batch_size=args.batch_size,
                         num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                         repetition_guard=args.repetition_guard,
                         margin=DEFAULT_MARGIN if args.margin is None else args.margin, dpi=args.dpi,
                         one_model_at_a_time=args.one_model_at_a_time, window=args.window)


# ---- documents and their pages ------------------------------------------------------------------------
def document_names(pages: list[Page], known: dict) -> dict[str, str]:
    """Input -> its document's output name, unique (case-insensitively) in the folder, and never the name of
    another document's region files (`_` before it); an input the manifest knows keeps its earlier name. Every
    process computes the same names."""
    earlier = {str(r["input"]): str(r["document"]) for r in known.values()
               if isinstance(r.get("document"), str) and safe_relative(r["document"])}
    taken = {name.casefold() for name in earlier.values()}
    names: dict[str, str] = {}
    for page in pages:
        key = str(page.input)
        if key in names:
            continue
        if key in earlier:
            names[key] = earlier[key]
            continue
        base = page.name if page.page is None else page.name[: -len(f"-p{page.page}")]
        folder, _, leaf = base.rpartition("/")
        if REGION_STEM.fullmatch(leaf):  # `a/p1-r1-table.md` is also the region file of document `a`'s table
            base = f"{folder}/_{leaf}" if folder else f"_{leaf}"
        name, n = base, 2
        while name.casefold() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.casefold())
        names[key] = name
    return names


def page_id(document: str, page: int | None) -> str:
    return f"{document}/p{page or 1}"


def to_json(page: PageResult) -> dict:
    """A page's result as its `.page.json` holds it (no parsed values: they are rebuilt from the texts)."""
    return {**asdict(page), "regions": [region.row() for region in page.regions]}


def from_json(data: dict, pipeline) -> PageResult:
    """A page's result read back, each region's value parsed again from its text with its route's task.
    TypeError or ValueError for one that is not as `to_json` writes it (cut, or crafted: a number as a text,
    a lone surrogate no document can hold)."""
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError (a ValueError) for a surrogate
    regions = []
    for row in data["regions"]:
        region = _region_from_row(row)
        task = _task(pipeline, region)
        if region.text is not None:
            region.value = task.parse(region.text).value if task is not None else region.text
        regions.append(region)
    page = PageResult(**{**data, "regions": regions})
    numbers = (page.width, page.height, page.skew)
    if (not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
            or page.unit not in ("px", "pt") or page.rotation not in (0, 90, 180, 270)
            or not all(isinstance(p, str) for p in page.problems) or page.error is not None):
        raise TypeError("not a page's result")
    return page


def _task(pipeline, region: RegionResult):
    ref = pipeline.spec.routes.get(region.label)
    return pipeline.tasks[ref] if ref is not None and region.task is not None else None


def _label(label: str) -> str:
    """A label as part of a file name: letters, digits, `-` and `_` only (labels come from regions files)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label)[:40] or "_"


# ---- the run -----------------------------------------------------------------------------------------
def run(args: argparse.Namespace, world: World, load_pipeline, given=None) -> int:
    """Convert this process's documents (`convert_run.execute`); `load_pipeline()` is called only when there is
    work."""

    def convert(found, known: dict, manifest: RunManifest, stats: dict, say: Printer) -> int:
        if any(prefix for _, prefix in found):
            say.warning("the pipeline reads no prompt parts: the manifests' prefixes are ignored")
        pages, seen = [], set()
        for page, _ in found:
            if (str(page.input), page.page) not in seen:
                seen.add((str(page.input), page.page))
                pages.append(page)
        names = document_names(pages, known)
        mine = [p for p in pages if world.owns((str(p.input), None))]
        done = {(str(p.input), p.page) for p in mine
                if args.skip_existing and is_done(known.get((str(p.input), p.page, "")), TASK, manifest.out)}
        todo = [p for p in mine if (str(p.input), p.page) not in done]
        stats["skipped"] = len(mine) - len(todo)
        if not todo:
            return EXIT_OK
        return _convert(args, load_pipeline, given, manifest.out, mine, todo, names, known, manifest, stats, say)

    stamp = {"pipeline": os.path.abspath(args.pipeline)}
    return execute(args, world, stamp, TASK, convert, after=_review)


def _convert(args, load_pipeline, given, out: Path, mine: list[Page], todo: list[Page], names: dict[str, str],
             known: dict, manifest: RunManifest, stats: dict, say) -> int:
    from tqdm import tqdm

    from docvlm.inference import ModelLoadError
    from docvlm.pipeline.spec import PipelineSpecError

    try:
        pipeline = load_pipeline()
    except (PipelineSpecError, ValueError) as e:
        return say.error(str(e), EXIT_USAGE)
    writer = _Writer(args, pipeline, out, manifest, names)
    remaining: dict[str, set] = {}  # input -> its pages this run has still to finish
    for page in todo:
        remaining.setdefault(str(page.input), set()).add(page.page)
    finished: dict[str, dict[int | None, PageResult | None]] = {}  # input -> page -> result (None: failed)
    for page in mine:
        if str(page.input) in remaining and page.page not in remaining[str(page.input)]:
            finished.setdefault(str(page.input), {})[page.page] = writer.read_back(known[(str(page.input), page.page,
                                                                                          "")])
    order = {key: i for i, key in enumerate(remaining)}
    todo = sorted(todo, key=lambda p: order[str(p.input)])  # a document's pages together (stable: in page order)
    with tqdm(total=len(todo), unit="page", desc="converting", dynamic_ncols=True, disable=None) as bar:
        try:
            for start in range(0, len(todo), pipeline.window):
                window = todo[start: start + pipeline.window]
                inputs = [_load(page, args.dpi, given, pipeline) for page in window]
                try:
                    results = pipeline.run(inputs)  # turns each input's image upright
                except ModelLoadError as e:  # weights that checked out but do not load: no page can be converted
                    return say.error(f"{args.pipeline}: {e}", EXIT_USAGE)
                for page, item, result in zip(window, inputs, results):
                    key = str(page.input)
                    remaining[key].discard(page.page)
                    row, kept = writer.page(page, result, item.image)
                    finished.setdefault(key, {})[page.page] = kept
                    if not remaining[key]:
                        row = writer.document(page, row, finished.pop(key), mine)
                    manifest.append([row])
                    count_row(row, stats)
                    bar.update(1)
                bar.set_postfix(failed=len(stats["failed"]), refresh=False)
        finally:
            writer.close()
    return EXIT_OK


def _load(page: Page, dpi: float, given, pipeline):
    """The page for the pipeline: its pixels, its PDF, its given regions (or why it cannot be converted)."""
    from docvlm.images import BadImageError
    from docvlm.pipeline.run import PageInput

    entry = given.lookup(page.input, page.page) if given is not None else None
    item = PageInput(str(page.input), page.page, pdf=page.input if page.kind == "pdf" else None)
    if entry is not None:
        if entry.error is not None:
            item.error = entry.error
            return item
        item.regions = entry.regions
    elif given is not None and pipeline.spec.layout is None:
        item.error = (f"{page.where}: {given.path} gives no regions for this page, and {pipeline.spec.where} names "
                      f"no layout model to find them")
        return item
    try:
        item.image = page.load(dpi)
    except BadImageError as e:
        item.error = str(e)
    except Exception as e:  # noqa: BLE001  one odd file must not stop the run
        item.error = f"{page.where}: cannot load ({type(e).__name__}: {e})"
    return item


class _Writer:
    """A page's files staged and placed, its row made; a document's files when its pages are all done."""

    def __init__(self, args, pipeline, out: Path, manifest: RunManifest, names: dict[str, str]):
        self.args, self.pipeline, self.out, self.names = args, pipeline, out, names
        self.staging = manifest.staging
        self.pools: dict = {}  # task -> ExportPool, started on first use
        self.count = 0

    def _pool(self, task):
        from docvlm.export_worker import ExportPool

        key = (type(task), json.dumps(task.options(), sort_keys=True, default=str))
        if key not in self.pools:
            self.pools[key] = ExportPool(task, self.args.export_workers, self.args.export_timeout)
        return self.pools[key]

    def _stage(self) -> Path:
        self.count += 1
        folder = self.staging / str(self.count)
        folder.mkdir(parents=True)
        return folder

    def page(self, page: Page, result: PageResult, image) -> tuple[dict, PageResult | None]:
        """The page's row, its files placed; and its result for the document (None when it failed)."""
        document = self.names[str(page.input)]
        id_ = page_id(document, page.page)
        base = {"input": str(page.input), "page": page.page, "prefix": "", "id": id_, "document": document,
                "task": TASK, "text": None}
        if result.error is not None:
            return {**base, "outputs": [], "problems": [], "error": result.error, "regions": []}, None
        try:
            outputs, problems = self._page_files(page, result, image, id_)
        except (OSError, ValueError) as e:
            return {**base, "outputs": [], "problems": [], "error": f"{page.where}: {e}", "regions": []}, None
        row = {**base, "outputs": outputs, "problems": problems, "error": None,
               "regions": [region.row() for region in result.regions],
               **{k: getattr(result, k) for k in ("width", "height", "unit", "rotation", "skew")}}
        return row, result

    def _page_files(self, page: Page, result: PageResult, image, id_: str) -> tuple[list[str], list[str]]:
        from docvlm.export_worker import ExportError
        from docvlm.pipeline.drawing import draw_page

        stage = self._stage()
        n = page.page or 1
        futures = []
        for k, region in enumerate(result.regions, 1):
            task = _task(self.pipeline, region)
            if task is not None and region.text is not None:
                stem = stage / f"p{n}-r{k}-{_label(region.label)}"
                futures.append((region, self._pool(task).submit(region.text, stem)))
        for region, future in futures:
            try:
                written, _ = future.result()  # the parse problems are the region's already
                region.outputs = [place(Path(p), self.staging, self.out, id_) for p in written]
            except ExportError as e:
                region.problems.append(str(e))
        draw_page(image, result).save(stage / f"p{n}.png")
        files = [stage / f"p{n}.png"]
        json_path = stage / f"p{n}{PAGE_JSON}"
        json_path.write_text(json.dumps(to_json(result), ensure_ascii=False) + "\n", encoding="utf-8")
        files.append(json_path)
        outputs = [o for region in result.regions for o in region.outputs]
        outputs += [place(path, self.staging, self.out, id_) for path in files]
        problems = [f"layout: {p}" if not p.startswith("layout: ") else p for p in result.problems]
        problems += [f"region {k} ({region.label}): {p}" for k, region in enumerate(result.regions, 1)
                     for p in region.problems]
        return outputs, problems

    def read_back(self, row: dict) -> PageResult | None:
        """A page done by an earlier run, from its `.page.json` (None when it cannot be read: then the
        document is assembled without it, and says so)."""
        for output in row.get("outputs", []):
            if output.endswith(PAGE_JSON):
                try:
                    return from_json(json.loads((self.out / output).read_text(encoding="utf-8")), self.pipeline)
                except (OSError, ValueError, TypeError, KeyError):
                    return None
        return None

    def document(self, page: Page, row: dict, results: dict, mine: list[Page]) -> dict:
        """The document of `page`'s input assembled from its pages' results, its files listed in `row`."""
        from docvlm.pipeline.document import write_document, write_kern

        document = self.names[str(page.input)]
        numbers = [p.page for p in mine if str(p.input) == str(page.input)]
        pages = [results[n] for n in numbers if results.get(n) is not None]
        if not pages:
            return row
        stage = self._stage()
        leaf = Path(document).name
        try:
            written = write_document(stage, leaf, pages)
            kern, kern_problems = write_kern(stage, leaf, pages)
            placed = [place(Path(p), self.staging, self.out, document) for p in [*written, *kern]]
        except Exception as e:  # noqa: BLE001  the document of good pages failed: its last page's row says so
            message = f"{page.where}: the document {document} could not be written ({type(e).__name__}: {e})"
            return {**row, "error": row["error"] or message}
        missing = len(numbers) - len(pages)
        notes = [f"document: {p}" for p in kern_problems]
        if missing:
            notes.append(f"document: {missing} of its {len(numbers)} pages failed and are left out")
        return {**row, "outputs": [*row["outputs"], *placed], "problems": [*row["problems"], *notes]}

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def _review(out: Path, manifest: RunManifest, say) -> None:
    """`<out>/review.html`: the run's pages, the ones to check first first (`docvlm.pipeline.review`), from the
    manifest's rows (all processes' pages, also those of earlier runs)."""
    from docvlm.pipeline.review import write_review

    entries = []
    for row in manifest.read().values():
        page = _from_row(row)
        if page is not None:
            drawn = f"{row.get('id')}.png"
            entries.append((page, out / drawn if drawn in row.get("outputs", []) else None))
    if not entries:
        return
    try:
        if (out / REVIEW).is_symlink():  # planted: the link goes, what it leads to stays untouched
            (out / REVIEW).unlink()
        write_review(out / REVIEW, entries)
    except OSError as e:
        say.warning(f"{out / REVIEW}: cannot write the review list ({e})")


def _from_row(row: dict) -> PageResult | None:
    """A page row as the review reads it (no parsed values); None for another command's row or a crafted one."""
    if row.get("task") != TASK:
        return None
    try:
        regions = [_region_from_row(r) for r in row.get("regions", [])]
        return PageResult(str(row["input"]), row.get("page"), float(row.get("width") or 0),
                          float(row.get("height") or 0), str(row.get("unit", "px")), int(row.get("rotation") or 0),
                          float(row.get("skew") or 0), regions, [str(p) for p in row.get("problems", [])],
                          None if row.get("error") is None else str(row["error"]))
    except (KeyError, TypeError, ValueError):
        return None


def _region_from_row(row: dict) -> RegionResult:
    """A row's region with the types the review shows; TypeError for a crafted one (a number as its text)."""
    region = RegionResult(**{**row, "box": tuple(float(v) for v in row["box"])})
    strings = isinstance(region.label, str) and all(isinstance(v, (str, type(None)))
                                                    for v in (region.task, region.text, region.source))
    lists = all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in (region.problems, region.outputs))
    score = region.score is None or (isinstance(region.score, (int, float)) and not isinstance(region.score, bool))
    if not (strings and lists and score):
        raise TypeError(f"not a region of a page row: {row!r:.80}")
    return region
