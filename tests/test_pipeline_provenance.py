"""Provenance as docling writes it, end to end (`convert --pipeline --regions` -> `<doc>.docling.json`).

docling's standard pipeline (the one with a layout model, which PDFs and images both go through):

- the page size is pypdfium2's `get_width()` / `get_height()` of the page (`DoclingParsePageBackend.get_size`,
  docling/backend/docling_parse_backend.py): points of the crop box as pdfium intersects it with the media box,
  width and height swapped by a `/Rotate` of 90 or 270; for images `_ImagePageBackend.get_size`
  (docling/backend/image_backend.py): pixels, times 72 / dpi where the file states a dpi (since docling#4012);
- the layout model's boxes are those of the page image pdfium renders (the displayed page: `/Rotate` applied,
  the crop box's corner at 0) scaled to that size, top-left origin (`_predictions_to_clusters`,
  docling/models/stages/layout/layout_object_detection_model.py); text boxes come from docling-parse cells,
  which are turned by `/Rotate` and moved to the crop box's corner (`pdf_resource<PAGE_DIMENSION>::rotate` and
  `pdf_sanitator<PAGE_DIMENSION>::sanitize`, docling-parse src/v2) before docling turns them top-left;
- every item's `prov.bbox` is `cluster.bbox.to_bottom_left_origin(page height)` (`ReadingOrderModel`,
  docling/models/stages/reading_order/readingorder_model.py), images included: `coord_origin` BOTTOMLEFT.

The expected numbers here come from the PDF's own geometry (pdfium's char boxes, media and crop boxes and
`/Rotate`, turned by hand into the displayed page), not from the pipeline's code.
"""

import ctypes
import json
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as raw
import pytest
from docling_core.types.doc import CoordOrigin, DoclingDocument
from PIL import Image

from docvlm.convert import main
from docvlm.pages import render_pdf_page
from pipeline_helpers import composed_page

FAST = ["--max-new-tokens", "3", "--num-workers", "0", "--export-workers", "1"]
TEXT = "Provenance"
PAD = 3.0  # points around the text's char boxes: the region a layout model would draw


def pdf_with_text(path: Path, media, crop, rotate: int, baseline) -> Path:
    """A one-page PDF: `media` and `crop` boxes (l, b, r, t; crop None for none), `/Rotate`, and `TEXT` in
    Helvetica 12 with its baseline starting at `baseline` (PDF user space)."""
    document = pdfium.PdfDocument.new()
    page = document.new_page(media[2] - media[0], media[3] - media[1])
    page.set_mediabox(*media)
    obj = raw.FPDFPageObj_NewTextObj(document.raw, b"Helvetica", ctypes.c_float(12))
    buffer = ctypes.create_string_buffer((TEXT + "\0").encode("utf-16-le"))
    raw.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(raw.FPDF_WCHAR)))
    raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, ctypes.c_double(baseline[0]), ctypes.c_double(baseline[1]))
    raw.FPDFPage_InsertObject(page.raw, obj)
    raw.FPDFPage_GenerateContent(page.raw)
    if crop is not None:
        page.set_cropbox(*crop)
    if rotate:
        page.set_rotation(rotate)
    document.save(str(path))
    document.close()
    return path


def geometry(path: Path):
    """(the text's box in user space l, b, r, t, grown by PAD; the visible area; /Rotate), read by pdfium."""
    document = pdfium.PdfDocument(str(path))
    try:
        page = document[0]
        textpage = page.get_textpage()
        boxes = [textpage.get_charbox(i) for i in range(textpage.count_chars())]
        text = (min(b[0] for b in boxes) - PAD, min(b[1] for b in boxes) - PAD,
                max(b[2] for b in boxes) + PAD, max(b[3] for b in boxes) + PAD)
        media, crop = page.get_mediabox(), page.get_cropbox()  # the crop box is the media box when absent
        visible = (max(media[0], crop[0]), max(media[1], crop[1]), min(media[2], crop[2]), min(media[3], crop[3]))
        return text, visible, page.get_rotation()
    finally:
        document.close()


def displayed(box, visible, rotate: int):
    """A user-space box (l, b, r, t) on the displayed page: (x0, y0, x1, y1) in points from its top-left
    corner, and the displayed page's (width, height). `/Rotate` turns the page clockwise for display."""
    left, bottom, right, top = box
    cx0, cy0, cx1, cy1 = visible
    width, height = cx1 - cx0, cy1 - cy0
    turned = {0: (left - cx0, cy1 - top, right - cx0, cy1 - bottom),
              90: (bottom - cy0, left - cx0, top - cy0, right - cx0),  # the left edge on top, the bottom on the left
              180: (cx1 - right, bottom - cy0, cx1 - left, top - cy0),
              270: (cy1 - top, cx1 - right, cy1 - bottom, cx1 - left)}[rotate]  # the right edge on top
    return turned, ((width, height) if rotate in (0, 180) else (height, width))


def convert(tmp_path: Path, rows: list[dict]) -> Path:
    """`convert --pipeline --regions` of `tmp_path / "in"` with a text route; the output folder."""
    (tmp_path / "p.yaml").write_text("routes:\n  text: {model: tiny, task: text}\n", encoding="utf-8")
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--pipeline", str(tmp_path / "p.yaml"), "--regions", str(tmp_path / "r.jsonl"),
                 str(tmp_path / "in"), "--out", str(out), *FAST]) == 0
    return out


def ltrb(box) -> tuple[float, float, float, float]:
    """A box's fields as stored (`as_tuple` gives l, b, r, t for a bottom-left origin)."""
    return box.l, box.t, box.r, box.b


CASES = {  # media box, crop box, /Rotate
    "plain": ((0, 0, 300, 400), None, 0),
    "media box off the origin": ((50, 100, 350, 500), None, 0),
    **{f"crop box, /Rotate {r}": ((50, 100, 450, 700), (100, 150, 400, 600), r) for r in (0, 90, 180, 270)},
    "crop box past the media box, /Rotate 90": ((-20, -30, 280, 370), (0, 0, 300, 400), 90),
}


@pytest.mark.parametrize("case", CASES)
def test_a_pdf_item_has_the_page_size_and_box_docling_writes(tmp_path, case):
    media, crop, rotate = CASES[case]
    area = crop or media
    (tmp_path / "in").mkdir()
    pdf = pdf_with_text(tmp_path / "in" / "doc.pdf", media, crop, rotate,
                        (max(area[0], media[0]) + 40, min(area[3], media[3]) - 80))
    text, visible, found_rotate = geometry(pdf)
    assert found_rotate == rotate
    (x0, y0, x1, y1), (width, height) = displayed(text, visible, rotate)
    bbox = [x0 / width, y0 / height, x1 / width, y1 / height]
    out = convert(tmp_path, [{"input": str(pdf), "page": 1, "regions": [{"label": "text", "bbox": bbox}]}])

    doc = DoclingDocument.load_from_json(out / "doc.docling.json")
    assert (doc.pages[1].size.width, doc.pages[1].size.height) == pytest.approx((width, height))
    (item,) = doc.texts
    assert item.text == TEXT  # the box is where the displayed page shows the text: the text layer has it there
    (prov,) = item.prov
    assert prov.page_no == 1 and prov.bbox.coord_origin == CoordOrigin.BOTTOMLEFT
    assert ltrb(prov.bbox) == pytest.approx((x0, height - y0, x1, height - y1), abs=1e-6)
    assert prov.bbox.to_top_left_origin(doc.pages[1].size.height).as_tuple() == pytest.approx((x0, y0, x1, y1),
                                                                                             abs=1e-6)


@pytest.mark.parametrize("rotate", [0, 90, 270])
def test_the_layout_model_sees_the_displayed_page_so_its_fractions_are_of_doclings_page(tmp_path, rotate):
    """The page image a layout model reads shows the text inside its docling box (the same fractions)."""
    pdf = pdf_with_text(tmp_path / "doc.pdf", (50, 100, 450, 700), (100, 150, 400, 600), rotate, (140, 520))
    text, visible, _ = geometry(pdf)
    (x0, y0, x1, y1), (width, height) = displayed(text, visible, rotate)
    image = render_pdf_page(pdf, 1, 144)
    assert image.size == (round(width * 2), round(height * 2))
    ys, xs = np.nonzero(np.asarray(image.convert("L")) < 128)  # the text's ink
    assert len(xs) > 20
    inked = (xs.min() / image.width, ys.min() / image.height, (xs.max() + 1) / image.width,
             (ys.max() + 1) / image.height)
    assert x0 / width <= inked[0] < inked[2] <= x1 / width and y0 / height <= inked[1] < inked[3] <= y1 / height


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_a_region_of_a_turned_cropped_page_is_rendered_from_the_same_place(tmp_path, rotate):
    """A routed region's own rendering (`PdfPages.render`) shows the text its docling box holds, whole."""
    from docvlm.pipeline.crops import PdfPages

    pdf = pdf_with_text(tmp_path / "doc.pdf", (50, 100, 450, 700), (100, 150, 400, 600), rotate, (140, 520))
    text, visible, _ = geometry(pdf)
    (x0, y0, x1, y1), (width, height) = displayed(text, visible, rotate)
    pages = PdfPages()
    try:
        crop = pages.render(pdf, 1, (x0 / width, y0 / height, x1 / width, y1 / height), 448, 72)
    finally:
        pages.close()
    ys, xs = np.nonzero(np.asarray(crop.convert("L")) < 128)
    assert len(xs) > 20  # the text, not another part of the page
    along = (xs.max() - xs.min()) / crop.width if rotate in (0, 180) else (ys.max() - ys.min()) / crop.height
    assert along > 0.8  # the whole word, as long as the box (less the padding)
    assert 0 < xs.min() and xs.max() < crop.width - 1 and 0 < ys.min() and ys.max() < crop.height - 1  # not cut

def test_an_image_item_is_in_pixels_from_the_bottom_left_as_docling_writes_it(tmp_path):
    """docling reads an image through the same pipeline as a PDF page: pixels (no dpi stated), BOTTOMLEFT."""
    image, regions = composed_page(7, kinds=("text", "title"))
    (tmp_path / "in").mkdir()
    image.save(tmp_path / "in" / "scan.png")
    out = convert(tmp_path, [{"input": str(tmp_path / "in" / "scan.png"), "page": None,
                              "regions": [{"label": r.label, "bbox": list(r.box)} for r in regions]}])
    doc = DoclingDocument.load_from_json(out / "scan.docling.json")
    w, h = image.size
    assert (doc.pages[1].size.width, doc.pages[1].size.height) == (w, h)
    found = [item for item, _ in doc.iterate_items(with_groups=False)]
    assert len(found) == len(regions) > 1
    for item, region in zip(found, regions):  # composed in reading order
        x0, y0, x1, y1 = region.box
        assert item.prov[0].bbox.to_top_left_origin(h).as_tuple() == pytest.approx((x0 * w, y0 * h, x1 * w, y1 * h))
    for item in found:
        box = item.prov[0].bbox
        assert box.coord_origin == CoordOrigin.BOTTOMLEFT and box.t > box.b


def test_an_image_that_states_its_dpi_is_still_in_pixels(tmp_path):
    """Pixels, as the issue asks (and docling before #4012); docling now divides by the dpi: fractions agree."""
    (tmp_path / "in").mkdir()
    Image.new("RGB", (600, 300), "white").save(tmp_path / "in" / "scan.png", dpi=(300, 300))
    out = convert(tmp_path, [{"input": str(tmp_path / "in" / "scan.png"), "page": None,
                              "regions": [{"label": "text", "bbox": [0.5, 0.5, 1, 1]}]}])
    doc = DoclingDocument.load_from_json(out / "scan.docling.json")
    assert (doc.pages[1].size.width, doc.pages[1].size.height) == (600, 300)
    assert ltrb(doc.texts[0].prov[0].bbox) == pytest.approx((300, 150, 600, 0))


def test_a_page_turned_upright_is_the_upright_page_in_the_document(monkeypatch):
    """docling turns no page; the pipeline turns scans upright, and the document holds the upright page: its size
    and boxes, the same document as the upright scan's (the manifest row says how it was turned)."""
    import docvlm
    from docvlm.inference import Model
    from docvlm.pipeline.document import build_document
    from docvlm.pipeline.spec import spec_from_dict
    from docvlm.tasks.base import Parsed

    image, regions = composed_page(5)  # enough lines of text to be turned
    real = Model.__call__

    def layout(self, images, **options):  # the true regions, for the upright page's pixels only
        if self.task.name != "layout":
            return real(self, images, **options)
        return [Parsed("", list(regions) if np.array_equal(np.asarray(i), np.asarray(image)) else [])
                for i in images]

    monkeypatch.setattr(Model, "__call__", layout)
    spec = spec_from_dict({"layout": "tiny", "routes": {"text": {"model": "tiny", "task": "text"}}}, "p.yaml")
    upright, sideways = docvlm.load_pipeline(spec, max_new_tokens=3)([image, image.rotate(90, expand=True)])
    assert (sideways.rotation, sideways.width, sideways.height) == (90, *image.size) and upright.regions
    first, second = build_document("scan", [upright]), build_document("scan", [sideways])
    assert (second.pages[1].size.width, second.pages[1].size.height) == image.size
    assert second.export_to_dict() == first.export_to_dict()
