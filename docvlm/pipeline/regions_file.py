"""`--regions`: the regions of each page given, instead of found by a layout model (ground truth, docling's
layout model, Table Transformer's detector).

Two forms:
- JSONL, one row per page: `{"input": <path as given (relative to the working folder) or absolute>, "page":
  <N from 1, or null for an image>, "regions": [{"label": "table", "bbox": [x0, y0, x1, y1], "score": 0.97}]}`,
  `bbox` in fractions of the page's width and height (top-left origin), `score` optional.
- A COCO dataset file (`.json` with `images`, `annotations`, `categories`): images by `file_name` (relative to
  the file's folder, or matched by the end of an input's path), `bbox` in pixels (x, y, width, height) of the
  image's `width` and `height`, category names as labels, an annotation's `score` where a detector wrote one
  and its `attributes.content` where page truth gives the region's content (`docvlm.pipeline.truth`).

A file that cannot be read as either (not JSON, a row without `input`, a page given twice) is a
`RegionsFileError` naming the file and line, before any work. A region that cannot be used (a box outside the
page, reversed, NaN; no label; more than `MAX_REGIONS` on the page) makes its page an error (`GivenPage.error`):
that page's row says so, and the other pages go on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from docvlm.converters import encodable
from docvlm.converters.layout import Region
from docvlm.errors import DataError, read_text_file

SLACK = 1e-6  # detectors write 1.0000001 for an edge on the page's border: clipped, not refused
MAX_REGIONS = 10_000  # on one page (DocLayNet's densest have a few hundred): more is a crafted or broken file,
# whose page would take minutes and gigabytes to draw, order and assemble (and hours to read)


class RegionsFileError(DataError):
    """A regions file that cannot be read; the message names the file and line."""


@dataclass
class GivenPage:
    """The regions a file gives for one page, or why they cannot be used; `where` names the file and line."""

    where: str
    regions: list[Region] = field(default_factory=list)
    error: str | None = None


@dataclass
class GivenRegions:
    """A regions file's pages, keyed by (absolute input path, page); COCO images also by their `file_name`."""

    path: Path
    pages: dict[tuple[str, int | None], GivenPage] = field(default_factory=dict)
    names: dict[tuple[str, ...], GivenPage] = field(default_factory=dict)
    real: dict[tuple[str, int | None], GivenPage] | None = field(default=None, repr=False)  # by resolved path

    def lookup(self, input_: str | Path, page: int | None) -> GivenPage | None:
        """The page's regions, or None when the file does not give them; a path through a link matches the
        file the link leads to."""
        found = self.pages.get((os.path.abspath(input_), page))
        if found is None:
            if self.real is None:
                self.real = {(os.path.realpath(path), number): entry for (path, number), entry in self.pages.items()}
            found = self.real.get((os.path.realpath(input_), page))
        if found is not None or page is not None:
            return found
        parts = Path(os.path.abspath(input_)).parts
        for k in range(1, len(parts)):
            found = self.names.get(tuple(parts[-k:]))
            if found is not None:
                return found
        return None


def read_regions(path: str | Path) -> GivenRegions:
    """A JSONL or COCO regions file (see the module docstring)."""
    path = Path(path)
    text = read_text_file(path, "regions file", RegionsFileError)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RegionsFileError(f"{path}: not JSON ({e})") from None
        return _coco(path, data)
    return _jsonl(path, text)


def _jsonl(path: Path, text: str) -> GivenRegions:
    given = GivenRegions(path)
    seen: dict[tuple[str, int | None], int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RegionsFileError(f"{where}: not a JSON row ({e})") from None
        if not isinstance(row, dict):
            raise RegionsFileError(f"{where}: expected an object {{input, page, regions}}, not {_kind(row)}")
        unknown = sorted(set(row) - {"input", "page", "regions"})
        if unknown:
            raise RegionsFileError(f"{where}: unknown key {unknown[0]!r} (a row has input, page and regions)")
        input_, page = row.get("input"), row.get("page")
        if not isinstance(input_, str) or not input_:
            raise RegionsFileError(f"{where}: `input` must be the page's file, not {_kind(input_)}")
        if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 1):
            raise RegionsFileError(f"{where}: `page` must be a page number from 1, or null for an image, "
                                   f"not {_kind(page)}")
        if not isinstance(row.get("regions"), list):
            raise RegionsFileError(f"{where}: `regions` must be a list of {{label, bbox, score?}}, "
                                   f"not {_kind(row.get('regions'))}")
        key = (os.path.abspath(input_), page)
        if key in seen:
            raise RegionsFileError(f"{where}: {input_} page {page} is given twice (also on line {seen[key]})")
        seen[key] = line_no
        given.pages[key] = _page(where, row["regions"], lambda r: r.get("bbox"))
    return given


def _coco(path: Path, data: Any) -> GivenRegions:
    try:
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = list(data["images"])
        annotations: dict[Any, list] = {}
        for annotation in data["annotations"]:
            annotations.setdefault(annotation["image_id"], []).append(annotation)
    except (KeyError, TypeError) as e:
        raise RegionsFileError(f"{path}: not a COCO dataset file (images, annotations, categories): "
                               f"{type(e).__name__}: {e}") from None
    given = GivenRegions(path)
    for n, image in enumerate(images):
        name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(name, str) or not name:
            raise RegionsFileError(f"{path}: image {n + 1}: no `file_name`")
        where = f"{path}: image {name}"
        key = (os.path.abspath(path.parent / name), None)
        if key in given.pages:
            raise RegionsFileError(f"{where}: given twice")
        width, height = image.get("width"), image.get("height")
        if not all(_number(v) and _finite(v) and v > 0 for v in (width, height)):
            given.pages[key] = GivenPage(where, error=f"{where}: `width` and `height` must be positive numbers "
                                                      f"(pixels), not {width!r} x {height!r}")
        else:
            rows = [{"label": categories.get(a.get("category_id")) if isinstance(a, dict) else None,
                     "bbox": a.get("bbox") if isinstance(a, dict) else None,
                     **({"score": a["score"]} if isinstance(a, dict) and "score" in a else {}),
                     **({"content": a["attributes"]["content"]} if isinstance(a, dict) and isinstance(
                         a.get("attributes"), dict) and "content" in a["attributes"] else {})}
                    for a in annotations.get(image.get("id"), [])]
            given.pages[key] = _page(where, rows, lambda r: _fractions(r.get("bbox"), width, height))
        given.names[PurePosixPath(name.replace("\\", "/")).parts] = given.pages[key]
    return given


def _fractions(bbox: Any, width: float, height: float):
    """COCO's x, y, width, height in pixels -> x0, y0, x1, y1 in fractions (or the value as it was, to be refused)."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) and _finite(v) for v in bbox):
        return bbox
    x, y, w, h = bbox
    return [x / width, y / height, (x + w) / width, (y + h) / height]


def _page(where: str, rows: list, box_of) -> GivenPage:
    """A page's regions, or the first reason one cannot be used as its error."""
    if len(rows) > MAX_REGIONS:
        return GivenPage(where, error=f"{where}: {len(rows)} regions on one page; at most {MAX_REGIONS}")
    regions = []
    for k, row in enumerate(rows, start=1):
        problem = None
        if not isinstance(row, dict):
            problem = f"expected {{label, bbox, score?}}, not {_kind(row)}"
        else:
            label, box, score = row.get("label"), box_of(row), row.get("score")
            problem = _problem(label, box, score, row.get("content"))
        if problem is not None:
            return GivenPage(where, error=f"{where}: region {k}: {problem}")
        x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)
        regions.append(Region(label.strip(), (x0, y0, x1, y1), None if score is None else float(score),
                              row.get("content")))
    return GivenPage(where, regions)


def _problem(label: Any, box: Any, score: Any, content: Any = None) -> str | None:
    if not isinstance(label, str) or not label.strip() or not label.isprintable():
        return f"`label` must name the region's class, not {_kind(label)}"
    if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
        return f"`bbox` must be [x0, y0, x1, y1] in fractions of the page, not {_kind(box)}"
    if not all(_finite(v) for v in box):
        return f"`bbox` {box} is not finite"
    if any(v < -SLACK or v > 1 + SLACK for v in box):
        return f"`bbox` {box} is outside the page ([0, 1]; fractions of its width and height, not pixels)"
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"`bbox` {box} is empty or reversed (x0 < x1 and y0 < y1)"
    if score is not None and (not _number(score) or not _finite(score)):
        return f"`score` must be a finite number, not {_kind(score)}"
    if content is not None and (not isinstance(content, str) or not encodable(content)):
        return f"`content` must be the region's text, not {_kind(content)}"
    return None


def _finite(value: float) -> bool:
    """A finite number; an integer too large for a float (`1e400` written out) is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    text, name = repr(value), type(value).__name__
    return text if len(text) <= 80 else f"{'an' if name[0] in 'aeiou' else 'a'} {name} ({len(text)} characters)"
