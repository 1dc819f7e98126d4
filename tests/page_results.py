"""`PageResult`s of composed synthetic pages, as the page pipeline would make them with perfect models: each
region's true content parsed by its route's task (tests of the documents, drawings and reviews built from them)."""

from __future__ import annotations

import random

import docvlm.tasks
from docvlm.converters.page_synth import KINDS, SyntheticPage, random_page
from docvlm.pipeline.results import PageResult, RegionResult

ROUTES = {"table": "tables", "molecule": "molecules", "music": "music", "text": "text", "title": "text",
          "section-header": "text", "caption": "text", "page-header": "text", "page-footer": "text"}


def composed(seed: int, kinds: tuple[str, ...] = KINDS, page: int | None = None, unit: str = "px",
             size: tuple[float, float] | None = None, min_regions: int = 1) -> tuple[SyntheticPage, PageResult]:
    """A synthetic page and its `PageResult`: every region routed (`ROUTES`), read exactly, scored 0.5 to 1.
    `size` (with `unit`) gives the page another size than its image's pixels (a PDF page's points)."""
    rng = random.Random(seed)
    synthetic = random_page(rng, kinds, min_regions=min_regions)
    width, height = synthetic.size
    regions = []
    for region in synthetic.regions:
        task = ROUTES[region.label]
        parsed = docvlm.tasks.get(task).parse(region.content)
        x0, y0, x1, y1 = region.box
        regions.append(RegionResult(region.label, (x0 / width, y0 / height, x1 / width, y1 / height),
                                    round(rng.uniform(0.5, 1.0), 3), task, region.content, parsed.value, "model",
                                    parsed.problems))
    width, height = size or (width, height)
    return synthetic, PageResult("page.pdf" if page else "page.png", page, width, height, unit, regions=regions)
