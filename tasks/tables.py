"""`tables`: an image of a table -> its HTML (or OTSL), as PaliGemma 2's PubTabNet/FinTabNet transfers."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from docvlm.metrics.common import same_length
from docvlm.tasks.base import ImageMode, Metric, Parsed, Sample, Task, register
from docvlm.tasks.manifest import ManifestError, read_manifest

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@register
@dataclass
class TablesTask(Task):
    """Image of a table -> HTML (PubTabNet's format) or OTSL, scored with TEDS, TEDS-Struct and GriTS.

    Attributes:
        target_format: `html` (PubTabNet's tags, inline markup kept) or `otsl` (compact, one token per
            grid position; converted to HTML for scoring and export).
        coords: add each non-empty cell's box as four `<locNNNN>` tokens (HTML targets only).
        synthetic_max_rows: most rows of a synthetic table.
        synthetic_max_cols: most columns of a synthetic table.
    """

    name = "tables"
    metrics = (Metric("teds"), Metric("teds_struct"), Metric("grits_top"), Metric("grits_con"),
               Metric("unparseable", higher_is_better=False, perfect=0.0))
    main_metric = "teds"
    prefix: str = "table html"
    max_target_tokens: int = 4096
    image_mode: ImageMode = "pad"
    target_format: Literal["html", "otsl"] = "html"
    coords: bool = False
    synthetic_max_rows: int = 8
    synthetic_max_cols: int = 5

    @property
    def targets_locate(self) -> bool:
        return self.coords

    def read(self, source: str | Path, split: str | None = None) -> list[Sample]:
        """A PubTabNet/FinTabNet jsonl or manifest file, or a dataset folder holding one.

        - PubTabNet 2.0.0: `PubTabNet_2.0.0.jsonl` (or any jsonl of that schema) with the images in
          `<root>/<split>/<filename>` or beside the jsonl; rows are filtered by their `split` field.
        - FinTabNet: `FinTabNet_1.0.0_cell_<split>.jsonl` (same schema plus `table_id`). FinTabNet ships PDFs,
          not images: put one crop per table at `<root>/<split>/<table_id>.png` (or `.jpg`, or the row's
          `filename` if it names an image). The cell `bbox`es are taken as pixel coordinates of that crop, so
          render each crop at 72 dpi from the table's top-left corner (or set `coords: false`).
        - The generic manifest (`{image, target}` rows; targets are HTML).

        Boxes only matter with `coords: true`; the target is then HTML with `coords="<loc..>x4"` per non-empty
        cell.
        """
        source = Path(source)
        if source.is_dir():
            candidates = [source / "PubTabNet_2.0.0.jsonl", source / f"FinTabNet_1.0.0_cell_{split}.jsonl"]
            candidates += sorted(source.glob("*.jsonl"))
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise ManifestError(f"{source}: no PubTabNet/FinTabNet jsonl in this folder")
            source = found
        if not source.is_file():
            raise ManifestError(f"{source}: no such file or folder")
        with source.open(encoding="utf-8") as f:
            first = f.readline()
        try:
            is_annotation = "html" in json.loads(first) and "filename" in json.loads(first)
        except (json.JSONDecodeError, TypeError):
            is_annotation = False
        if not is_annotation:
            return [dataclasses.replace(s, target=self._convert_html(s.target)) for s in read_manifest(source)]
        return list(self._read_annotations(source, split))

    def _read_annotations(self, path: Path, split: str | None) -> Iterator[Sample]:
        from docvlm.tasks.manifest import jsonl_rows

        root = path.parent
        for line_no, row in jsonl_rows(path):  # names file:line:column for bad JSON or bytes
            try:
                if split and row.get("split", split) != split:
                    continue
                image = _find_image(root, row, split)
                target = self._annotation_target(row["html"], image)
            except (KeyError, TypeError, ValueError) as e:
                raise ManifestError(f"{path}:{line_no}: {type(e).__name__}: {e}") from None
            sample_id = str(row.get("table_id", row["filename"]))
            yield Sample(id=sample_id, image=image, target=target, meta={"split": row.get("split", split)},
                         source=f"{path}:{line_no}")

    def sample_from_record(self, record, columns, source: str) -> Sample:
        """A `datasets` row with an HTML `target` column, or else with PubTabNet's `html` structure (the
        column `columns["html"]` names, default `html`), turned into HTML as the jsonl reader does."""
        html = columns.get("html") or "html"
        if columns.get("target") in record or html not in record:
            sample = super().sample_from_record(record, columns, source)
            return dataclasses.replace(sample, target=self._convert_html(sample.target))
        sample = super().sample_from_record(record, {**columns, "target": None}, source)
        try:
            return dataclasses.replace(sample, target=self._annotation_target(record[html], sample.image))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{source}: column {html!r}: {type(e).__name__}: {e}") from None

    def _annotation_target(self, html: dict[str, Any], image) -> str:
        """PubTabNet's `html` structure (structure tokens + cells) as this task's target; the image (a path
        or a lazy `datasets` cell) is opened for its size only when cell boxes are wanted."""
        from docvlm.converters.tables import pubtabnet_html

        size = _image_size(image) if self.coords and self.target_format == "html" else None
        return self._convert_html(pubtabnet_html(html["structure"]["tokens"], html["cells"], size))

    def _convert_html(self, target: str | None) -> str | None:
        """An HTML target in this task's `target_format`."""
        if target is None or self.target_format == "html":
            return target
        from docvlm.converters.otsl import to_otsl
        from docvlm.converters.tables import parse_html

        table, _ = parse_html(target)
        return to_otsl(table) if table is not None else ""

    def synthesize(self, n: int, seed: int = 0) -> Iterator[Sample]:
        from docvlm.converters.table_render import random_table, render_table
        from docvlm.converters.tables import to_html

        for i in range(n):
            rng = random.Random(f"{seed}:{i}")
            table = random_table(rng, self.synthetic_max_rows, self.synthetic_max_cols)
            image = render_table(table, rng)
            target = to_html(table, image.size if self.coords else None)
            yield Sample(id=f"synthetic-{seed}-{i}", image=image, target=self._convert_html(target))

    def parse(self, text: str) -> Parsed:
        from docvlm.converters.otsl import parse_otsl
        from docvlm.converters.tables import parse_html

        table, problems = (parse_otsl if self.target_format == "otsl" else parse_html)(text)
        return Parsed(text=text, value=table, problems=problems)

    def _as_html(self, text: str) -> str:
        """The HTML document TEDS reads: the raw output for HTML (lxml repairs it as the reference
        does), the converted table for OTSL."""
        if self.target_format == "otsl":
            from docvlm.converters.tables import to_html

            table = self.parse(text).value
            text = to_html(table) if table is not None else ""
        return f"<html><body>{text}</body></html>" if text.strip() else ""

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """TEDS and TEDS-Struct (PubTabNet's), GriTS-Top and -Con (table-transformer's), means over samples in
        [0, 1], and `unparseable`: the share of outputs with no table to recover. Texts are read in the
        task's `target_format`."""
        from docvlm.metrics.tables_grits import grits
        from docvlm.metrics.tables_teds import teds_batch

        same_length(predictions, references)
        if not references:
            return {metric.name: 0.0 for metric in self.metrics}
        preds = [self._as_html(p) for p in predictions]
        trues = [self._as_html(r) for r in references]
        n = len(references)
        both = [grits(p, t) for p, t in zip(preds, trues)]
        return {
            "teds": sum(teds_batch(preds, trues)) / n,
            "teds_struct": sum(teds_batch(preds, trues, structure_only=True)) / n,
            "grits_top": sum(g["grits_top"] for g in both) / n,
            "grits_con": sum(g["grits_con"] for g in both) / n,
            "unparseable": sum(self.parse(p).value is None for p in predictions) / n,
        }

    def scoring_problems(self, prediction: str, reference: str) -> list[str]:
        """A pair too large for TEDS or GriTS (their limits bound the work a model's output can cause)."""
        from docvlm.metrics.tables_grits import grits_problem
        from docvlm.metrics.tables_teds import teds_problem

        pred, true = self._as_html(prediction), self._as_html(reference)
        return [problem for problem in (teds_problem(pred, true), grits_problem(pred, true)) if problem]

    def export(self, parsed: Parsed, stem: str | Path) -> list[Path]:
        """`<stem>.html` (a complete document), `.csv`, `.md` and `.json`; the raw text when no table."""
        from docvlm.converters.tables import to_csv, to_html_document, to_json, to_markdown

        if parsed.value is None:
            return super().export(parsed, stem)
        table, paths = parsed.value, []
        for suffix, writer in ((".html", lambda t: to_html_document(t, Path(stem).name)), (".csv", to_csv),
                               (".md", to_markdown), (".json", to_json)):
            path = Path(f"{stem}{suffix}")
            path.write_text(writer(table), encoding="utf-8")
            paths.append(path)
        return paths


def _find_image(root: Path, row: dict, split: str | None) -> Path:
    names = [row["filename"]]
    if "table_id" in row:
        names = [f"{row['table_id']}{s}" for s in _IMAGE_SUFFIXES] + names
    folders = [root / (row.get("split") or split or ""), root]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return folders[0] / names[0]  # reported by the data pipeline when it is loaded


def _image_size(path) -> tuple[int, int]:
    """The image's (width, height) from its header, for boxes in pixels; `ValueError` names what is wrong
    (a special file is never opened: reading a FIFO would block). `path` may be a lazy `datasets` cell:
    a callable returning an open file, a path or an image."""
    from PIL import Image

    from docvlm.errors import special_file_problem

    if callable(path):
        opened = path()
        if isinstance(opened, Image.Image):
            return opened.size
        path = opened
    try:
        problem = special_file_problem(path) if isinstance(path, (str, Path)) else None
        if problem is not None:
            raise ValueError(f"{path}: {problem}, not an image file")
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read the image header ({e})") from None
