"""`docvlm convert --pipeline`'s options, apart from the command's modules so that `docvlm.convert` can add them
to its parser without importing the pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """`--pipeline` and its options, in convert's parser."""
    from docvlm.inference import positive

    group = parser.add_argument_group("page pipeline (instead of --model)")
    group.add_argument("--pipeline", type=Path, metavar="P.yaml",
                       help="find each page's regions (a layout model) and read each with its route's model, into "
                            "one DoclingDocument per document (<out>/<name>.docling.json, .md)")
    group.add_argument("--regions", type=Path, metavar="R.jsonl",
                       help="the pages' regions, instead of the layout model's: JSONL rows {input, page, regions: "
                            "[{label, bbox: [x0, y0, x1, y1] in fractions, score?}]} or a COCO dataset file")
    group.add_argument("--margin", type=float, default=None, metavar="FRACTION",
                       help="grow each region by this fraction of the page's width and height before cropping "
                            "(default 0.005)")
    group.add_argument("--one-model-at-a-time", action=argparse.BooleanOptionalAction, default=None,
                       help="load the models in turn over each window of pages (default: when their weights do "
                            "not fit the free memory together)")
    group.add_argument("--window", type=positive(int), metavar="PAGES",
                       help="pages decoded together: crops of one route from all of them share batches "
                            "(default 4 x --batch-size, 16 at least)")


def refuse_without_pipeline(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The pipeline's options given to a plain `--model` run would do nothing: a usage error naming them."""
    given = [flag for flag, value in (("--regions", args.regions), ("--margin", args.margin),
                                      ("--one-model-at-a-time", args.one_model_at_a_time), ("--window", args.window))
             if value is not None]
    if given:
        parser.error(f"{', '.join(given)}: only with --pipeline")
