"""A page as a person checks it: each region's box, label and reading-order number drawn on the page image."""

from __future__ import annotations

from docvlm.converters.layout import Region, draw_regions
from docvlm.pipeline.results import PageResult


def draw_page(image, page: PageResult):
    """A copy of the upright page `image` (any resolution: boxes are fractions) with each region's box and
    `n label` drawn, `n` its place in reading order from 1, a colour per label (`layout.draw_regions`)."""
    return draw_regions(image, [Region(region.label, region.box) for region in page.regions])
