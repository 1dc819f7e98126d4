"""Page layout as PaliGemma's detection text: `<locYmin><locXmin><locYmax><locXmax> label` per region, joined by
` ; ` (the answer PaliGemma's checkpoints give to `detect a ; b`), boxes in `docvlm.converters.locations`.

`parse` never raises: an incomplete location group, a bin above 1023, a reversed box, a label outside the
task's classes and `<segNNN>` tokens are listed as problems. Reversed boxes are kept with their edges
sorted, regions of unknown labels are kept (they match no true region), and groups without four valid
bins are dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from docvlm.converters import capped, locations, quote

_GROUP = re.compile(r"((?:<loc\d+>\s*)+)([^;<]*)")
_SEG = re.compile(r"<seg\d+>")
_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (128, 128, 0), (0, 0, 128), (170, 110, 40), (128, 0, 0), (0, 128, 128), (90, 90, 90))


@dataclass
class Region:
    """A region of a page: its label, its box as fractions of width and height (x0, y0, x1, y1), a confidence
    where the model's scores are known, and its content where known (synthetic pages)."""

    label: str
    box: tuple[float, float, float, float]
    score: float | None = None
    content: str | None = None


def to_text(regions: Iterable[Region]) -> str:
    """The detection text of `regions`, in the order given."""
    return " ; ".join(f"{locations.encode(r.box)} {r.label}" for r in regions)


def parse(text: str, classes: Sequence[str], pieces: Sequence[str] | None = None,
          probabilities: Sequence[float] | None = None) -> tuple[list[Region], list[str]]:
    """The regions written in `text` and what was wrong with it (see the module docstring). With the output's
    token `pieces` (joined: `text`) and their `probabilities` (`docvlm.decode.Generation`), each region's
    `score` is its confidence (`label_confidence`)."""
    problems: list[str] = []
    spans = _token_spans(pieces, probabilities, text)
    if _SEG.search(text):
        problems.append(f"{len(_SEG.findall(text))} segmentation tokens (<segNNN>) ignored: layout has boxes only")
        text = _SEG.sub(lambda m: " " * len(m.group()), text)  # spaces: what follows keeps its offsets
    regions, known, end = [], set(classes), 0
    for match in _GROUP.finditer(text):
        _stray(text[end: match.start()], problems)
        end = match.end()
        values = [int(v) for v in re.findall(r"<loc(\d+)>", match.group(1))]
        label = " ".join(match.group(2).split())
        where = f"region {len(regions) + 1}"
        if len(values) != 4:
            problems.append(f"{where}: {len(values)} location tokens, not 4; dropped")
            continue
        if max(values) >= locations.BINS:
            problems.append(f"{where}: bin {max(values)} is beyond {locations.BINS - 1}; dropped")
            continue
        ymin, xmin, ymax, xmax = values
        if ymin > ymax or xmin > xmax:
            problems.append(f"{where}: reversed box {values}; edges sorted")
            ymin, ymax, xmin, xmax = min(ymin, ymax), max(ymin, ymax), min(xmin, xmax), max(xmin, xmax)
        if label not in known:
            problems.append(f"{where}: label {quote(label)} is not one of the classes")
        written = match.group(2)
        start = match.start(2) + len(written) - len(written.lstrip())
        score = label_confidence(spans, start, start + len(written.strip()))
        regions.append(Region(label, locations.decode((ymin, xmin, ymax, xmax)), score=score))
    _stray(text[end:], problems)
    return regions, capped(problems)


def _token_spans(pieces, probabilities, text: str) -> list[tuple[int, int, float]]:
    """(start, end, probability) of each token's piece of `text`; none when the pieces are not `text`'s."""
    if pieces is None or probabilities is None or len(pieces) != len(probabilities) or "".join(pieces) != text:
        return []
    spans, start = [], 0
    for piece, probability in zip(pieces, probabilities):
        if piece:
            spans.append((start, start + len(piece), float(probability)))
        start += len(piece)
    return spans


def label_confidence(spans: Sequence[tuple[int, int, float]], start: int, end: int) -> float | None:
    """A region's confidence: the product of the probabilities of the tokens that write its label
    (`text[start:end]`, the tokens after its four `<locNNNN>`s); None without scores or without a label.

    The label alone, not the location tokens: an edge is one of 1024 bins, and a model sure where a box is
    still spreads an edge's probability over the neighbouring bins (412, 411, 413 for one line of pixels), so
    the four location probabilities are low for well-placed boxes and say little about them. The label's
    tokens say whether the model takes the region to be there and of that class, as the class score of a
    detector does; a label of several tokens is as likely as all of them (their product)."""
    if end <= start:
        return None
    inside = [p for a, b, p in spans if a < end and b > start]
    return float(math.prod(inside)) if inside else None


def _stray(between: str, problems: list[str]) -> None:
    """Text between regions other than the ` ; ` separators."""
    rest = between.replace(";", " ").strip()
    if rest:
        problems.append(f"text outside any region ignored: {quote(rest)}")


def to_pixels(region: Region, width: int, height: int) -> list[float]:
    x0, y0, x1, y1 = region.box
    return [x0 * width, y0 * height, x1 * width, y1 * height]


def export(regions: list[Region], text: str, stem: str | Path, image=None) -> list[Path]:
    """`<stem>.json` (regions with boxes as fractions, and in pixels of `image` when given) and `<stem>.png` (the
    page, or a blank 1024 px square without it, with the boxes and labels drawn)."""
    from PIL import Image

    page = image.convert("RGB") if image is not None else Image.new("RGB", (1024, 1024), "white")
    rows = []
    for region in regions:
        row = {k: v for k, v in asdict(region).items() if v is not None}
        row["bbox"] = list(region.box)
        del row["box"]
        if image is not None:
            row["bbox_px"] = [round(v, 2) for v in to_pixels(region, *page.size)]
        rows.append(row)
    json_path, png_path = Path(f"{stem}.json"), Path(f"{stem}.png")
    document = {"text": text, "regions": rows, "size": list(page.size) if image is not None else None}
    json_path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    draw_regions(page, regions).save(png_path)
    return [json_path, png_path]


def draw_regions(page, regions: Sequence[Region], colour=None, numbered: bool = True, width: int = 0):
    """A copy of `page` with each region's box and `n label` drawn, a colour per label unless `colour` is given.

    The label is a tag in the box's colour, white text on it, above the box's top-left corner (inside the box where
    the page has no room above), its font scaled with the page: readable at any resolution and never over the
    content it names."""
    from PIL import ImageDraw, ImageFont

    page = page.convert("RGB").copy()
    draw = ImageDraw.Draw(page)
    line = width or max(1, round(max(page.size) / 400))
    text_font = ImageFont.load_default(size=max(10, round(page.width / 60)))
    labels = sorted({r.label for r in regions})
    tags = []
    for n, region in enumerate(regions, 1):
        ink = colour or _COLOURS[labels.index(region.label) % len(_COLOURS)]
        x0, y0, x1, y1 = to_pixels(region, *page.size)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=ink, width=line)
        tags.append((f"{n} {region.label}" if numbered else region.label, ink, x0, y0))
    for caption, ink, x0, y0 in tags:  # after every box: a tag is never crossed by a neighbour's edge
        left, top, right, bottom = draw.textbbox((0, 0), caption[:40], font=text_font)
        pad = max(1, (bottom - top) // 5)
        height = bottom - top + 2 * pad
        y = y0 - height if y0 >= height else y0
        draw.rectangle([x0, y, x0 + right - left + 2 * pad, y + height], fill=ink)
        draw.text((x0 + pad - left, y + pad - top), caption[:40], fill="white", font=text_font)
    return page
