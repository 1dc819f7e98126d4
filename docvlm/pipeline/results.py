"""What the page pipeline finds on a page, as the parts that assemble documents, manifests and reports read it.

One `PageResult` per page: its size in its own coordinates (pixels for images, PDF points for PDF pages), the
rotation and skew undone before layout, and its regions in reading order, each with its layout confidence, the
route that read it, the model's text, the task's parsed value, its problems and the files exported for it.
Boxes are fractions of the upright page's width and height (x0, y0, x1, y1, top-left origin), the unit of
`docvlm.converters.layout.Region`; `PageResult.to_units` gives them in the page's own coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Box = tuple[float, float, float, float]


@dataclass
class RegionResult:
    """One region of a page and what its route made of it.

    Attributes:
        label: the layout class (`table`, `molecule`, `music`, `text`, `title`, ...).
        box: fractions of the upright page (x0, y0, x1, y1).
        score: the layout model's confidence in the region, or the regions file's `score`; None when unknown.
        task: the task of the route that read it (`tables`, `molecules`, `music`, `text`); None without a route.
        text: the route's output text (or a PDF text layer's text); None when nothing read the region.
        value: the task's parsed value (a `Table`, an RDKit molecule, repaired **kern, text); None when unusable.
        source: `model` (decoded), `text-layer` (a PDF's own text) or None (no route).
        problems: decoding and parsing problems of the region's content.
        outputs: files exported for the region, relative to the output folder.
    """

    label: str
    box: Box
    score: float | None = None
    task: str | None = None
    text: str | None = None
    value: Any = None
    source: str | None = None
    problems: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The region as a manifest row lists it (no parsed value: it is in the exported files)."""
        row = asdict(self)
        row.pop("value")
        return row


@dataclass
class PageResult:
    """One page of a document and its regions in reading order.

    Attributes:
        input: the input file as the run names it; page: 1-based page of a PDF or TIFF, None for an image.
        width, height: the page's size in `unit` (docling's page size: PDF points for PDF pages, respecting
            the crop box and `/Rotate`; pixels for images), after the page was turned upright.
        unit: `pt` or `px`.
        rotation: degrees (0, 90, 180, 270, clockwise) the page was turned to read upright.
        skew: degrees of small skew that were corrected (counter-clockwise positive).
        regions: in reading order (`docvlm.converters.reading_order`).
        problems: page-level problems (e.g. the layout output's own parse problems).
        error: why the page could not be converted (then it has no regions).
    """

    input: str
    page: int | None
    width: float
    height: float
    unit: str = "px"
    rotation: int = 0
    skew: float = 0.0
    regions: list[RegionResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def to_units(self, box: Box) -> Box:
        """A fractional box in the page's own coordinates (top-left origin)."""
        x0, y0, x1, y1 = box
        return x0 * self.width, y0 * self.height, x1 * self.width, y1 * self.height
