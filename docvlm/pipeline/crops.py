"""A region's pixels for its route's model, and a PDF region's own text.

The layout model sees the page at its input size (896 px); a route's model reads the region at the page's full
resolution, so a region is cut from the page as loaded, with a small margin: `margin` is a fraction of the
page's width (left and right) and height (top and bottom), 0.005 by default (4 px of an 896 px page), so that
strokes on a box's edge are not cut. A PDF region is rendered again on its own (pypdfium2's `crop`), at the
page's resolution or more: enough that its longer side reaches `size` (the model's input), at most 1200 dpi
and `MAX_PIXELS`, as vector pages have detail to give that a raster of the whole page lost.

A PDF page with a text layer gives a region's text from it (`PdfPages.text`), no model: the box is mapped
from the upright page (after `/Rotate`, inside the crop box, as pdfium displays it) to PDF page space with
pdfium's own `FPDF_DeviceToPage`, so rotated pages and crop boxes hold no arithmetic of ours.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from docvlm.pages import MAX_PIXELS

Box = tuple[float, float, float, float]
DEFAULT_MARGIN = 0.005
MAX_DPI = 1200.0


def with_margin(box: Box, margin: float) -> Box:
    """`box` grown by `margin` (fractions of the page's width and height) on each side, within the page."""
    x0, y0, x1, y1 = box
    return max(0.0, x0 - margin), max(0.0, y0 - margin), min(1.0, x1 + margin), min(1.0, y1 + margin)


def crop_image(image: Image.Image, box: Box) -> Image.Image:
    """The pixels of `box` (fractions) of `image`, one pixel at least; edges rounded to the nearest pixel, so
    a box made from pixel edges crops exactly those pixels."""
    width, height = image.size
    left, top = min(round(box[0] * width), width - 1), min(round(box[1] * height), height - 1)
    right, bottom = max(round(box[2] * width), left + 1), max(round(box[3] * height), top + 1)
    return image.crop((left, top, right, bottom))


class PdfPages:
    """The PDFs of a set of pages, each opened once (pdfium objects are not shared between threads: one owner)."""

    def __init__(self):
        self._documents: dict[str, object] = {}
        self._pages: dict[tuple[str, int], object] = {}
        self._text: dict[tuple[str, int], object] = {}

    def _page(self, path: Path, page: int):
        import pypdfium2 as pdfium

        key = (str(path), page)
        if key not in self._pages:
            if key[0] not in self._documents:
                self._documents[key[0]] = pdfium.PdfDocument(str(path))
            self._pages[key] = self._documents[key[0]][page - 1]
        return self._pages[key]

    def size(self, path: Path, page: int) -> tuple[float, float]:
        """The page's width and height in points as displayed (crop box, `/Rotate` applied)."""
        return self._page(path, page).get_size()

    def render(self, path: Path, page: int, box: Box, size: int, dpi: float) -> Image.Image:
        """The region `box` (fractions of the displayed page) rendered alone, its longer side `size` pixels or
        more (at least `dpi`; at most `MAX_DPI` and `MAX_PIXELS`)."""
        pdf_page = self._page(path, page)
        width, height = pdf_page.get_size()
        x0, y0, x1, y1 = box
        w, h = max((x1 - x0) * width, 1e-3), max((y1 - y0) * height, 1e-3)
        scale = min(max(dpi / 72, size / max(w, h)), MAX_DPI / 72, math.sqrt(MAX_PIXELS / (w * h)))
        crop = (x0 * width, (1 - y1) * height, (1 - x1) * width, y0 * height)  # after rotation, in points
        return pdf_page.render(scale=scale, crop=crop).to_pil().convert("RGB")

    def _textpage(self, path: Path, page: int):
        key = (str(path), page)
        if key not in self._text:
            self._text[key] = self._page(path, page).get_textpage()
        return self._text[key]

    def has_text(self, path: Path, page: int) -> bool:
        """Whether the page has a text layer (born digital: upright as pdfium displays it)."""
        return self._textpage(path, page).count_chars() > 0

    def text(self, path: Path, page: int, box: Box) -> str | None:
        """The text layer's text inside `box`, lines joined by newlines; None when there is none there (a
        scanned page, an image in a born-digital one)."""
        import ctypes

        import pypdfium2.raw as raw

        pdf_page, textpage = self._page(path, page), self._textpage(path, page)
        if textpage.count_chars() == 0:
            return None
        width, height = pdf_page.get_size()
        scale = 100  # device units per point: a hundredth of a point is finer than any glyph
        corners = []
        for fx, fy in ((box[0], box[1]), (box[2], box[3])):
            px, py = ctypes.c_double(), ctypes.c_double()
            raw.FPDF_DeviceToPage(pdf_page.raw, 0, 0, round(width * scale), round(height * scale), 0,
                                  round(fx * width * scale), round(fy * height * scale), px, py)
            corners.append((px.value, py.value))
        (ax, ay), (bx, by) = corners
        found = textpage.get_text_bounded(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))
        lines = [" ".join(line.split()) for line in found.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        text = "\n".join(line for line in lines if line)
        return text or None

    def close(self) -> None:
        for handle in (*self._text.values(), *self._pages.values(), *self._documents.values()):
            handle.close()
        self._text, self._pages, self._documents = {}, {}, {}
