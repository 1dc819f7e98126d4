"""PaliGemma's location tokens: the one codec of every box a docvlm target holds (layout regions, table cells).

A box is four tokens `<locYmin><locXmin><locYmax><locXmax>`, y before x, each a bin of 1024 over the image's
height or width: the order of the PaliGemma model cards and of big_vision's detection data, read the same way
by supervision's `Detections.from_lmm(PALIGEMMA)`.

Binning follows supervision's reading (`edge = bin / 1024 * side`, as the model cards' examples draw boxes):
a bin decodes to `bin / 1024`, and a fraction encodes to its nearest bin, `round(f * 1024)` clipped to
0..1023, so that decoding an encoded edge is off by at most half a bin (the far edge, 1.0, by one bin).
"""

from __future__ import annotations

import re

BINS = 1024
LOC = re.compile(r"<loc(\d{4})>")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the width and height


def to_bin(fraction: float) -> int:
    """The bin of an edge at `fraction` of its side (clipped to the image)."""
    return min(BINS - 1, max(0, round(fraction * BINS)))


def from_bin(value: int) -> float:
    """The edge a bin stands for, as a fraction of its side."""
    return value / BINS


def token(value: int) -> str:
    return f"<loc{value:04d}>"


def bins(box: Box) -> tuple[int, int, int, int]:
    """(ymin, xmin, ymax, xmax) bins of a box given as (x0, y0, x1, y1) fractions."""
    x0, y0, x1, y1 = box
    return to_bin(y0), to_bin(x0), to_bin(y1), to_bin(x1)


def encode(box: Box) -> str:
    """Four loc tokens, PaliGemma's order, for a box given as (x0, y0, x1, y1) fractions."""
    return "".join(token(b) for b in bins(box))


def encode_pixels(box: Box, width: float, height: float) -> str:
    """Four loc tokens for a box in pixels (x0, y0, x1, y1) of a `width` x `height` image."""
    x0, y0, x1, y1 = box
    return encode((x0 / width, y0 / height, x1 / width, y1 / height))


def decode(values: tuple[int, int, int, int]) -> Box:
    """(x0, y0, x1, y1) fractions of the four bins (ymin, xmin, ymax, xmax) as written."""
    ymin, xmin, ymax, xmax = values
    return from_bin(xmin), from_bin(ymin), from_bin(xmax), from_bin(ymax)
