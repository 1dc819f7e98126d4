"""Layout detection metrics over pages of regions (`docvlm.converters.layout.Region`, boxes as fractions).

- `detection_f1`: precision, recall and F1 at IoU 0.5, per page and class, boxes matched one to one greedily by
  descending IoU, counts pooled over all pages and classes (and per class). It depends neither on the order
  nor on the confidences of the predicted boxes. A region whose label is not among the classes is a false
  positive.
- `detection_map`: COCO mAP@[.5:.95], mAP@.5 and mAP@.75 (100 detections per image, all areas) and AP per class,
  computed by pycocotools' COCOeval itself. A predicted box takes its `score`, or 1.0 when it has none (boxes
  read from text alone): COCOeval then sorts stably, so ties rank by page, then by the order written. Boxes are
  given to COCOeval on a 1024 x 1024 page: IoU does not change with the scale of each axis, so bins, fractions
  and pixels give the same AP (COCO's small/medium/large ranges would differ, and are not reported). Regions
  of labels outside the classes are not given to COCOeval (it has no such category).

Sets without true regions: precision, recall, F1 and AP are 1.0 when nothing is predicted either, else 0.0.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from docvlm.converters.layout import Region

__all__ = ["box_iou", "detection_f1", "detection_map"]  # what `docvlm.metrics` offers by name

IOU = 0.5
SIDE = 1024.0  # the page COCOeval sees, in its own units


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0.0 when both are empty."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(predicted: Sequence[Region], true: Sequence[Region], threshold: float = IOU) -> list[tuple[int, int]]:
    """(predicted, true) index pairs of one page: same label, IoU >= `threshold`, one to one, taken greedily by
    descending IoU (ties by predicted, then true index)."""
    pairs = sorted(((box_iou(p.box, t.box), i, j) for i, p in enumerate(predicted) for j, t in enumerate(true)
                    if p.label == t.label), key=lambda c: (-c[0], c[1], c[2]))
    used_p, used_t, matched = set(), set(), []
    for iou, i, j in pairs:
        if iou >= threshold and i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            matched.append((i, j))
    return matched


def _ratio(hits: int, total: int, other: int) -> float:
    """hits / total, or 1.0 when both sides are empty and 0.0 when only this one is."""
    return hits / total if total else (0.0 if other else 1.0)


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    if not n_pred and not n_true:
        return 1.0, 1.0, 1.0
    return _ratio(tp, n_pred, n_true), _ratio(tp, n_true, n_pred), 2 * tp / (n_pred + n_true)


def detection_f1(predictions: Sequence[Sequence[Region]], references: Sequence[Sequence[Region]],
                 classes: Sequence[str], threshold: float = IOU) -> dict[str, float]:
    """`precision`, `recall`, `f1` pooled over pages and classes, and `f1_<class>` for each class that has true or
    predicted regions in the set."""
    counts = {c: [0, 0, 0] for c in classes}  # matched, predicted, true
    unknown = 0
    for predicted, true in zip(predictions, references, strict=True):
        for i, _ in match(predicted, true, threshold):
            counts.setdefault(predicted[i].label, [0, 0, 0])[0] += 1
        for region in predicted:
            if region.label in counts:
                counts[region.label][1] += 1
            else:
                unknown += 1
        for region in true:
            counts.setdefault(region.label, [0, 0, 0])[2] += 1
    tp = sum(c[0] for c in counts.values())
    n_pred = sum(c[1] for c in counts.values()) + unknown
    n_true = sum(c[2] for c in counts.values())
    precision, recall, f1 = _prf(tp, n_pred, n_true)
    scores = {"precision": precision, "recall": recall, "f1": f1}
    for label in classes:
        matched, predicted, true = counts[label]
        if predicted or true:
            scores[f"f1_{label}"] = _prf(matched, predicted, true)[2]
    return scores


def detection_map(predictions: Sequence[Sequence[Region]], references: Sequence[Sequence[Region]],
                  classes: Sequence[str]) -> dict[str, float]:
    """`map`, `map50`, `map75` and `ap_<class>` for each class with true regions, by COCOeval (see the module)."""
    import numpy as np
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted pages for {len(references)} true pages")
    n_true = sum(len(t) for t in references)
    n_pred = sum(r.label in classes for p in predictions for r in p)
    if not n_true:
        value = 0.0 if n_pred else 1.0
        return {"map": value, "map50": value, "map75": value}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt, dt = _coco(references, classes, False), _coco(predictions, classes, True)
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class, all areas, 100 detections

    def mean(values) -> float:
        kept = values[values > -1]
        return float(np.mean(kept)) if kept.size else 0.0

    scores = {"map": mean(precision), "map50": mean(precision[0]), "map75": mean(precision[5])}
    for k, label in enumerate(classes):
        if (precision[:, :, k] > -1).any():
            scores[f"ap_{label}"] = mean(precision[:, :, k])
    return scores


def _coco(pages: Sequence[Sequence[Region]], classes: Sequence[str], detections: bool):
    """A pycocotools COCO object of `pages` (image ids and annotation ids from 1: COCOeval takes id 0 for no match)."""
    from pycocotools.coco import COCO

    category = {label: k + 1 for k, label in enumerate(classes)}
    annotations = []
    for page_id, regions in enumerate(pages, 1):
        for region in regions:
            if region.label not in category:
                continue
            x0, y0, x1, y1 = (v * SIDE for v in region.box)
            row = {"id": len(annotations) + 1, "image_id": page_id, "category_id": category[region.label],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            if detections:
                row["score"] = 1.0 if region.score is None else float(region.score)
            annotations.append(row)
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(1, len(pages) + 1)], "annotations": annotations,
                    "categories": [{"id": k, "name": label} for label, k in category.items()]}
    coco.createIndex()
    return coco
