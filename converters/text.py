"""Plain text lines: random line generation and rendering to images (the generic `text` task)."""

from __future__ import annotations

import functools
import random
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from docvlm.converters.fonts import font, font_files

_WORDS = (
    "table figure result method sample total mean value patient score model data series note page "
    "protein ratio dose group control year week level index rate study analysis effect"
).split()


def random_line(rng: random.Random, max_words: int = 6) -> str:
    """A short line mixing words, numbers and punctuation, as found in documents."""
    parts = []
    for _ in range(rng.randint(1, max_words)):
        kind = rng.random()
        if kind < 0.6:
            word = rng.choice(_WORDS)
            parts.append(word.capitalize() if rng.random() < 0.3 else word)
        elif kind < 0.85:
            parts.append(f"{rng.uniform(0, 1000):.{rng.randint(0, 2)}f}")
        else:
            parts.append("".join(rng.choices(string.ascii_uppercase + string.digits, k=rng.randint(2, 5))))
    line = " ".join(parts)
    if rng.random() < 0.3:
        line += rng.choice(".,;:%)")
    return line


def random_glyphs(rng: random.Random, alphabet: str, min_chars: int, max_chars: int) -> str:
    """A line of `min_chars`..`max_chars` characters drawn independently from `alphabet`: no words, no
    shared prefixes, so a model can only get it right by reading the image."""
    return "".join(rng.choices(alphabet, k=rng.randint(min_chars, max_chars)))


@functools.cache
def _cell_face(cell: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font (the same on every machine, unlike the system's fonts) at the size where its
    widest or tallest digit or capital fills about 80% of a `cell`-pixel square."""
    face = ImageFont.load_default(size=64)
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    extent = max(max(right - left, bottom - top)
                 for left, top, right, bottom in (draw.textbbox((0, 0), c, font=face) for c in "0M"))
    return face.font_variant(size=max(6, int(64 * 0.8 * cell / max(extent, 1))))


def render_glyphs(text: str, rng: random.Random, size: int, max_chars: int) -> Image.Image:
    """Render `text` as a line along the top of a white square, one character centred in each of
    `max_chars` square cells of side `size // max_chars`: with the model's patch equal to the cell, each
    character is one image token, in reading order. Easy to read on purpose (the demo learns in minutes);
    ink, a pixel or two of jitter and a light noise vary."""
    cell = size // max_chars
    face = _cell_face(cell)
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    ink = rng.randint(0, 80)
    for i, char in enumerate(text):
        left, top, right, bottom = draw.textbbox((0, 0), char, font=face)
        x = i * cell + (cell - (right - left)) // 2 - left + rng.randint(-1, 1)
        y = (cell - (bottom - top)) // 2 - top + rng.randint(-1, 1)
        draw.text((x, y), char, fill=ink, font=face)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 8), (size, size, 1))
    pixels = np.clip(np.asarray(image.convert("RGB"), dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def render_line(text: str, rng: random.Random, size: int = 448) -> Image.Image:
    """Render `text` on a white canvas in a random font, size, position, ink and noise level."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    n_fonts = max(len(font_files()), 1)
    face = font(rng.randrange(n_fonts), rng.randint(size // 16, size // 9))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    while right - left > size * 0.95 and face.size > 8:  # shrink until the line fits
        face = face.font_variant(size=int(face.size * 0.85))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    x = rng.randint(0, max(0, size - (right - left))) - left
    y = rng.randint(0, max(0, size - (bottom - top))) - top
    ink = rng.randint(0, 80)
    draw.text((x, y), text, fill=(ink, ink, ink), font=face)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 12), (size, size, 1))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
