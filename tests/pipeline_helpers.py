"""Builders for the page pipeline's tests: composed pages with their true regions, PDFs made of them, and a PDF
with a text layer written with pdfium's own text API."""

import ctypes
import random
from pathlib import Path

from docvlm.converters.layout import Region
from docvlm.converters.page_synth import random_page


def composed_page(seed: int, kinds=("table", "text", "title"), width: int = 448, max_regions: int = 4):
    """(page image, its true regions as fractions) of a composed page."""
    page = random_page(random.Random(seed), kinds, width, 2, max_regions, noise=False)
    w, h = page.size
    return page.image, [Region(r.label, (r.box[0] / w, r.box[1] / h, r.box[2] / w, r.box[3] / h), content=r.content)
                        for r in page.regions]


def image_pdf(path: Path, images) -> Path:
    """A PDF with one page per image (PIL's PDF writer, 72 dpi: a pixel per point)."""
    images[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=images[1:])
    return path


def text_pdf(path: Path, pages, rotate: int = 0) -> Path:
    """A PDF with a text layer: `pages` are (width, height, [(text, x, y from the top, size)]) in points."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    document = pdfium.PdfDocument.new()
    for width, height, items in pages:
        page = document.new_page(width, height)
        for text, x, y, size in items:
            obj = raw.FPDFPageObj_NewTextObj(document.raw, b"Helvetica", ctypes.c_float(size))
            buffer = ctypes.create_string_buffer((text + "\0").encode("utf-16-le"))
            raw.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(raw.FPDF_WCHAR)))
            raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, ctypes.c_double(x), ctypes.c_double(height - y - size))
            raw.FPDFPage_InsertObject(page.raw, obj)
        raw.FPDFPage_GenerateContent(page.raw)
        if rotate:
            page.set_rotation(rotate)
    document.save(str(path))
    document.close()
    return path
