"""A scanned page's orientation (0, 90, 180 or 270 degrees) and small skew, found without a model, and undone.

Classical document image analysis on the page's ink (a binarised gray copy at most `SIDE` pixels long), numpy only:
- **quarter turns**: text lines, staves and table rules make the projection of the ink onto the axis across
  them sharply peaked. The energy of the row profile (the sum of its squared bin counts), best over the angles
  in +-`MAX_SKEW`, is compared with the column profile's: the more peaked axis holds the lines.
- **skew**: the angle that maximises that energy, found coarse to fine (0.5, 0.125, 0.03 degrees), the page
  first cut into blocks (bands parted by empty rows, then columns parted by gutters) projected each on its
  own, so that lines of two columns at different heights cannot line up into a false slant.
- **up or down**: in Latin text ascenders (b d f h k l t, capitals, digits) outnumber descenders (g j p q y), so a
  piece of a text line (a run of inked rows in a narrow vertical strip of the deskewed page) carries more ink
  above its x-height band (its densest rows) than below it. The pieces vote; the majority tells an upright
  page from one upside down, its margin is the confidence.

A page without lines of text (a molecule, a blank page: the best profile barely stands above the others), with
too few pieces of text, or with too close a vote is left as it is: `detect` says rotation 0 and skew 0 with a
confidence below `MIN_CONFIDENCE`, rather than turning it wrongly. Music is read by the same rules (staves
give the lines and the skew; the vote is weaker). Pages in right-to-left or non-Latin scripts are not
considered.

Measured by `bench/bench_orientation.py` (BENCHMARKS.md, "Page orientation"): on 400 scans of text-rich composed
pages (6-8 regions) turned by each quarter and skewed +-(0.5..3) degrees, 392 right (skew error at most 0.12
degrees, 0.03 on average), 8 left as they were, none wrong; pages of molecules or music alone are left as they
are; 0.05 s a page on one CPU core (0.075 s for a 300 dpi A4 scan).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SIDE = 1280  # pages are looked at with their longer side at most this many pixels
MAX_SKEW = 5.0  # degrees searched either way
MIN_SKEW = 0.1  # degrees: a smaller skew is within the measure's error and is not undone (no resampling)
GUTTER = 0.02  # the narrowest gap between columns of text, as a share of the ink's width
MIN_INK = 50  # ink pixels below which a page is blank
MIN_PEAK = 1.3  # a page whose best projection is not this many times its median over the angles has no lines
MIN_LINES = 6  # lines of text (bands of 8 rows or more between empty rows) needed to tell up from down
MIN_VOTES = 16  # and pieces of them (counted in both cuts of `_lean`)
STRIP = 0.08  # the width of the strips whose row profiles find text lines, as a share of the page width
CORE = 0.7  # a line's x-height band: its rows with at least this share of its densest row's ink
MIN_CONFIDENCE = 0.1  # below it a page is left as it is
_WHITE = {"RGB": (255, 255, 255), "RGBA": (255, 255, 255, 255), "L": 255, "LA": (255, 255), "1": 1, "I": 255,
          "I;16": 65535, "F": 255.0, "CMYK": (0, 0, 0, 0)}  # the paper's colour in each mode that has one
_TRANSPOSE = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class Orientation:
    """How a scan lies, and so how to turn it upright.

    Attributes:
        rotation: degrees (0, 90, 180, 270) to turn the scan clockwise so that it reads upright.
        skew: degrees the upright page's lines are turned counter-clockwise (their right ends higher);
            `upright` turns them back.
        confidence: in [0, 1]; below `MIN_CONFIDENCE` `detect` returns rotation 0 and skew 0.
    """

    rotation: int = 0
    skew: float = 0.0
    confidence: float = 0.0

    @property
    def known(self) -> bool:
        """Whether `detect` found the orientation (else the page is left as it is: rotation 0, skew 0)."""
        return self.confidence >= MIN_CONFIDENCE


def detect(image: Image.Image) -> Orientation:
    """The orientation of a page image (any mode, any size; never raises on a blank or tiny one)."""
    gray = _gray(image)
    ink = _ink(gray)
    ys, xs = np.nonzero(ink)
    if len(xs) < MIN_INK:
        return Orientation()
    ys, xs = ys - ink.shape[0] / 2, xs - ink.shape[1] / 2
    alone = np.zeros(len(xs), dtype=np.int64)
    across, across_energy, _ = _best_angle(xs, ys, alone)  # lines along the rows
    down, down_energy, _ = _best_angle(-ys, xs, alone)  # the points turned a quarter clockwise: lines down the page
    sideways = down_energy > across_energy
    if sideways:
        xs, ys = -ys, xs
    skew, _, peak = _best_angle(xs, ys, _blocks(xs, ys, down if sideways else across))
    guess = Orientation(90 if sideways else 0, skew)
    lines, up, down_votes = _lean(_ink(upright(gray, guess)))
    if peak < MIN_PEAK or abs(skew) >= MAX_SKEW or lines < MIN_LINES or up + down_votes < MIN_VOTES:
        return Orientation()
    axis = 1.0 - min(across_energy, down_energy) / max(across_energy, down_energy)
    confidence = round(min(axis, abs(up - down_votes) / (up + down_votes)), 3)
    if confidence < MIN_CONFIDENCE:
        return Orientation(0, 0.0, confidence)
    skew = round(skew, 2) if abs(skew) >= MIN_SKEW else 0.0  # a level page keeps its pixels
    return Orientation(guess.rotation + (180 if down_votes > up else 0), skew, confidence)


def upright(image: Image.Image, orientation: Orientation) -> Image.Image:
    """`image` turned upright: quarter turns by exact transposes (the same pixels, no resampling), then the skew
    undone by an affine rotation about the centre on a white ground, the size kept. A palette page with a skew
    to undo comes back in RGB (a palette need not hold white)."""
    if orientation.rotation % 360:
        image = image.transpose(_TRANSPOSE[orientation.rotation % 360])
    if orientation.skew:
        if image.mode not in _WHITE:
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        image = image.rotate(-orientation.skew, resample=Image.Resampling.BICUBIC, fillcolor=_WHITE[image.mode])
    return image


def scan_box(box: tuple[float, float, float, float], orientation: Orientation,
             size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box of the upright page (fractions, x0, y0, x1, y1) in fractions of the scan it was turned from, whose
    size in pixels is `size`: exact for quarter turns; with a skew, the box around the skewed box's corners."""
    width, height = size if orientation.rotation % 180 == 0 else size[::-1]  # the upright page's size
    corners = [(x * width, y * height) for x in box[::2] for y in box[1::2]]
    if orientation.skew:  # `upright` turned the scan clockwise by the skew about the centre: turn back
        angle, cx, cy = np.deg2rad(orientation.skew), width / 2, height / 2
        cos, sin = float(np.cos(angle)), float(np.sin(angle))
        corners = [(cx + (x - cx) * cos + (y - cy) * sin, cy - (x - cx) * sin + (y - cy) * cos) for x, y in corners]
    back = {0: lambda u, v: (u, v), 90: lambda u, v: (v, 1 - u), 180: lambda u, v: (1 - u, 1 - v),
            270: lambda u, v: (1 - v, u)}[orientation.rotation % 360]
    points = [back(x / width, y / height) for x, y in corners]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _gray(image: Image.Image) -> Image.Image:
    """The page in gray levels, its longer side at most `SIDE` pixels."""
    gray = image.convert("L")
    scale = SIDE / max(gray.size)
    if scale < 1:
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                           Image.Resampling.BOX)
    return gray


def _ink(gray: Image.Image) -> np.ndarray:
    """A boolean ink mask: darker than the paper (the median level) by a clear margin."""
    pixels = np.asarray(gray)
    share = np.cumsum(np.bincount(pixels.reshape(-1), minlength=256)) / pixels.size
    paper, dark = int(np.searchsorted(share, 0.5)), int(np.searchsorted(share, 0.005))  # median, 0.5% quantile
    return pixels < paper - max(40, (paper - dark) // 4)


def _energy(xs: np.ndarray, ys: np.ndarray, blocks: np.ndarray, degrees: float) -> float:
    """The energy (sum of squared bin counts) of the ink's projection across lines turned `degrees`
    counter-clockwise (right ends higher), each block of text projected on its own."""
    angle = np.deg2rad(degrees)
    rows = ys * np.cos(angle) + xs * np.sin(angle)
    rows = (rows - rows.min()).astype(np.int64)
    counts = np.bincount(blocks * (int(rows.max()) + 1) + rows)
    return float(np.dot(counts, counts)) / len(xs)


def _best_angle(xs: np.ndarray, ys: np.ndarray, blocks: np.ndarray) -> tuple[float, float, float]:
    """The angle in +-`MAX_SKEW` with the most peaked profile (coarse to fine), that profile's energy, and how far
    it stands above the median energy over the range (lines of text lose their peaks when turned; a drawing
    with edges at every angle barely changes)."""
    step = 0.5
    candidates = np.arange(-MAX_SKEW, MAX_SKEW + step / 2, step)
    typical = None
    while True:
        energies = [_energy(xs, ys, blocks, a) for a in candidates]
        typical = typical or float(np.median(energies))
        best = float(candidates[int(np.argmax(energies))])
        if step < 0.05:
            return best, max(energies), max(energies) / typical
        step /= 4
        candidates = np.clip(best + step * np.arange(-4, 5), -MAX_SKEW, MAX_SKEW)


def _blocks(xs: np.ndarray, ys: np.ndarray, degrees: float) -> np.ndarray:
    """The block of text of each ink point, across lines turned `degrees`: bands parted by rows without ink, each
    cut into columns by gutters (runs of `GUTTER` of the width without ink). Projected together, the lines of
    two columns at different heights peak highest at the slant that lines them up; projected apart, each
    block's lines peak when level."""
    angle = np.deg2rad(degrees)
    rows = ys * np.cos(angle) + xs * np.sin(angle)
    cols = xs * np.cos(angle) - ys * np.sin(angle)
    rows, cols = (rows - rows.min()).astype(np.int64), (cols - cols.min()).astype(np.int64)
    inked = np.bincount(rows) > 0
    band_of_row = np.cumsum(inked & ~np.concatenate(([False], inked[:-1])))
    bands, width = int(band_of_row[-1]) + 1, int(cols.max()) + 1
    occupied = np.zeros((bands, width), dtype=bool)
    band = band_of_row[rows]
    occupied[band, cols] = True
    gutter = max(2, round(GUTTER * width))
    column_of = np.zeros((bands, width), dtype=np.int64)
    for b, line in enumerate(occupied):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ~line, [0])).astype(np.int8)))
        for start, end in zip(edges[::2], edges[1::2]):
            if end - start >= gutter and end < width:
                column_of[b, end] = 1
    column_of = np.cumsum(column_of, axis=1)
    return np.unique(band * width + column_of[band, cols], return_inverse=True)[1].reshape(-1)


def _lean(ink: np.ndarray) -> tuple[int, int, int]:
    """The lines of an upright ink mask (bands of at least 8 rows between empty rows: a drawing is one band, a
    rule none) and the votes of pieces of them: (pieces with more ink above their x-height band than below,
    pieces with more below). A piece is a run of inked rows in one of the narrow vertical strips the page is
    cut into (so that the lines of columns side by side, at different heights, stay apart), cut twice, the
    second time half a strip further; its x-height band holds its rows with at least `CORE` of its densest
    row's ink."""
    height, width = ink.shape
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ink.any(axis=1), [0])).astype(np.int8)))
    lines = int(np.count_nonzero(edges[1::2] - edges[::2] >= 8))
    strip = max(8, round(width * STRIP))
    up = down = 0
    for offset in (0, strip // 2):
        n = max(0, (width - offset) // strip)
        profiles = ink[:, offset: offset + n * strip].reshape(height, n, strip).sum(axis=2).T
        for profile in profiles:
            edges = np.flatnonzero(np.diff(np.concatenate(([0], profile > 0, [0])).astype(np.int8)))
            for start, end in zip(edges[::2], edges[1::2]):
                line = profile[start:end]
                if end - start < 5 or line.sum() < 4 * (end - start):  # a rule, a speck, or too little to judge
                    continue
                core = np.flatnonzero(line >= CORE * line.max())
                above, below = line[: core[0]].sum(), line[core[-1] + 1:].sum()
                up += int(above > below)
                down += int(below > above)
    return lines, up, down
