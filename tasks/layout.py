"""`layout`: a page image -> its regions (tables, molecules, scores, text, headings...) in PaliGemma's detection text.

The prompt is `detect a ; b ; ...` over the task's `classes`; the target is one
`<locYmin><locXmin><locYmax><locXmax> label` per region, joined by ` ; `, in the reading order of
`docvlm.converters.reading_order` (the order the page pipeline lays items out in). Images are stretched to the
square, as PaliGemma's detection pretraining saw them; training augmentation moves the boxes with the pixels.

Readers:
- COCO layout sets (DocLayNet: `COCO/<split>.json` + `PNG/`; PubLayNet: `<split>.json` + `<split>/`; or a COCO
  JSON file, its images beside it or in `images/`). Category names go through `class_map`; without an entry,
  a name whose lower case is a class is that class; other regions are dropped, and counted in the log and in
  each sample's `meta["dropped"]`.
- PubTables-1M's detection split: PASCAL VOC XML files (`<split>/*.xml`, images in `images/`).
- Hugging Face `datasets` rows with COCO-style `objects` (`bbox` as x, y, width, height in pixels, `category`
  as a name or an index into `categories`), as the Hub's copies of DocLayNet keep them.
- The generic manifest, targets already in detection text.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from docvlm.tasks.base import Metric, Parsed, Sample, Task, register
from docvlm.tasks.manifest import ManifestError, read_manifest

log = logging.getLogger(__name__)

DOCLAYNET = ("caption", "footnote", "formula", "list-item", "page-footer", "page-header", "picture",
             "section-header", "table", "text", "title")
CLASSES = (*DOCLAYNET, "molecule", "music")
MAP_NOTE = ("COCOeval (pycocotools), 100 boxes per page; boxes decoded with the model's token scores (validation, "
            "evaluate with a model, predictions files that kept their confidences) are ranked by their confidence, "
            "the product of their label tokens' probabilities (scored_boxes: the share that had one, listed only "
            "then); boxes read from text alone have no confidence: each counts 1.0, and COCOeval ranks the ties "
            "by page, then in the order the model wrote them")
SCORED_NOTE = "share of the predicted boxes (of known classes) ranked by the model's confidence in mAP"
TRUE_COLOUR, PREDICTED_COLOUR = (0, 150, 60), (220, 0, 110)


@register
@dataclass
class LayoutTask(Task):
    """Page image -> regions as PaliGemma detection text, scored by F1 at IoU 0.5 and COCO mAP.

    Attributes:
        classes: the labels the model is asked for, in the prompt's order (DocLayNet's eleven, lower case,
            plus `molecule` and `music` by default).
        class_map: dataset category name -> class, for readers (e.g. PubLayNet `{figure: picture, list:
            list-item}`); unmapped categories whose lower case is not a class are dropped and counted.
        categories: names of integer categories in `datasets` rows, in index order (a ClassLabel's names).
        synthetic_kinds: what synthetic pages hold (some of `docvlm.converters.page_synth.KINDS`, each a class);
            empty: every kind that is a class.
        synthetic_width: width of synthetic pages in pixels (A4's aspect).
        synthetic_min_regions: fewest regions of a synthetic page.
        synthetic_max_regions: most regions of a synthetic page.
        synthetic_grid: > 0: synthetic blocks on a lattice of this many cells a side (tiny models; see
            `page_synth.random_page`).
        synthetic_bold: thicken the synthetic blocks' strokes by this many pixels (tiny models).
    """

    name = "layout"
    metrics = (Metric("f1", corpus=True), Metric("precision", corpus=True), Metric("recall", corpus=True),
               *(Metric(name, corpus=True, note=MAP_NOTE) for name in ("map", "map50", "map75")),
               Metric("scored_boxes", corpus=True, perfect=None, optional=True, note=SCORED_NOTE))
    main_metric = "f1"
    augments_targets = True
    wants_token_scores = True
    export_wants_image = True
    prefix: str = ""
    max_target_tokens: int = 1024
    image_mode: Literal["stretch"] = "stretch"  # boxes are fractions of the whole page
    classes: tuple[str, ...] = CLASSES
    class_map: dict[str, str] | None = None
    categories: tuple[str, ...] = ()
    synthetic_kinds: tuple[str, ...] = ()
    synthetic_width: int = 896
    synthetic_min_regions: int = 1
    synthetic_max_regions: int = 8
    synthetic_grid: int = 0
    synthetic_bold: int = 0

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        if self.image_mode != "stretch":  # boxes are fractions of the page: padding would move every one of them
            raise ValueError(f"layout image_mode must be 'stretch' (boxes are fractions of the whole page, as "
                             f"PaliGemma's detection pretraining saw pages), got {self.image_mode!r}")
        if not self.classes or any(not c or ";" in c or "<" in c for c in self.classes):
            raise ValueError(f"layout classes must be non-empty names without ';' or '<', got {self.classes}")
        if not self.prefix:
            self.prefix = "detect " + " ; ".join(self.classes)
        # per class: AP and F1, declared for this instance's classes (absent where the set has no such region)
        self.metrics = (*type(self).metrics,
                        *(Metric(f"ap_{c}", corpus=True, optional=True, note=MAP_NOTE) for c in self.classes),
                        *(Metric(f"f1_{c}", corpus=True, optional=True) for c in self.classes))

    @property
    def targets_locate(self) -> bool:
        return True

    # ---- data ------------------------------------------------------------------------------------
    def read(self, source: str | Path, split: str | None = None) -> list[Sample]:
        """A COCO JSON file or folder, a folder of VOC XML files, or a manifest (see the module docstring)."""
        source = Path(source)
        if source.is_file() and source.suffix.lower() == ".json":
            return self._read_coco(source, split)
        if source.is_file():
            return read_manifest(source)
        if not source.is_dir():
            raise ManifestError(f"{source}: no such file or folder")
        names = [f"{split}.json"] if split else []
        for candidate in [source / "COCO" / n for n in names] + [source / n for n in names]:
            if candidate.is_file():
                return self._read_coco(candidate, split)
        for folder in ([source / split] if split else []) + [source]:
            xml = sorted(folder.glob("*.xml")) if folder.is_dir() else []
            if xml:
                return self._read_voc(xml, source)
        raise ManifestError(f"{source}: no COCO annotation file ({', '.join(names) or '<split>.json'}, also under "
                            "COCO/) and no VOC XML files in this folder")

    def _label(self, category: str, dropped: Counter) -> str | None:
        """The class of a dataset category, or None (counted in `dropped`)."""
        label = (self.class_map or {}).get(category)
        if label is None and category.lower() in self.classes:
            label = category.lower()
        if label is None or label not in self.classes:
            dropped[category] += 1
            return None
        return label

    def _target(self, regions: list, dropped: Counter) -> str:
        """The detection text of (category, x0, y0, x1, y1 in fractions) regions, in reading order."""
        from docvlm.converters.layout import Region, to_text
        from docvlm.converters.reading_order import reading_order

        kept = []
        for category, *box in regions:
            label = self._label(str(category), dropped)
            if label is None:
                continue
            x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)
            if x1 <= x0 or y1 <= y0:  # degenerate annotations occur in real sets: dropped, counted
                dropped[f"{category} (empty box)"] += 1
                continue
            kept.append(Region(label, (x0, y0, x1, y1)))
        return to_text(kept[i] for i in reading_order([r.box for r in kept]))

    def _read_coco(self, path: Path, split: str | None) -> list[Sample]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            categories = {c["id"]: c["name"] for c in data["categories"]}
            boxes: dict[Any, list] = {}
            for annotation in data["annotations"]:
                boxes.setdefault(annotation["image_id"], []).append(annotation)
            images = data["images"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ManifestError(f"{path}: not a COCO annotation file ({type(e).__name__}: {e})") from None
        folders = [path.parent.parent / "PNG", path.parent / (split or ""), path.parent / "images", path.parent]
        samples, dropped = [], Counter()
        for n, image in enumerate(images):
            where = f"{path}: image {image.get('id')!r}"
            try:
                width, height = float(image["width"]), float(image["height"])
                regions = [(categories[a["category_id"]], a["bbox"][0] / width, a["bbox"][1] / height,
                            (a["bbox"][0] + a["bbox"][2]) / width, (a["bbox"][1] + a["bbox"][3]) / height)
                           for a in boxes.get(image["id"], [])]
                page_dropped = Counter()
                target = self._target(regions, page_dropped)
                file = _find(folders, image["file_name"])
            except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError) as e:
                raise ManifestError(f"{where}: {type(e).__name__}: {e}") from None
            dropped += page_dropped
            samples.append(Sample(id=str(image.get("id", n)), image=file, target=target,
                                  meta={"dropped": dict(page_dropped)}, source=f"{path}:image {image.get('id')}"))
        _log_dropped(path, dropped, len(samples))
        return samples

    def _read_voc(self, files: list[Path], root: Path) -> list[Sample]:
        from xml.etree import ElementTree

        samples, dropped = [], Counter()
        for path in files:
            try:
                tree = ElementTree.parse(path).getroot()
                width, height = float(tree.findtext("size/width")), float(tree.findtext("size/height"))
                regions = []
                for obj in tree.iter("object"):
                    box = obj.find("bndbox")
                    x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                    regions.append((obj.findtext("name").strip(), x0 / width, y0 / height, x1 / width, y1 / height))
                page_dropped = Counter()
                target = self._target(regions, page_dropped)
                name = tree.findtext("filename") or path.with_suffix(".jpg").name
            except (ElementTree.ParseError, OSError, AttributeError, TypeError, ValueError, ZeroDivisionError) as e:
                raise ManifestError(f"{path}: not a VOC annotation ({type(e).__name__}: {e})") from None
            dropped += page_dropped
            image = _find([root / "images", path.parent.parent / "images", path.parent], name)
            samples.append(Sample(id=path.stem, image=image, target=target, meta={"dropped": dict(page_dropped)},
                                  source=str(path)))
        _log_dropped(root, dropped, len(samples))
        return samples

    def sample_from_record(self, record: Mapping[str, Any], columns: Mapping[str, str | None], source: str) -> Sample:
        """A `datasets` row whose `objects` column (or `columns["objects"]`) holds COCO-style `bbox` (x, y, width,
        height in pixels) and `category` (a name, or an index into `categories`), as a list of dicts or a dict
        of lists; the image's size is the row's `width`/`height` or read from the image."""
        objects = columns.get("objects") or "objects"
        if columns.get("target") in record or objects not in record:
            return super().sample_from_record(record, columns, source)
        sample = super().sample_from_record(record, {**columns, "target": None}, source)
        try:
            rows = record[objects]
            if isinstance(rows, Mapping):  # datasets' Sequence of a dict: a dict of lists
                rows = [dict(zip(rows, values)) for values in zip(*rows.values())]
            if record.get("width") and record.get("height"):
                width, height = float(record["width"]), float(record["height"])
            else:
                width, height = _size(sample.image)
            regions = []
            for row in rows:
                category = row["category"] if "category" in row else row["category_id"]
                if isinstance(category, int):
                    category = self.categories[category] if self.categories else str(category)
                x, y, w, h = (float(v) for v in row["bbox"])
                regions.append((category, x / width, y / height, (x + w) / width, (y + h) / height))
            dropped = Counter()
            target = self._target(regions, dropped)
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OSError) as e:
            raise ManifestError(f"{source}: column {objects!r}: {type(e).__name__}: {e}") from None
        return dataclasses.replace(sample, target=target, meta={"dropped": dict(dropped)})

    def synthesize(self, n: int, seed: int = 0) -> Iterator[Sample]:
        """Synthetic pages (`docvlm.converters.page_synth`); each sample's `meta["regions"]` holds its regions
        (label, box as fractions, content) in reading order, for the page pipeline's tests."""
        from docvlm.converters.layout import Region, to_text
        from docvlm.converters.page_synth import KINDS, random_page

        kinds = tuple(self.synthetic_kinds) or tuple(k for k in KINDS if k in self.classes)
        unknown = set(kinds) - set(self.classes)
        if unknown or not kinds:
            raise ValueError(f"synthetic_kinds {sorted(unknown) or 'none'}: synthetic pages need some of {KINDS} "
                             f"among the classes {list(self.classes)}")
        for i in range(n):
            page = random_page(random.Random(f"{seed}:{i}"), kinds, self.synthetic_width, self.synthetic_min_regions,
                               self.synthetic_max_regions, grid=self.synthetic_grid, bold=self.synthetic_bold)
            width, height = page.size
            regions = [Region(r.label, (r.box[0] / width, r.box[1] / height, r.box[2] / width, r.box[3] / height),
                              content=r.content) for r in page.regions]
            buffer = io.BytesIO()
            page.image.save(buffer, format="PNG")  # kept encoded: a page set holds no decoded pixels
            yield Sample(id=f"synthetic-{seed}-{i}", image=functools.partial(_png, buffer.getvalue()),
                         target=to_text(regions), meta={"regions": regions})

    # ---- augmentation ----------------------------------------------------------------------------
    def augmentation(self, augment: Any) -> Any:
        return augment.build(boxes=True)

    def augment_pair(self, pipeline: Any, image, target: str | None):
        """The image and its boxes through the same box-safe transforms (`Augment.build(boxes=True)`); regions
        pushed out of the image are left out of the target, the others keep their order."""
        import numpy as np
        from PIL import Image

        from docvlm.converters.layout import parse, to_text

        regions = parse(target or "", self.classes)[0]
        regions = [r for r in regions if r.box[2] > r.box[0] and r.box[3] > r.box[1]]
        boxes = np.array([r.box for r in regions], dtype=np.float64).reshape(-1, 4)
        out = pipeline(image=np.asarray(image), bboxes=boxes, labels=list(range(len(regions))))
        moved = [dataclasses.replace(regions[int(i)], box=tuple(float(v) for v in box[:4]))
                 for i, box in zip(out["labels"], out["bboxes"])]
        return Image.fromarray(out["image"]), (to_text(moved) if target is not None else None)

    # ---- model output ----------------------------------------------------------------------------
    def parse(self, text: str) -> Parsed:
        from docvlm.converters.layout import parse

        regions, problems = parse(text, self.classes)
        return Parsed(text=text, value=regions, problems=problems)

    def parse_generation(self, generation) -> Parsed:
        """The regions, each with its confidence as `score` where the tokens' probabilities are at hand
        (`docvlm.converters.layout.label_confidence`)."""
        from docvlm.converters.layout import parse

        regions, problems = parse(generation.text, self.classes, generation.pieces, generation.probabilities)
        return Parsed(text=generation.text, value=regions, problems=problems)

    def confidences(self, generation) -> list[float | None] | None:
        regions = self.parse_generation(generation).value
        return [r.score for r in regions] if any(r.score is not None for r in regions) else None

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """F1/precision/recall at IoU 0.5 and COCO mAP (every box from text alone has confidence 1.0, in written
        order), per class too: `docvlm.metrics.layout`."""
        return self.score_with(predictions, references, [None] * len(predictions))

    def score_with(self, predictions: Sequence[str], references: Sequence[str],
                   confidences: Sequence[list[float | None] | None]) -> dict[str, float]:
        """`score`, each predicted box ranked in mAP by its confidence where given (one per parsed region, as
        `confidences` lists them), with `scored_boxes`, the share of boxes that had one, when any had one."""
        import dataclasses

        from docvlm.converters.layout import parse
        from docvlm.metrics.common import same_length
        from docvlm.metrics.layout import detection_f1, detection_map

        same_length(predictions, references)
        if len(confidences) != len(predictions):
            raise ValueError(f"{len(confidences)} confidence lists for {len(predictions)} predictions")
        predicted = []
        for n, (text, given) in enumerate(zip(predictions, confidences)):
            regions = parse(text, self.classes)[0]
            if given is not None:
                if len(given) != len(regions):
                    raise ValueError(f"prediction {n + 1}: {len(given)} confidences for its {len(regions)} regions")
                regions = [dataclasses.replace(r, score=c) for r, c in zip(regions, given)]
            predicted.append(regions)
        true = [parse(r, self.classes)[0] for r in references]
        scores = {**detection_f1(predicted, true, self.classes), **detection_map(predicted, true, self.classes)}
        known = [r for regions in predicted for r in regions if r.label in self.classes]
        if known and any(c is not None for c in confidences):
            scores["scored_boxes"] = sum(r.score is not None for r in known) / len(known)
        return scores

    def illustrate(self, image, target: str | None, prediction: str):
        """The page with the true boxes (green) and the predicted ones (magenta, numbered in written order)."""
        from PIL import ImageDraw

        from docvlm.converters.layout import draw_regions, parse

        true = parse(target, self.classes)[0] if target else []
        page = draw_regions(image, true, colour=TRUE_COLOUR, numbered=False)
        page = draw_regions(page, parse(prediction, self.classes)[0], colour=PREDICTED_COLOUR)
        draw = ImageDraw.Draw(page)
        draw.text((4, page.height - 24), "true", fill=TRUE_COLOUR)
        draw.text((4, page.height - 12), "predicted", fill=PREDICTED_COLOUR)
        return page

    def export(self, parsed: Parsed, stem: str | Path, image=None) -> list[Path]:
        """`<stem>.json` (regions; boxes in pixels of `image` when given) and `<stem>.png` (boxes drawn)."""
        from docvlm.converters.layout import export

        return export(parsed.value or [], parsed.text, stem, image)


def _png(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data))


def _find(folders: list[Path], name: str) -> Path:
    """The first folder's `name` that exists, else the first folder's (reported when it is loaded)."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return folders[0] / name


def _size(image) -> tuple[float, float]:
    from PIL import Image

    opened = image() if callable(image) else image
    if isinstance(opened, Image.Image):
        return opened.size
    with Image.open(opened) as loaded:
        return loaded.size


def _log_dropped(where: Path, dropped: Counter, pages: int) -> None:
    if dropped:
        log.warning("%s: %d regions of categories that are not classes were dropped from %d pages: %s (map them "
                    "with class_map)", where, sum(dropped.values()), pages, dict(dropped.most_common()))
