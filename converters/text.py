"""Plain text lines: random line generation and rendering to images (the generic `text` task)."""

from __future__ import annotations

import functools
import random
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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
def _glyph_face(font_index: int, size: int, max_chars: int):
    """The font at the size where `max_chars` wide glyphs fill about 90% of `size` pixels."""
    face = font(font_index, 64)
    width = ImageDraw.Draw(Image.new("L", (1, 1))).textlength("M" * max_chars, font=face)
    return face.font_variant(size=max(8, int(64 * 0.9 * size / max(width, 1))))


def render_glyphs(text: str, rng: random.Random, size: int, max_chars: int, font_index: int) -> Image.Image:
    """Render `text` in big glyphs of one font, stretched to fill the square: a line of `max_chars`
    characters spans about 90% of the width, the glyphs most of the height (each character a column of
    the image); position, ink and a light noise vary a little. Easy to read on purpose."""
    face = _glyph_face(font_index, size, max_chars)
    ascent, descent = face.getmetrics()
    height = ascent + descent + 4
    strip = Image.new("L", (size, height), 255)
    draw = ImageDraw.Draw(strip)
    left = draw.textbbox((0, 0), text, font=face)[0]
    draw.text((rng.randint(0, max(1, size // 20)) - left, rng.randint(0, 4)), text, fill=rng.randint(0, 80), font=face)
    image = strip.resize((size, size), Image.BILINEAR).convert("RGB")
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 8), (size, size, 1))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
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
