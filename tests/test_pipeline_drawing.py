"""`docvlm.pipeline.drawing.draw_page`: every region's box drawn where it is on the page, at any resolution."""

import numpy as np
from PIL import Image

from docvlm.converters.layout import Region, draw_regions
from docvlm.pipeline.drawing import draw_page
from docvlm.pipeline.results import PageResult, RegionResult
from page_results import composed


def test_each_region_is_framed_on_a_copy_of_the_page():
    synthetic, page = composed(19, min_regions=6)
    drawn = draw_page(synthetic.image, page)
    assert drawn.size == synthetic.image.size and drawn is not synthetic.image
    before, after = np.asarray(synthetic.image.convert("RGB")), np.asarray(drawn)
    for region in page.regions:
        x0, y0, x1, y1 = (round(v) for v in page.to_units(region.box))
        changed = (before != after).any(axis=2)
        assert changed[y0:y1, x0].any() and changed[y0, x0:x1].any() and changed[y0:y1, x1 - 1].any()


def test_boxes_scale_with_the_image_and_are_numbered_in_reading_order():
    page = PageResult("a.png", None, 200, 100, regions=[RegionResult("table", (0.5, 0.5, 1.0, 1.0)),
                                                         RegionResult("text", (0.0, 0.0, 0.25, 0.25))])
    drawn = np.asarray(draw_page(Image.new("RGB", (400, 200), "white"), page))
    ink = (drawn != 255).any(axis=2)
    assert ink[100:200, 200].all() and ink[0:50, 0].all()  # the left edges of both boxes at 2x scale
    assert not ink[60:95, 110:190].any()  # nothing between them
    image = Image.new("RGB", (400, 200), "white")
    numbered = [Region(r.label, r.box) for r in page.regions]
    assert np.array_equal(np.asarray(draw_page(image, page)), np.asarray(draw_regions(image, numbered)))
    assert not np.array_equal(np.asarray(draw_page(image, page)), np.asarray(draw_regions(image, numbered[::-1])))
