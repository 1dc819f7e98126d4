"""`docvlm evaluate`: decode a data set with a model (or read a predictions JSONL), score it with the
task's metrics, whole set and per sample, and write report.json / report.md / report.html.

    docvlm evaluate --model DIR_OR_ID --data SOURCE [--split S] [--limit N] --out DIR
    docvlm evaluate --model DIR_OR_ID --synthetic N --out DIR
    docvlm evaluate --task T --predictions FILE.jsonl --out DIR
    docvlm evaluate --pipeline P.yaml (--data TRUTH.json | --synthetic-pages N) --out DIR   (docvlm.pipeline.evaluate)

While decoding, every prediction is appended to `<out>/predictions.jsonl` at once, so work finished
before an error (a corrupt image stops the run, named) is kept and can be evaluated with `--predictions`.
The task comes from the model's `docvlm.json` (`--task` for a model without one, and with `--predictions`);
decoding takes the same flags, and gives the same text, as `docvlm convert` and validation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from docvlm.inference import (
    ModelLoadError,
    TaskMismatchError,
    add_model_arguments,
    check_task_early,
    load_from_args,
    resolve_task,
)
from docvlm.outputs import open_new
from docvlm.report import write_reports
from docvlm.tasks.base import Task
from docvlm.tasks.manifest import ManifestError, jsonl_rows

SYNTHETIC_SEED = 1  # the seed of the tiny configs' validation sets (training uses 0)


class PredictionsError(ValueError):
    """A predictions file that cannot be read; the message names the file and line."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="docvlm evaluate", description=__doc__.split("\n\n")[0],
                                     epilog="exit status: 0 reports written, 1 the data could not be read, "
                                            "2 bad arguments or a model that cannot be loaded; a page pipeline on "
                                            "page truth: docvlm evaluate --pipeline P.yaml --help")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset folder or file, read by the task's reader")
    source.add_argument("--synthetic", type=int, metavar="N", help="decode N synthetic samples of the task")
    source.add_argument("--predictions", type=Path, metavar="FILE",
                        help="JSONL of {id, prediction, target[, image, confidences]} rows (e.g. "
                             "predictions/val-stepN.jsonl)")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="with --predictions: the folder its rows' `image` paths are inside (default: the "
                             "file's folder); images elsewhere are shown as unavailable")
    parser.add_argument("--split", help="split the reader takes (train, val, test)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N samples")
    parser.add_argument("--out", type=Path, required=True, help="folder for the reports")
    parser.add_argument("--worst", type=int, default=10, metavar="N", help="worst cases shown in the reports")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    if args.predictions is None and not args.model:
        parser.error("--model is needed with --data or --synthetic")
    if args.predictions is not None and args.model:
        parser.error("--predictions are scored as they are: leave out --model")
    try:
        if args.model:
            check_task_early(args)
        else:
            args.task_object = resolve_task(None, args.task, dict(args.task_option))
    except ModelLoadError:
        raise  # `main` says it in one line
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv: list[str]) -> int:
    from docvlm.pipeline import evaluate as pages

    if pages.wants_pipeline(argv):  # a page pipeline on page truth
        return pages.main(argv)
    try:
        args = parse_args(argv)
    except ModelLoadError as err:  # a mistyped path: one line, before --out exists
        print(f"docvlm evaluate: error: {err}", file=sys.stderr)
        return 2
    try:
        if args.predictions is not None:
            task = args.task_object
            rows, images = read_predictions(args.predictions, args.limit, args.images, task.name)
        else:
            try:
                model = load_from_args(args)
            except (ModelLoadError, TaskMismatchError) as err:
                print(f"docvlm evaluate: error: --model {args.model}: {err}", file=sys.stderr)
                return 2
            task = model.task
            rows, images = decode(model, args)
        if not rows:
            raise ValueError("no samples to evaluate")
        metrics = score_rows(task, rows)
        options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "task_object"}
        options["task"], options["task_options"] = task.name, task.options()
        options["about"] = about(args, len(rows), None if args.predictions is not None else model)
        options["command"] = shlex.join(["docvlm", "evaluate", *argv])
        paths = write_reports(args.out, task, options, metrics, rows, images, args.worst)
    except (ValueError, OSError) as err:  # bad inputs: the message names the file
        print(f"docvlm evaluate: error: {err}", file=sys.stderr)
        return 1
    print("docvlm: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print("docvlm: wrote " + ", ".join(str(p) for p in paths))
    return 0


def about(args: argparse.Namespace, samples: int, model=None) -> dict[str, str]:
    """What was evaluated, in words, for the report's header: model, data, decoding."""
    from docvlm.items import Source

    if model is None:
        images = f" (images in {args.images})" if args.images else ""
        return {"model": "none: predictions scored as given",
                "data": f"{samples} predictions of {args.predictions}{images}"}
    source = Source(path=args.data, split=args.split, synthetic=args.synthetic or 0, seed=SYNTHETIC_SEED)
    decoding, budget = model.decoding_for(args.num_beams, args.max_new_tokens, args.repetition_guard)
    how = "greedy" if decoding.num_beams == 1 else f"beam search, {decoding.num_beams} beams"
    guard = "on" if decoding.repetition_guard else "off"
    return {"model": str(args.model), "data": source.describe(samples),
            "decoding": f"{how}, at most {budget} new tokens, repetition guard {guard}"}


def read_predictions(path: Path, limit: int | None, images_dir: Path | None = None, task: str | None = None
                     ) -> tuple[list[dict], list[Path | None]]:
    """Rows `{id, image, target, prediction}` of a JSONL file, and their images; of a mixture run's file (rows
    with a `task`), those of `task`.

    Image paths are untrusted: one resolves inside the predictions file's folder (or `images_dir`) or is
    shown as unavailable, whether or not it exists, so a crafted file can neither embed nor probe other files."""
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file")
    base = os.path.realpath(images_dir if images_dir is not None else path.parent)
    rows, images = [], []
    try:
        for line_no, row in jsonl_rows(path):
            where = f"{path}:{line_no}"
            if task is not None and row.get("task", task) != task:
                continue
            for key in ("prediction", "target"):
                if not isinstance(row.get(key), str):
                    raise PredictionsError(f"{where}: '{key}' must be a string, got {type(row.get(key)).__name__}")
            image = row.get("image")
            if image is not None and not isinstance(image, str):
                raise PredictionsError(f"{where}: 'image' must be a path string")
            rows.append({"id": str(row.get("id", line_no)), "image": image, "target": row["target"],
                         "prediction": row["prediction"], **_confidences(row, where)})
            images.append(_inside(base, image) if image else None)
            if limit is not None and len(rows) >= limit:
                break
    except ManifestError as e:
        raise PredictionsError(str(e)) from None
    return rows, images


def _confidences(row: dict, where: str) -> dict[str, list]:
    """A row's optional `confidences` (written by validation and `evaluate` for tasks that keep them): a list
    of numbers in [0, 1] or nulls."""
    confidences = row.get("confidences")
    if confidences is None:
        return {}
    def valid(c) -> bool:
        return c is None or (isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 1)

    if not isinstance(confidences, list) or not all(map(valid, confidences)):
        raise PredictionsError(f"{where}: 'confidences' must be a list of numbers in [0, 1] (or nulls)")
    return {"confidences": confidences}


def _inside(base: str, image: str) -> Path | None:
    resolved = os.path.realpath(os.path.join(base, image))
    return Path(resolved) if os.path.commonpath([base, resolved]) == base else None


def decode(model, args: argparse.Namespace) -> tuple[list[dict], list[Any]]:
    """Decode the samples of `--data`/`--synthetic` with the model, as `convert` and validation do; rows are
    also appended to `<out>/predictions.jsonl` as they are decoded."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from docvlm.images import BadImageError
    from docvlm.inference import decode_items
    from docvlm.items import Source, TaskDataset, check_prompts
    from docvlm.pixels import hand_over

    task = model.task
    samples = Source(path=args.data, split=args.split, synthetic=args.synthetic or 0, seed=SYNTHETIC_SEED,
                     limit=args.limit).samples(task)
    unscored = [s for s in samples if s.target is None]
    if unscored:
        print(f"docvlm: {len(unscored)} samples have no reference and are not evaluated "
              f"(first: {unscored[0].source or unscored[0].id})", file=sys.stderr)
        samples = [s for s in samples if s.target is not None]
    check_prompts(task, samples, model.processor, model.net)
    targets = [task.to_target(s) for s in samples]
    dataset = TaskDataset(samples, task, model.image_size, targets=targets)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=max(args.num_workers, 0), collate_fn=hand_over)
    decoding, max_new_tokens = model.decoding_for(args.num_beams, args.max_new_tokens, args.repetition_guard)

    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "predictions.jsonl"
    rows: list[dict] = []
    with open_new(partial) as f, tqdm(total=len(dataset), unit="sample", desc="decoding",
                                                         disable=None) as bar:
        scored = task.wants_token_scores
        for group in decode_items(model.net, model.processor, loader, decoding, max_new_tokens, scored):
            for item, generation in group:
                if isinstance(generation, Exception):
                    error = item.get("error") or f"{samples[item['index']].id}: decoding failed ({generation})"
                    raise BadImageError(f"{error}; the {len(rows)} predictions decoded before it are in {partial}")
                image = samples[item["index"]].image
                confidences = task.confidences(generation)
                rows.append({"id": item["id"],
                             "image": str(Path(image).resolve()) if isinstance(image, (str, Path)) else None,
                             "target": item["target"], "prediction": generation.text,
                             **({"confidences": confidences} if confidences is not None else {}),
                             "decoding_problems": generation.problems})
                f.write(json.dumps(rows[-1], ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(group))
    return rows, [s.image for s in samples]


def score_rows(task: Task, rows: list[dict]) -> dict[str, float]:
    """The task's metrics over the whole set; each row gets its own `score` and the `problems` of its
    prediction. Rows' `confidences` (decoded with the model's scores) go to `task.score_with`. A sample whose
    scoring fails is reported with its error instead of stopping the report."""
    from tqdm import tqdm

    metrics = task.score_with([r["prediction"] for r in rows], [r["target"] for r in rows],
                              [r.get("confidences") for r in rows])
    for row in tqdm(rows, unit="sample", desc="scoring samples", delay=2):  # shown only when scoring is slow
        row["problems"] = [*row.pop("decoding_problems", []), *task.parse(row["prediction"]).problems,
                           *task.scoring_problems(row["prediction"], row["target"])]
        try:
            row["score"] = {k: float(v) for k, v in task.score_with([row["prediction"]], [row["target"]],
                                                                    [row.get("confidences")]).items()}
        except Exception as err:  # noqa: BLE001  one odd sample must not take the report down
            row["score"] = None
            row["problems"].append(f"per-sample scoring failed: {type(err).__name__}: {err}")
    return {k: float(v) for k, v in metrics.items()}
