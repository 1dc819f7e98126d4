"""Synthetic tables: random structures drawn with Pillow (no browser), with their cell boxes.

Structures have header rows, row and column spans, empty cells, numbers, words and inline bold,
italic and superscript runs. Each cell's `box` is the pixel box of its drawn content, as PubTabNet's
boxes are, so the target can carry `coords`.
"""

from __future__ import annotations

import html as htmlmod
import random
import re

from PIL import Image, ImageDraw

from docvlm.converters.fonts import font, font_files
from docvlm.converters.tables import Cell, Table

_WORDS = "total mean age dose group control patients rate value ratio score week year level index".split()


def random_table(rng: random.Random, max_rows: int = 8, max_cols: int = 5) -> Table:
    """A random fully covered grid with header rows, spans, empty cells and inline markup."""
    n_rows, n_cols = rng.randint(2, max_rows), rng.randint(1, max_cols)
    header_rows = rng.choice([0, 1, 1, 2]) if n_rows > 2 else 0
    taken: set[tuple[int, int]] = set()
    cells = []
    for r in range(n_rows):
        for c in range(n_cols):
            if (r, c) in taken:
                continue
            colspan = rowspan = 1
            if rng.random() < 0.15:
                colspan = rng.randint(1, n_cols - c)
                while any((r, c + j) in taken for j in range(colspan)):
                    colspan -= 1
            if rng.random() < 0.1:  # spans stay inside their section (header rows or body)
                rowspan = rng.randint(1, (header_rows if r < header_rows else n_rows) - r)
            while any((r + i, c + j) in taken for i in range(rowspan) for j in range(colspan)):
                rowspan -= 1
            taken.update((r + i, c + j) for i in range(rowspan) for j in range(colspan))
            header = r < header_rows
            cells.append(Cell(r, c, rowspan, colspan, _random_content(rng, header), header))
    return Table(n_rows, n_cols, cells)


def _random_content(rng: random.Random, header: bool) -> str:
    kind = rng.random()
    if kind < 0.12:
        return ""
    if kind < 0.5 and not header:
        text = htmlmod.escape(f"{rng.uniform(0, 1000):.{rng.randint(0, 2)}f}", quote=False)
    else:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        text = text.capitalize() if rng.random() < 0.5 else text
    style = rng.random()
    if header or style < 0.08:
        text = f"<b>{text}</b>"
    elif style < 0.14:
        text = f"<i>{text}</i>"
    if rng.random() < 0.06:
        text += f"<sup>{rng.choice('abc*')}</sup>"
    return text


def _runs(inner: str) -> list[tuple[str, str]]:
    """Inner HTML of a synthetic cell -> (style, text) runs; style is '', 'b', 'i' or 'sup'."""
    runs = []
    for match in re.finditer(r"<(b|i|sup)>(.*?)</\1>|([^<]+)", inner):
        style = match.group(1) or ""
        runs.append((style, htmlmod.unescape(match.group(2) if style else match.group(3))))
    return runs


def render_table(table: Table, rng: random.Random, max_size: int = 896) -> Image.Image:
    """Draw the table on white and set each non-empty cell's `box` to its content's pixel box."""
    n_fonts = max(len(font_files()), 1)
    size = rng.randint(12, 18)
    face_index = rng.randrange(n_fonts)
    regular = font(face_index, size)
    small = font(face_index, max(8, size * 2 // 3))
    pad = rng.randint(4, 10)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def measure(cell: Cell) -> tuple[int, int]:
        width = sum(probe.textlength(text, font=small if style == "sup" else regular)
                    for style, text in _runs(cell.html))
        return int(width) + (1 if "<b>" in cell.html else 0), size + 2

    widths, heights = [20] * table.n_cols, [size + 4] * table.n_rows
    for cell in table.cells:
        w, h = measure(cell)
        if cell.colspan == 1:
            widths[cell.col] = max(widths[cell.col], w + 2 * pad)
        if cell.rowspan == 1:
            heights[cell.row] = max(heights[cell.row], h + pad)
    for cell in table.cells:  # spanning cells widen their last column if needed
        w, _ = measure(cell)
        covered = sum(widths[cell.col : cell.col + cell.colspan])
        if w + 2 * pad > covered:
            widths[cell.col + cell.colspan - 1] += w + 2 * pad - covered
    xs = [pad]
    for w in widths:
        xs.append(xs[-1] + w)
    ys = [pad]
    for h in heights:
        ys.append(ys[-1] + h)
    image = Image.new("RGB", (xs[-1] + pad, ys[-1] + pad), "white")
    draw = ImageDraw.Draw(image)
    ink = (rng.randint(0, 60),) * 3
    draw.line([(xs[0], ys[0]), (xs[-1], ys[0])], fill=ink, width=1)
    draw.line([(xs[0], ys[-1]), (xs[-1], ys[-1])], fill=ink, width=1)
    if table.header_rows:
        draw.line([(xs[0], ys[table.header_rows]), (xs[-1], ys[table.header_rows])], fill=ink, width=1)
    for cell in table.cells:
        if not cell.html:
            continue
        w, h = measure(cell)
        left = xs[cell.col] + pad if rng.random() < 0.6 else (xs[cell.col] + xs[cell.col + cell.colspan] - w) // 2
        top = (ys[cell.row] + ys[cell.row + cell.rowspan] - h) // 2
        x = left
        for style, text in _runs(cell.html):
            face = small if style == "sup" else regular
            y = top - size // 3 if style == "sup" else top
            draw.text((x, y), text, fill=ink, font=face)
            if style == "b":
                draw.text((x + 1, y), text, fill=ink, font=face)
            x += probe.textlength(text, font=face)
        raised = size // 3 if "<sup>" in cell.html else 0
        cell.box = (float(left), float(top - raised), float(left + w), float(top + h))
    scale = min(1.0, max_size / max(image.size))
    if scale < 1.0:
        size_ = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size_, Image.Resampling.LANCZOS)
        for cell in table.cells:
            if cell.box is not None:
                cell.box = tuple(v * scale for v in cell.box)  # type: ignore[assignment]
    return image
