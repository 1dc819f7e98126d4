"""Crops of regions: exact pixels without margin, a margin within the page, a PDF region rendered on its own at
a higher resolution, and the text layer's text of a box on plain, rotated and cropped pages."""

import numpy as np
import pytest
from PIL import Image

from docvlm.pipeline.crops import PdfPages, crop_image, with_margin
from pipeline_helpers import composed_page, image_pdf, text_pdf


def test_a_box_from_pixel_edges_crops_exactly_those_pixels():
    image, regions = composed_page(3)
    w, h = image.size
    for region in regions:
        crop = crop_image(image, region.box)
        box = tuple(round(v * s) for v, s in zip(region.box, (w, h, w, h)))
        assert np.array_equal(np.asarray(crop), np.asarray(image.crop(box)))


def test_a_margin_grows_the_box_within_the_page():
    assert with_margin((0.1, 0.002, 0.5, 0.999), 0.01) == pytest.approx((0.09, 0.0, 0.51, 1.0))
    assert crop_image(Image.new("RGB", (100, 100)), (0.5, 0.5, 0.5, 0.5)).size == (1, 1)  # never empty


def test_a_pdf_region_is_rendered_alone_at_least_at_the_model_size(tmp_path):
    image, regions = composed_page(3)
    pdf = image_pdf(tmp_path / "a.pdf", [image])
    pages = PdfPages()
    try:
        table = next(r for r in regions if r.label == "table")
        rendered = pages.render(pdf, 1, table.box, 896, dpi=72)
        w, h = image.size
        assert max(rendered.size) >= 895  # upscaled for the model, not the 448 px page's few pixels
        expected = image.crop(tuple(round(v * s) for v, s in zip(table.box, (w, h, w, h)))).resize(rendered.size)
        difference = np.abs(np.asarray(rendered, dtype=float) - np.asarray(expected, dtype=float)).mean()
        assert difference < 20  # the same region, not another part of the page
        assert pages.size(pdf, 1) == pytest.approx(image.size)
    finally:
        pages.close()


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_the_text_layer_gives_the_text_inside_a_box_of_the_upright_page(tmp_path, rotate):
    pdf = text_pdf(tmp_path / "t.pdf", [(300, 400, [("Hello top left", 10, 10, 12), ("bottom right", 150, 350, 12)])],
                   rotate=rotate)
    pages = PdfPages()
    try:
        width, height = pages.size(pdf, 1)
        # where the upright (displayed) page shows the top-left line of the unrotated page
        corner = {0: (0, 0, 0.6, 0.1), 90: (0.85, 0, 1, 0.6), 180: (0.4, 0.9, 1, 1), 270: (0, 0.4, 0.15, 1)}[rotate]
        assert (width, height) == ((300, 400) if rotate in (0, 180) else (400, 300))
        assert pages.text(pdf, 1, corner) == "Hello top left"
        assert pages.text(pdf, 1, (0, 0, 1, 1)) == "Hello top left\nbottom right"
    finally:
        pages.close()


def test_a_page_without_a_text_layer_gives_none(tmp_path):
    image, _ = composed_page(3)
    pdf = image_pdf(tmp_path / "a.pdf", [image])
    pages = PdfPages()
    try:
        assert pages.text(pdf, 1, (0, 0, 1, 1)) is None
    finally:
        pages.close()


def test_a_crop_box_is_respected(tmp_path):
    import pypdfium2 as pdfium

    pdf = text_pdf(tmp_path / "t.pdf", [(300, 400, [("Hello top left", 10, 10, 12), ("bottom right", 150, 350, 12)])])
    document = pdfium.PdfDocument(str(pdf))
    document[0].set_cropbox(100, 0, 300, 200)  # the lower right quarter and a bit: "bottom right" only
    document.save(str(tmp_path / "c.pdf"))
    document.close()
    pages = PdfPages()
    try:
        assert pages.size(tmp_path / "c.pdf", 1) == (200, 200)
        assert pages.text(tmp_path / "c.pdf", 1, (0.2, 0.6, 1, 1)) == "bottom right"
        assert pages.text(tmp_path / "c.pdf", 1, (0, 0, 1, 0.5)) is None
    finally:
        pages.close()
