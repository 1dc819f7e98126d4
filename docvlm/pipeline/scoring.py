"""Page evaluation: predicted pages against true pages, as docling-eval and OmniDocBench score whole pages.

Pages are lists of regions: `docvlm.pipeline.results.RegionResult` (its `text` is the content) or
`docvlm.converters.layout.Region` (its `content`), with a label and a box in fractions of the page; a
predicted page lists its regions in its reading order, a true page in the true one. `score_pages` returns one
flat dict of metrics and one `PageScore` per page:

- `layout/...`: the layout task's own metrics (`docvlm.metrics.layout`: `precision`, `recall`, `f1`,
  `f1_<class>` at IoU 0.5; COCO `map`, `map50`, `map75`, `ap_<class>`).
- `<label>/<metric>`, for each routed label (`table/teds`, `molecule/canon_smiles`, `music/cer`, ...): the
  route's task's `score` over the label's true regions. Regions are matched per page and label, one to one,
  IoU at least 0.5, highest IoU first (`docvlm.metrics.layout.match`, the same matching as the layout F1); a
  matched true region is scored against its predicted region's content, a missed one against an empty
  prediction (docling-eval and OmniDocBench count a missed element so). Spurious predicted regions are
  listed in the page rows, not scored. A label with no true region in the set has no metrics. Keys name the
  label, not the task: two labels routed to one task (`text`, `caption`) are scored apart.
- `reading_order/ned`: per page, the true indices of the matched regions taken in predicted reading order
  (the sequence `s`) against the same indices in true order (`sorted(s)`): Levenshtein distance over
  sequences of indices / `len(s)`, 0 when the order is the true one, at most 1. The mean over the pages
  with at least two matched regions (a page with fewer has no order to get wrong; 0.0 when no page has
  two); `reading_order/pages` says how many pages that was. OmniDocBench (Ouyang et al., CVPR 2025,
  arXiv 2412.07626) reports reading order as such a normalised edit distance over the elements it matched,
  averaged over pages (it matches by content, we by box: boxes are what the layout model predicts);
  docling-eval reports an average relative distance (ARD) of the order instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from docvlm.metrics.layout import box_iou, detection_f1, detection_map, match
from docvlm.tasks import Task, get

IOU = 0.5


@dataclass
class PageScore:
    """What one page's evaluation found, for reports.

    Attributes:
        matched: (predicted index, true index, IoU) of each matched pair, in predicted order.
        missed: indices of true regions without a match (scored as empty predictions where routed).
        spurious: indices of predicted regions without a match (not scored).
        reading_order_ned: the page's reading-order normalised edit distance; None with fewer than two matches.
    """

    matched: list[tuple[int, int, float]] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    spurious: list[int] = field(default_factory=list)
    reading_order_ned: float | None = None


def content(region: Any) -> str:
    """A region's content text: `RegionResult.text` or `Region.content`; "" when there is none."""
    text = region.text if hasattr(region, "text") else getattr(region, "content", None)
    return text if isinstance(text, str) else ""


def reading_order_ned(true_indices: Sequence[int]) -> float:
    """The normalised edit distance of a sequence of true indices (matched regions in predicted order) from the
    same indices in ascending (true) order; 0.0 for an empty sequence."""
    from rapidfuzz.distance import Levenshtein

    order = list(true_indices)
    return Levenshtein.distance(order, sorted(order)) / len(order) if order else 0.0


def score_page(predicted: Sequence[Any], true: Sequence[Any], threshold: float = IOU) -> PageScore:
    """The matching of one page and its reading-order distance."""
    pairs = sorted(match(predicted, true, threshold))
    matched = [(i, j, box_iou(predicted[i].box, true[j].box)) for i, j in pairs]
    used_p, used_t = {i for i, _ in pairs}, {j for _, j in pairs}
    ned = reading_order_ned([j for _, j in pairs]) if len(pairs) >= 2 else None
    return PageScore(matched, [j for j in range(len(true)) if j not in used_t],
                     [i for i in range(len(predicted)) if i not in used_p], ned)


def score_pages(predictions: Sequence[Sequence[Any]], references: Sequence[Sequence[Any]],
                routes: Mapping[str, Task | str], classes: Sequence[str] | None = None,
                threshold: float = IOU) -> tuple[dict[str, float], list[PageScore]]:
    """The metrics of predicted pages against true pages (see the module docstring) and one row per page.

    `routes` maps a label to the task that reads its regions (a `Task`, with the route's options, or a task
    name). `classes` are the layout classes (the layout model's); by default every label of the true and
    predicted regions (a label found only among the predictions then has F1 0, and no AP: COCO averages
    over the classes with true regions).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted pages for {len(references)} true pages")
    if classes is None:
        classes = sorted({r.label for pages in (predictions, references) for page in pages for r in page})
    rows = [score_page(p, t, threshold) for p, t in zip(predictions, references)]
    metrics = {f"layout/{k}": v for k, v in detection_f1(predictions, references, classes, threshold).items()}
    metrics.update({f"layout/{k}": v for k, v in detection_map(predictions, references, classes).items()})
    for label, task in routes.items():
        task = get(task) if isinstance(task, str) else task
        pairs = [(content(p[i]), content(t[j])) for p, t, row in zip(predictions, references, rows)
                 for i, j, _ in row.matched if t[j].label == label]
        pairs += [("", content(t[j])) for t, row in zip(references, rows) for j in row.missed if t[j].label == label]
        if pairs:
            outputs, targets = zip(*pairs)
            metrics.update({f"{label}/{k}": v for k, v in task.score(list(outputs), list(targets)).items()})
    judged = [row.reading_order_ned for row in rows if row.reading_order_ned is not None]
    metrics["reading_order/ned"] = sum(judged) / len(judged) if judged else 0.0
    metrics["reading_order/pages"] = float(len(judged))
    return metrics, rows
