"""`docvlm evaluate --pipeline P.yaml`: the page pipeline scored on pages whose regions and contents are known.

    docvlm evaluate --pipeline P.yaml --data truth.json --out DIR [--truth-regions | --regions R.jsonl]
    docvlm evaluate --pipeline P.yaml --synthetic-pages N [--synthetic-kinds table,text] --out DIR

The truth is a COCO file with each region's content in `attributes.content` (`docvlm.pipeline.truth`), or N
composed pages, which are written to `<out>/pages/` (images and `truth.json`) first, so that the same pages can
be evaluated again with `--data`, or converted with `convert --pipeline --regions`. The pipeline finds the regions
with its layout model, or takes them from `--regions` (another detector's) or from the truth itself
(`--truth-regions`: the layout is then perfect and the contents are scored alone). Scores
(`docvlm.pipeline.scoring`): the layout's F1 and mAP; per routed class its task's metrics over the regions
matched one to one (IoU at least 0.5, highest first; a missed region is an empty prediction, a spurious one is
listed); the reading order's normalised edit distance. Each page's result is appended to
`<out>/predictions.jsonl` as its window of pages is done, so work finished before an error is kept.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from docvlm.outputs import open_new
from docvlm.pipeline.results import PageResult

SYNTHETIC_SEED = 1  # `docvlm evaluate --synthetic`'s seed: the layout task's synthetic validation pages
PAGES_FOLDER = "pages"  # under --out: the composed pages and their truth
PREDICTIONS = "predictions.jsonl"
EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2


def wants_pipeline(argv: list[str]) -> bool:
    """Whether `docvlm evaluate`'s arguments ask for a page pipeline (then this module's `main` takes them)."""
    return any(arg == "--pipeline" or arg.startswith("--pipeline=") for arg in argv)


def build_parser() -> argparse.ArgumentParser:
    from docvlm.inference import add_model_arguments, positive
    from docvlm.pipeline.arguments import add_pipeline_arguments

    parser = argparse.ArgumentParser(prog="docvlm evaluate --pipeline", description=__doc__.split("\n\n")[0],
                                     epilog="exit status: 0 reports written, 1 the data could not be read, "
                                            "2 bad arguments or a pipeline that cannot be loaded")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="TRUTH.json",
                        help="page truth: a COCO file, each region's content in attributes.content (a plain COCO "
                             "layout file scores the layout only)")
    source.add_argument("--synthetic-pages", type=positive(int), metavar="N",
                        help=f"compose N pages (seed {SYNTHETIC_SEED}), written to <out>/{PAGES_FOLDER}/ first")
    parser.add_argument("--synthetic-kinds", type=lambda text: tuple(k.strip() for k in text.split(",") if k.strip()),
                        default=(), metavar="A,B", help="what composed pages hold (default: every kind)")
    parser.add_argument("--synthetic-width", type=positive(int), default=896, metavar="PX",
                        help="width of composed pages in pixels (default 896)")
    parser.add_argument("--truth-regions", action="store_true",
                        help="read the truth's own regions instead of finding them: the contents scored alone")
    parser.add_argument("--limit", type=positive(int), metavar="N", help="evaluate only the first N pages")
    parser.add_argument("--out", type=Path, required=True, help="folder for the reports")
    parser.add_argument("--worst", type=int, default=10, metavar="N", help="worst pages shown in the reports")
    add_model_arguments(parser)
    add_pipeline_arguments(parser)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    from docvlm.converters.page_synth import KINDS

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pipeline is None:
        parser.error("--pipeline is required")
    if args.model is not None or args.task is not None or args.task_option:
        parser.error("--pipeline names its models and their tasks: leave out --model, --task and --task-option")
    if args.truth_regions and args.regions is not None:
        parser.error("--truth-regions and --regions both give the regions: pick one")
    unknown = sorted(set(args.synthetic_kinds) - set(KINDS))
    if unknown:
        parser.error(f"--synthetic-kinds: {', '.join(unknown)} not among {', '.join(KINDS)}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a folder")
    return args


def main(argv: list[str]) -> int:
    from docvlm.errors import DataError
    from docvlm.pipeline.crops import DEFAULT_MARGIN
    from docvlm.pipeline.page_report import write_reports
    from docvlm.pipeline.regions_file import read_regions
    from docvlm.pipeline.run import load_pipeline
    from docvlm.pipeline.scoring import score_pages

    if {"-h", "--help"} & set(argv):  # also `--pipeline --help`, where argparse would take --help for the file
        build_parser().print_help()
        return 0
    args = parse_args(argv)
    try:
        pipeline = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                                 num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                                 repetition_guard=args.repetition_guard,
                                 margin=DEFAULT_MARGIN if args.margin is None else args.margin,
                                 one_model_at_a_time=args.one_model_at_a_time, window=args.window)
        given = read_regions(args.regions) if args.regions is not None else None
    except ValueError as err:  # a pipeline file, a model or a regions file that cannot be used: named
        print(f"docvlm evaluate: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if pipeline.spec.layout is None and given is None and not args.truth_regions:
        print(f"docvlm evaluate: error: {pipeline.spec.where} names no layout model: give --truth-regions or "
              "--regions", file=sys.stderr)
        return EXIT_USAGE
    for warning in pipeline.warnings:
        print(f"docvlm evaluate: warning: {warning}", file=sys.stderr)
    try:
        truth = truth_pages(args)
        predicted = predict(pipeline, truth, args.out, given, args.truth_regions)
        tasks = scored_tasks(pipeline, truth)
        scored = score_pages([page.regions for page in predicted], [page.regions for _, page in truth], tasks)
        options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        options["command"] = shlex.join(["docvlm", "evaluate", *argv])
        options["about"] = about(args, pipeline, len(truth))
        paths = write_reports(args.out, options, scored, truth, predicted, tasks, args.worst)
    except (DataError, OSError) as err:  # bad inputs: the message names the file
        print(f"docvlm evaluate: error: {err}", file=sys.stderr)
        return EXIT_DATA
    print("docvlm: " + "  ".join(f"{k} {v:.4f}" for k, v in scored[0].items()))
    print("docvlm: wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


def truth_pages(args: argparse.Namespace) -> list[tuple[Path, PageResult]]:
    """The pages to evaluate and their truth: `--data`'s, or composed pages written under `--out` first."""
    from docvlm.pipeline.truth import read_coco_truth, synthetic_pages, write_coco

    path = args.data
    if path is None:
        pages = synthetic_pages(args.synthetic_pages, SYNTHETIC_SEED, args.synthetic_kinds, args.synthetic_width)
        path = write_coco(args.out / PAGES_FOLDER, pages)
    return read_coco_truth(path)[: args.limit]


def predict(pipeline, truth: list[tuple[Path, PageResult]], out: Path, given=None, truth_regions: bool = False
            ) -> list[PageResult]:
    """The pipeline's result of every page, a window of pages at a time (crops of one route from all of them
    decoded together), each appended to `<out>/predictions.jsonl` as its window is done. A page that cannot be
    read, or that the regions file does not give, is a result with its error (all its regions missed)."""
    from docvlm.pipeline.convert import to_json

    out.mkdir(parents=True, exist_ok=True)
    predicted: list[PageResult] = []
    with open_new(out / PREDICTIONS) as f:
        for start in range(0, len(truth), pipeline.window):
            window = truth[start: start + pipeline.window]
            for result in pipeline.run([_page_input(path, page, given, truth_regions) for path, page in window]):
                predicted.append(result)
                f.write(json.dumps(to_json(result), ensure_ascii=False) + "\n")
            f.flush()
    return predicted


def _page_input(path: Path, page: PageResult, given, truth_regions: bool):
    """The pipeline's input for a truth page: its image, and its regions when they are given (never contents)."""
    from docvlm.converters.layout import Region
    from docvlm.images import BadImageError, load_image
    from docvlm.pipeline.run import PageInput

    try:
        image = load_image(path)
    except BadImageError as err:
        return PageInput(page.input, error=str(err))
    regions = None
    if truth_regions:
        regions = [Region(region.label, region.box) for region in page.regions]
    elif given is not None:
        found = given.lookup(path, None)
        if found is None or found.error is not None:
            error = found.error if found is not None else f"{given.path}: no regions for {path}"
            return PageInput(page.input, error=error)
        regions = found.regions
    return PageInput(page.input, image=image, regions=regions)


def scored_tasks(pipeline, truth: list[tuple[Path, PageResult]]) -> dict:
    """Routed label -> the task that scores its contents, for the labels whose truth has contents (a plain COCO
    layout file has none: its pages are scored on their layout alone)."""
    known = {region.label for _, page in truth for region in page.regions if region.text is not None}
    return {label: pipeline.tasks[ref] for label, ref in pipeline.spec.routes.items() if label in known}


def about(args: argparse.Namespace, pipeline, pages: int) -> dict[str, str]:
    """What was evaluated, in words, for the reports' header: the pipeline's models, the pages, the decoding."""
    spec = pipeline.spec
    models = [f"layout: {spec.layout.model}"] if spec.layout is not None else []
    models += [f"{label}: {ref.model} ({pipeline.tasks[ref].name})" for label, ref in spec.routes.items()]
    if args.data is not None:
        data = f"{pages} pages of {args.data}"
    else:
        kinds = ", ".join(args.synthetic_kinds) or "every kind"
        data = (f"{pages} composed pages (seed {SYNTHETIC_SEED}, {kinds}, {args.synthetic_width} px wide), "
                f"in {args.out / PAGES_FOLDER}")
    regions = ("the truth's own" if args.truth_regions else f"read from {args.regions}" if args.regions is not None
               else "found by the layout model")
    beams = "greedy" if (args.num_beams or 1) == 1 else f"beam search, {args.num_beams} beams"
    tokens = f"at most {args.max_new_tokens} new tokens" if args.max_new_tokens else "each task's token budget"
    return {"model": f"pipeline {args.pipeline}: " + "; ".join(models), "data": f"{data}; regions {regions}",
            "decoding": f"{beams} (unless a model's own default says otherwise), {tokens}, margin "
                        f"{pipeline.margin:g}"}
