"""`docvlm evaluate`: decode a data set with a model (or read a predictions JSONL), score it with the
task's metrics, whole set and per sample, and write report.json / report.md / report.html.

    docvlm evaluate --task T --model DIR_OR_ID --data SOURCE [--split S] [--limit N] --out DIR
    docvlm evaluate --task T --model DIR_OR_ID --synthetic N --out DIR
    docvlm evaluate --task T --predictions FILE.jsonl --out DIR

While decoding, every prediction is appended to `<out>/predictions.jsonl` at once, so work finished
before an error (a corrupt image stops the run, named) is kept and can be evaluated with `--predictions`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import docvlm.tasks
from docvlm.report import write_reports
from docvlm.tasks.base import Task
from docvlm.tasks.manifest import ManifestError, jsonl_rows

SYNTHETIC_SEED = 1  # the seed of the tiny configs' validation sets (training uses 0)


class PredictionsError(ValueError):
    """A predictions file that cannot be read; the message names the file and line."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="docvlm evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=docvlm.tasks.names())
    parser.add_argument("--model", help="Hugging Face folder, hub id, a `docvlm fit` checkpoint (.ckpt), or `tiny` "
                                        "(needed unless --predictions)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset folder or file, read by the task's reader")
    source.add_argument("--synthetic", type=int, metavar="N", help="decode N synthetic samples of the task")
    source.add_argument("--predictions", type=Path, metavar="FILE",
                        help="JSONL of {id, prediction, target[, image]} rows (e.g. predictions/val-stepN.jsonl)")
    parser.add_argument("--split", help="split the reader takes (train, val, test)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N samples")
    parser.add_argument("--out", type=Path, required=True, help="folder for the reports")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per decoding batch")
    parser.add_argument("--max-new-tokens", type=int, help="longest output (default: the task's max_target_tokens)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--worst", type=int, default=10, metavar="N", help="worst cases shown in the reports")
    args = parser.parse_args(argv)
    if args.predictions is None and not args.model:
        parser.error("--model is needed with --data or --synthetic")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    task = docvlm.tasks.get(args.task)
    try:
        if args.predictions is not None:
            rows, images = read_predictions(args.predictions, args.limit)
        else:
            rows, images = decode(task, args)
        if not rows:
            raise ValueError("no samples to evaluate")
        metrics = score_rows(task, rows)
        options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        paths = write_reports(args.out, task, options, metrics, rows, images, args.worst)
    except (ValueError, OSError) as err:  # bad inputs: the message names the file
        print(f"docvlm evaluate: error: {err}", file=sys.stderr)
        return 1
    print("docvlm: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print("docvlm: wrote " + ", ".join(str(p) for p in paths))
    return 0


def read_predictions(path: Path, limit: int | None) -> tuple[list[dict], list[Path | None]]:
    """Rows `{id, image, target, prediction}` of a JSONL file, and their images (relative paths are
    taken from the file's folder; a missing image is shown as unavailable, not an error)."""
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file")
    rows, images = [], []
    try:
        for line_no, row in jsonl_rows(path):
            where = f"{path}:{line_no}"
            for key in ("prediction", "target"):
                if not isinstance(row.get(key), str):
                    raise PredictionsError(f"{where}: '{key}' must be a string, got {type(row.get(key)).__name__}")
            image = row.get("image")
            if image is not None and not isinstance(image, str):
                raise PredictionsError(f"{where}: 'image' must be a path string")
            rows.append({"id": str(row.get("id", line_no)), "image": image, "target": row["target"],
                         "prediction": row["prediction"]})
            images.append(path.parent / image if image else None)
            if limit is not None and len(rows) >= limit:
                break
    except ManifestError as e:
        raise PredictionsError(str(e)) from None
    return rows, images


def decode(task: Task, args: argparse.Namespace) -> tuple[list[dict], list[Any]]:
    """Decode the samples of `--data`/`--synthetic` with the model; rows are also appended to
    `<out>/predictions.jsonl` as they are decoded."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from docvlm.data import Collator, Source, TaskDataset
    from docvlm.decode import Decoding, generate
    from docvlm.images import BadImageError
    from docvlm.model import load_for_inference

    samples = Source(path=args.data, split=args.split, synthetic=args.synthetic or 0, seed=SYNTHETIC_SEED,
                     limit=args.limit).samples(task)
    unscored = [s for s in samples if s.target is None]
    if unscored:
        print(f"docvlm: {len(unscored)} samples have no reference and are not evaluated "
              f"(first: {unscored[0].meta.get('source', unscored[0].id)})", file=sys.stderr)
        samples = [s for s in samples if s.target is not None]
    targets = [task.to_target(s) for s in samples]

    model, processor = load_for_inference(args.model, args.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    dataset = TaskDataset(samples, task, processor.image_processor.size["height"], targets=targets)
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=Collator(processor, with_targets=False))
    max_new_tokens = args.max_new_tokens or task.max_target_tokens

    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "predictions.jsonl"
    rows: list[dict] = []
    with partial.open("w", encoding="utf-8") as f, tqdm(total=len(dataset), unit="sample", desc="decoding") as bar:
        try:
            for batch in loader:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                predictions = generate(model, processor, batch, Decoding(), max_new_tokens)
                for index, prediction in zip(batch["index"].tolist(), predictions):
                    image = samples[index].image
                    rows.append({"id": samples[index].id,
                                 "image": str(Path(image).resolve()) if isinstance(image, (str, Path)) else None,
                                 "target": targets[index], "prediction": prediction})
                    f.write(json.dumps(rows[-1], ensure_ascii=False) + "\n")
                f.flush()
                bar.update(len(predictions))
        except BadImageError as err:
            raise BadImageError(f"{err}; the {len(rows)} predictions decoded before it are in {partial}") from None
    return rows, [s.image for s in samples]


def score_rows(task: Task, rows: list[dict]) -> dict[str, float]:
    """The task's metrics over the whole set; each row gets its own `score` and the `problems` of its
    prediction. A sample whose scoring fails is reported with its error instead of stopping the report."""
    from tqdm import tqdm

    metrics = task.score([r["prediction"] for r in rows], [r["target"] for r in rows])
    for row in tqdm(rows, unit="sample", desc="scoring samples"):
        row["problems"] = list(task.parse(row["prediction"]).problems)
        try:
            row["score"] = {k: float(v) for k, v in task.score([row["prediction"]], [row["target"]]).items()}
        except Exception as err:  # noqa: BLE001  one odd sample must not take the report down
            row["score"] = None
            row["problems"].append(f"per-sample scoring failed: {type(err).__name__}: {err}")
    return {k: float(v) for k, v in metrics.items()}
