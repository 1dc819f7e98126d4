"""Re-make the README's converted page: `docs/pipeline-example.png` (the page drawn by the pipeline: boxes, labels,
reading order) and `docs/pipeline-example.md` (the Markdown that `docvlm convert --pipeline` wrote).

    python docs/make_pipeline_example.py

A one-page PDF is composed here from known contents: a running header, a title, two columns holding paragraphs,
a section header, a table and a molecule drawing (pictures placed in the PDF, drawn by the tables' and
molecules' own renderers), each caption below its picture; the text is real text in the PDF's text layer
(pdfium's Helvetica). Its true regions are written as a `--regions` file, and the real command runs on it
with every model the tiny random one:

    docvlm convert --pipeline pipeline.yaml example.pdf --regions regions.jsonl --out out --max-new-tokens 24

So the text regions' Markdown is the PDF's own text (no model reads a text region of a PDF with a text layer),
and the table and the molecule are what a random model makes of them: nonsense, kept as such.
"""

from __future__ import annotations

import ctypes
import json
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

DOCS = Path(__file__).resolve().parent
WIDTH, HEIGHT = 595.0, 470.0  # points: A4's width, the height of what is on it
MARGIN, GUTTER = 50.0, 25.0
COLUMN = (WIDTH - 2 * MARGIN - GUTTER) / 2
AIR = 3.0  # points around a text region's glyph bounds (pdfium's font may be a substitute, a little wider)
PNG_WIDTH = 700

PIPELINE = """\
routes:
  table: {model: tiny, task: tables}
  molecule: {model: tiny, task: molecules}
  text: {model: tiny, task: text}
"""
TABLE = ("<table><thead><tr><td>Run</td><td>Yield (%)</td><td>m.p. (C)</td></tr></thead><tbody>"
         "<tr><td>1</td><td>78</td><td>134</td></tr><tr><td>2</td><td>81</td><td>135</td></tr>"
         "<tr><td>3</td><td>84</td><td>135</td></tr></tbody></table>")
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
LEFT = [("text", 10, "Salicylic acid was acetylated with acetic anhydride in the presence of a few drops of "
                     "sulfuric acid. The crude product was recrystallised from warm ethanol and dried."),
        ("table", 0, TABLE),
        ("caption", 9, "Table 1. Yield and melting point of three runs.")]
RIGHT = [("section-header", 13, "2 Product"),
         ("text", 10, "The product melts sharply near 135 C, as reported for acetylsalicylic acid."),
         ("molecule", 0, ASPIRIN),
         ("caption", 9, "Figure 1. Acetylsalicylic acid (aspirin).")]


class Page:
    """A PDF page being composed, and the true regions of what was placed (fractions, top-left origin)."""

    def __init__(self):
        import pypdfium2 as pdfium

        self.pdf = pdfium.PdfDocument.new()
        self.page = self.pdf.new_page(WIDTH, HEIGHT)
        self.regions: list[dict] = []

    def text(self, label: str, x: float, top: float, size: float, text: str, width: float) -> float:
        """Lines of `text` wrapped to `width` points, from `top`; returns the bottom of the region."""
        import pypdfium2.raw as raw

        chars = int(width / (0.5 * size))  # Helvetica averages about half an em a character
        bounds = []
        for i, line in enumerate(textwrap.wrap(text, chars)):
            obj = raw.FPDFPageObj_NewTextObj(self.pdf.raw, b"Helvetica", ctypes.c_float(size))
            buffer = ctypes.create_string_buffer((line + "\0").encode("utf-16-le"))
            raw.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(raw.FPDF_WCHAR)))
            baseline = HEIGHT - (top + size * (1.25 * i + 1))
            raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, ctypes.c_double(x), ctypes.c_double(baseline))
            raw.FPDFPage_InsertObject(self.page.raw, obj)
            box = [ctypes.c_float() for _ in range(4)]
            raw.FPDFPageObj_GetBounds(obj, *box)
            bounds.append([b.value for b in box])  # left, bottom, right, top
        left, right = min(b[0] for b in bounds) - AIR, max(b[2] for b in bounds) + AIR
        assert right <= x + width + AIR, f"{label}: a line runs out of its column ({right - x:.0f} > {width:.0f} pt)"
        return self._region(label, left, HEIGHT - max(b[3] for b in bounds) - AIR, right,
                            HEIGHT - min(b[1] for b in bounds) + AIR)

    def picture(self, label: str, x: float, top: float, image, width: float) -> float:
        """`image` placed `width` points wide from `top`; returns the bottom of the region."""
        import pypdfium2 as pdfium

        height = width * image.height / image.width
        obj = pdfium.PdfImage.new(self.pdf)
        obj.set_bitmap(pdfium.PdfBitmap.from_pil(image))
        obj.set_matrix(pdfium.PdfMatrix().scale(width, height).translate(x, HEIGHT - top - height))
        self.page.insert_obj(obj)
        return self._region(label, x, top, x + width, top + height)

    def _region(self, label: str, x0: float, y0: float, x1: float, y1: float) -> float:
        self.regions.append({"label": label, "bbox": [round(x0 / WIDTH, 5), round(y0 / HEIGHT, 5),
                                                      round(x1 / WIDTH, 5), round(y1 / HEIGHT, 5)]})
        return y1

    def save(self, path: Path) -> None:
        self.page.gen_content()
        self.pdf.save(str(path))
        self.pdf.close()


def compose(path: Path) -> list[dict]:
    """The example page written to `path`; its true regions."""
    from docvlm.converters.molecule_render import draw
    from docvlm.converters.page_synth import trimmed
    from docvlm.converters.table_render import render_table
    from docvlm.converters.tables import parse_html

    rng = random.Random(0)
    table, problems = parse_html(TABLE)
    assert table is not None and not problems, problems
    from rdkit import Chem

    pictures = {"table": trimmed(render_table(table, rng)),
                "molecule": trimmed(draw(Chem.MolFromSmiles(ASPIRIN), (420, 300), rng))}
    page = Page()
    page.text("page-header", MARGIN, 25, 8, "docvlm example page: composed, then converted with --regions", 300)
    top = page.text("title", MARGIN, 70, 20, "Acetylation of salicylic acid", WIDTH - 2 * MARGIN) + 20
    for column, blocks in enumerate((LEFT, RIGHT)):
        x, y = MARGIN + column * (COLUMN + GUTTER), top
        for label, size, content in blocks:
            if label in pictures:
                y = page.picture(label, x, y, pictures[label], COLUMN * (0.9 if label == "table" else 0.7))
            else:
                y = page.text(label, x, y, size, content, COLUMN)
            y += 12
    page.text("page-footer", WIDTH / 2 - 60, HEIGHT - 30, 8, "Laboratory notes, page 1", 120)
    page.save(path)
    return page.regions


def main() -> None:
    import pypdfium2 as pdfium
    from PIL import Image

    from docvlm.pipeline.drawing import draw_page
    from docvlm.pipeline.results import PageResult, RegionResult

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        regions = compose(tmp / "example.pdf")
        (tmp / "regions.jsonl").write_text(json.dumps({"input": "example.pdf", "page": 1, "regions": regions}) + "\n")
        (tmp / "pipeline.yaml").write_text(PIPELINE)
        docvlm = Path(sys.executable).parent / "docvlm"
        done = subprocess.run([str(docvlm), "convert", "--pipeline", "pipeline.yaml", "example.pdf", "--regions",
                               "regions.jsonl", "--out", "out", "--max-new-tokens", "24"],
                              cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"docvlm convert failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads((tmp / "out" / "example" / "p1.page.json").read_text())
        page = PageResult(**{**result, "regions": [RegionResult(**r) for r in result["regions"]]})
        pdf = pdfium.PdfDocument(str(tmp / "example.pdf"))
        image = pdf[0].render(scale=PNG_WIDTH / WIDTH).to_pil().convert("RGB")
        pdf.close()
        image = Image.blend(image, Image.new("RGB", image.size, "white"), 0.5)  # lighter: the labels stand out
        drawn = draw_page(image, page)  # as convert draws p1.png, but at 700 px: its labels stay legible
        drawn.quantize(64, dither=Image.Dither.NONE).save(DOCS / "pipeline-example.png", optimize=True)
        shutil.copyfile(tmp / "out" / "example.md", DOCS / "pipeline-example.md")
        row = json.loads((tmp / "out" / "manifest.jsonl").read_text().splitlines()[0])
        for region in row["regions"]:
            print(f"{region['label']:15s} {region['source'] or '-':11s} {region['text']!r:.40} {region['problems']}")
    size = (DOCS / "pipeline-example.png").stat().st_size
    print(f"wrote {DOCS / 'pipeline-example.png'} ({size / 1000:.0f} kB) and {DOCS / 'pipeline-example.md'}")


if __name__ == "__main__":
    main()
