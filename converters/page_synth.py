"""Synthetic document pages: the other domains' synthetic renderings composed onto pages, with their boxes.

The one place that knows how a page is laid out; the layout task trains on these pages and the page pipeline
is tested on them. A page has margins, one or two columns, 1 to 8 regions (tables, molecules, piano systems,
paragraphs, titles, section headers, captions, a running header and footer, as `kinds` allows), each drawn
from its domain's own renderer, cut to its ink and scaled into its column, then a little scan noise.

Every region's box is tight around what was drawn there (on the page before noise: the ink, any channel
below `INK`, touches each of its four edges, and nothing is drawn outside the boxes) and no two boxes
overlap; each region keeps its content (table HTML, SMILES, **kern, text). Regions are listed in reading
order (`reading_order`), which is also the order they were placed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from docvlm.converters.fonts import font, font_files
from docvlm.converters.reading_order import reading_order

INK = 245  # a pixel is ink when any channel is below this; lighter pixels are made white
KINDS = ("table", "molecule", "music", "text", "title", "section-header", "caption", "page-header", "page-footer")
BLOCKS = ("table", "molecule", "music")  # drawn by another domain's renderer
_TEXT_SIZE = {"title": 0.034, "section-header": 0.024, "text": 0.018, "caption": 0.015, "page-header": 0.013,
              "page-footer": 0.013}  # font size as a share of the page width


@dataclass
class PageRegion:
    """One region of a page: its label, its box in pixels (x0, y0, x1, y1; x1 and y1 exclusive) and its content."""

    label: str
    box: tuple[int, int, int, int]
    content: str


@dataclass
class SyntheticPage:
    image: Image.Image
    regions: list[PageRegion] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def random_page(rng: random.Random, kinds: tuple[str, ...] = KINDS, width: int = 896, min_regions: int = 1,
                max_regions: int = 8, noise: bool = True, grid: int = 0, bold: int = 0) -> SyntheticPage:
    """A page `width` pixels wide (A4's aspect), deterministic in `rng`. `noise=False` gives the same page
    before scan noise (the noise is drawn last). `grid` > 0 lays blocks (tables, molecules, music; no text)
    out on a `grid` x `grid` lattice, each stretched to fill whole cells (edges on cell lines, to the pixel
    that trimming takes): a tiny model at `grid` x `grid` image tokens learns a few positions, not 1024.
    `bold` > 0 thickens the blocks' strokes by that many pixels: thin lines on a page shrunk to a tiny model's
    224 px are nearly white, and its random vision tower did not tell such pages apart."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"page kinds must be some of {KINDS}, got {sorted(unknown) or 'none'}")
    height = round(width * 297 / 210)
    if grid:
        if width % grid or set(kinds) - set(BLOCKS):
            raise ValueError(f"grid pages hold only {BLOCKS}, on a width that is a multiple of the grid ({grid})")
        height = grid * round(height / grid)
        page = Image.new("RGB", (width, height), "white")
        wanted = rng.randint(min_regions, max(min_regions, max_regions))
        regions = _grid_blocks(page, rng, kinds, grid, wanted, rng.choice((1, 2)), bold)
        return SyntheticPage(scan_noise(page, rng) if noise else page, regions)
    page = Image.new("RGB", (width, height), "white")
    margin = round(width * rng.uniform(0.05, 0.09))
    columns = rng.choice((1, 2))
    gutter = round(width * rng.uniform(0.03, 0.05))
    wanted = rng.randint(min_regions, max(min_regions, max_regions))
    regions: list[PageRegion] = []
    body = [k for k in kinds if k not in ("title", "page-header", "page-footer", "caption")] or list(kinds)
    top, bottom = margin, height - margin
    if "page-header" in kinds and wanted > len(regions) + 1 and rng.random() < 0.5:
        regions.append(_place_text(page, rng, "page-header", margin, margin // 4, width - 2 * margin, margin // 2))
    if "page-footer" in kinds and wanted > len(regions) + 1 and rng.random() < 0.5:
        footer = _place_text(page, rng, "page-footer", margin, height - margin + margin // 4, width - 2 * margin,
                             margin // 2)
    else:
        footer = None
    if "title" in kinds and wanted > len(regions) + (footer is not None) and rng.random() < 0.6:
        title = _place_text(page, rng, "title", margin, top, width - 2 * margin, height // 8)
        regions.append(title)
        top = title.box[3] + round(height * rng.uniform(0.02, 0.04))
    column_width = (width - 2 * margin - (columns - 1) * gutter) // columns
    left = wanted - len(regions) - (footer is not None)  # regions the columns may still hold
    for column in range(columns):
        x, y = margin + column * (column_width + gutter), top
        share = left // (columns - column)
        while share > 0 and y < bottom - height // 20:
            captioned = "caption" in kinds and share > 1
            placed = _place(page, rng, rng.choice(body), x, y, column_width, bottom - y, captioned, bold)
            if placed is None:
                break
            regions += placed
            share, left = share - len(placed), left - len(placed)
            y = placed[-1].box[3] + round(height * rng.uniform(0.015, 0.04))
    if footer is not None:
        regions.append(footer)
    if not regions:  # one paragraph at least
        regions.append(_place_text(page, rng, "text", margin, top, column_width, bottom - top))
    order = reading_order([r.box for r in regions])
    regions = [regions[i] for i in order]
    if noise:
        page = scan_noise(page, rng)
    return SyntheticPage(page, regions)


def _grid_blocks(page: Image.Image, rng: random.Random, kinds: tuple[str, ...], grid: int, wanted: int,
                 columns: int, bold: int) -> list[PageRegion]:
    """Blocks on whole cells of the lattice: a cell of margin around the page, a cell between columns and
    between blocks; columns filled top to bottom (reading order)."""
    cell_w, cell_h = page.width // grid, page.height // grid
    column_cells = (grid - 2 - (columns - 1)) // columns
    regions: list[PageRegion] = []
    for column in range(columns):
        share, row = (wanted - len(regions)) // (columns - column), 1
        while share > 0 and row < grid - 1:
            kind = rng.choice(kinds)
            crop, content = _render_block(kind, rng)
            crop = trimmed(crop)
            cells_w = rng.randint((column_cells + 1) // 2, column_cells)
            cells_h = max(1, min(grid - 1 - row, round(cells_w * cell_w * crop.height / crop.width / cell_h)))
            x = (1 + column * (column_cells + 1) + rng.randint(0, column_cells - cells_w)) * cell_w
            crop = trimmed(_bold(crop.resize((cells_w * cell_w, cells_h * cell_h), Image.Resampling.LANCZOS), bold))
            page.paste(crop, (x, row * cell_h))
            regions.append(PageRegion(kind, (x, row * cell_h, x + crop.width, row * cell_h + crop.height), content))
            share, row = share - 1, row + cells_h + 1
    return regions


def _place(page: Image.Image, rng: random.Random, kind: str, x: int, y: int, width: int, room: int,
           captioned: bool, bold: int = 0) -> list[PageRegion] | None:
    """Draw one `kind` at (x, y) within `width` x `room`; a block may get a caption below when `captioned`."""
    if kind not in BLOCKS:
        return [_place_text(page, rng, kind, x, y, width, room)] if room > 20 else None
    crop, content = _render_block(kind, rng)
    crop = trimmed(crop)
    scale = min(width * rng.uniform(0.5, 1.0) / crop.width, room * 0.9 / crop.height, 3.0)
    if crop.height * scale < 24:
        return None
    crop = trimmed(_bold(crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                                     Image.Resampling.LANCZOS), bold))
    left = x + (width - crop.width) // 2 if rng.random() < 0.5 else x
    page.paste(crop, (left, y))
    placed = [PageRegion(kind, (left, y, left + crop.width, y + crop.height), content)]
    below = y + crop.height + round(page.height * 0.01)
    if captioned and rng.random() < 0.4 and room - (below - y) > 30:
        placed.append(_place_text(page, rng, "caption", x, below, width, room - (below - y)))
    return placed


def _render_block(kind: str, rng: random.Random) -> tuple[Image.Image, str]:
    """A table, molecule or piano excerpt drawn by its own domain's renderer, and its content."""
    if kind == "table":
        from docvlm.converters.table_render import random_table, render_table
        from docvlm.converters.tables import to_html

        table = random_table(rng, 6, 4)
        return render_table(table, rng), to_html(table)
    if kind == "molecule":
        from docvlm.converters.molecule_render import random_smiles, render

        smiles = random_smiles(rng)
        return render(smiles, rng, 448), smiles
    from docvlm.converters.kern_render import render
    from docvlm.converters.kern_synth import random_kern

    kern = random_kern(rng)
    return render(kern, rng.randint(32, 48)), kern


def _place_text(page: Image.Image, rng: random.Random, kind: str, x: int, y: int, width: int, room: int) -> PageRegion:
    """Lines of words of the `kind`'s size, wrapped to `width`, as many as fit in `room` (one at least)."""
    from docvlm.converters.text import random_line

    size = max(8, round(page.width * _TEXT_SIZE[kind] * rng.uniform(0.85, 1.15)))
    face = font(rng.randrange(max(len(font_files()), 1)), size)
    words = " ".join(random_line(rng, 8) for _ in range(rng.randint(1, 4) if kind in ("text", "caption") else 1))
    if kind == "caption":
        words = f"{rng.choice(('Table', 'Figure', 'Scheme'))} {rng.randint(1, 12)}. {words}"
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines, line = [], ""
    for word in words.split():
        candidate = f"{line} {word}".strip()
        if line and probe.textlength(candidate, font=face) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    step = round(size * 1.3)
    lines = lines[: max(1, min(len(lines), room // step))] if kind in ("text", "caption") else lines[:1]
    crop = Image.new("RGB", (width, step * len(lines) + size), "white")
    draw = ImageDraw.Draw(crop)
    ink = (rng.randint(0, 60),) * 3
    for i, text in enumerate(lines):
        draw.text((0, i * step), text, fill=ink, font=face)
    crop = trimmed(crop)
    if crop.width > width:  # a single word wider than the column
        crop = crop.crop((0, 0, width, crop.height))
    crop = trimmed(crop)
    page.paste(crop, (x, y))
    return PageRegion(kind, (x, y, x + crop.width, y + crop.height), "\n".join(lines))


def _bold(image: Image.Image, pixels: int) -> Image.Image:
    """Strokes thickened by `pixels` on each side (a minimum filter: dark spreads over light)."""
    return image.filter(ImageFilter.MinFilter(2 * pixels + 1)) if pixels else image


def trimmed(image: Image.Image) -> Image.Image:
    """`image` with pixels lighter than `INK` made white, cut to its ink (a 1 x 1 ink dot when blank)."""
    pixels = np.asarray(image.convert("RGB")).copy()
    light = (pixels >= INK).all(axis=2)
    pixels[light] = 255
    if light.all():
        pixels[0, 0] = 0
        light[0, 0] = False
    ys, xs = np.nonzero(~light)
    return Image.fromarray(pixels[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1])


def scan_noise(page: Image.Image, rng: random.Random) -> Image.Image:
    """A little of what a scanner adds: a slight blur, sensor noise and a paper tint."""
    if rng.random() < 0.4:
        page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 6), (page.height, page.width, 1))
    tint = np.array([rng.uniform(-8, 0) for _ in range(3)], dtype=np.float32)
    pixels = np.asarray(page, dtype=np.float32) + noise + tint
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
