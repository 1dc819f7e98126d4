"""Page ground truth: pages with their true regions and each region's content, composed or read from a COCO file.

The COCO form (`write_coco` writes it, `read_coco_truth` reads it, `convert --pipeline --regions` and the layout
task read it too): one JSON file with
- `images`: `id`, `file_name` (relative to the JSON file's folder), `width` and `height` in pixels;
- `categories`: `id` and `name`, the region labels (`table`, `molecule`, `music`, `text`, `title`, ...);
- `annotations`: `id`, `image_id`, `category_id`, `bbox` (x, y, width, height in pixels, top-left origin),
  `area`, `iscrowd` 0, and the region's content in `attributes.content` (table HTML, SMILES, **kern, text):
  the place CVAT's COCO export and import keep an annotation's attributes. An image's annotations are listed
  in reading order.

A plain COCO layout file (DocLayNet's, PubLayNet's: no `attributes`) is page truth too, without contents: then
only the layout is scored. An annotation's content that is not text makes that image's truth unusable: the
error names the file and the image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from docvlm.errors import DataError
from docvlm.outputs import save_image, write_text
from docvlm.pipeline.results import PageResult, RegionResult

TRUTH_FILE = "truth.json"  # the COCO file `write_coco` writes, beside the page images
CONTENT_TASKS = {"table": "tables", "molecule": "molecules", "music": "music"}  # any other label's content: text
TEXT_TASK = "text"


class TruthError(DataError):
    """Page ground truth that cannot be used; the message names the file (and image)."""


def content_task(label: str) -> str:
    """The task whose output a region's content is written in: tables' HTML, molecules' SMILES, music's **kern,
    text otherwise (paragraphs, titles, captions, headers...)."""
    return CONTENT_TASKS.get(label, TEXT_TASK)


def synthetic_pages(n: int, seed: int, kinds: tuple[str, ...] = (), width: int = 896
                    ) -> Iterator[tuple[Any, PageResult]]:
    """`n` composed pages (`docvlm.converters.page_synth`), one at a time: (image, true `PageResult`). They are the
    layout task's synthetic pages of the same `seed`, `kinds` (empty: every kind) and `width`, so that a layout
    model is evaluated on the pages its validation saw; each page's `input` is the file name `write_coco` gives it."""
    from docvlm.tasks.layout import LayoutTask

    for sample in LayoutTask(synthetic_kinds=tuple(kinds), synthetic_width=width).synthesize(n, seed):
        image = sample.image()
        regions = [RegionResult(r.label, tuple(r.box), task=content_task(r.label), text=r.content)
                   for r in sample.meta["regions"]]
        yield image, PageResult(f"{sample.id}.png", None, *image.size, "px", regions=regions)


def write_coco(folder: str | Path, pages: Iterable[tuple[Any, PageResult]]) -> Path:
    """Write each page's image (PNG, named after its `input`) and one COCO file of their true regions
    (`<folder>/truth.json`, see the module docstring) into `folder`; returns the COCO file's path.

    Boxes are written in pixels to 1/100 pixel: a box on whole pixels (composed pages) reads back to the same
    fractions."""
    from docvlm.images import load_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations, categories, taken = [], [], {}, set()
    for number, (source, page) in enumerate(pages, start=1):
        image = load_image(source) if not hasattr(source, "save") else source
        stem = Path(page.input).stem or f"page-{number}"
        name = f"{stem}.png"
        while name.casefold() in taken:  # two inputs of the same name in different folders
            name = f"{stem}-{number}-{len(taken)}.png"
        taken.add(name.casefold())
        save_image(folder / name, image.convert("RGB"))
        width, height = image.size
        images.append({"id": number, "file_name": name, "width": width, "height": height})
        for region in page.regions:
            x0, y0, x1, y1 = region.box
            box = [round(x0 * width, 2), round(y0 * height, 2), round((x1 - x0) * width, 2),
                   round((y1 - y0) * height, 2)]
            annotation = {"id": len(annotations) + 1, "image_id": number,
                          "category_id": categories.setdefault(region.label, len(categories) + 1), "bbox": box,
                          "area": round(box[2] * box[3], 2), "iscrowd": 0}
            if region.text is not None:
                annotation["attributes"] = {"content": region.text}
            annotations.append(annotation)
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": label} for label, i in categories.items()]}
    path = folder / TRUTH_FILE
    write_text(path, json.dumps(coco, ensure_ascii=False, indent=1) + "\n")
    return path


def read_coco_truth(path: str | Path) -> list[tuple[Path, PageResult]]:
    """The pages of a COCO file (see the module docstring), in its order: (image path, true `PageResult` with the
    size the file gives, regions in the order listed, each with its content where the file has one)."""
    from docvlm.pipeline.regions_file import RegionsFileError, read_regions

    path = Path(path)
    if path.suffix.lower() != ".json":
        raise TruthError(f"{path}: page ground truth is a COCO JSON file (images, annotations, categories)")
    if not path.exists():
        raise TruthError(f"{path}: no such page truth file")
    try:
        given = read_regions(path)
    except RegionsFileError as e:
        raise TruthError(str(e)) from None
    images = json.loads(path.read_text(encoding="utf-8"))["images"]  # read_regions checked them
    if not images:
        raise TruthError(f"{path}: no images: nothing to evaluate")
    pages = []
    for image in images:
        name = image["file_name"]
        page = given.lookup(path.parent / name, None)
        if page.error is not None:
            raise TruthError(page.error)
        regions = [RegionResult(r.label, tuple(r.box), task=content_task(r.label) if r.content is not None else None,
                                text=r.content) for r in page.regions]
        pages.append((path.parent / name, PageResult(name, None, image["width"], image["height"], "px",
                                                     regions=regions)))
    return pages
