"""Page orientation: composed pages turned by quarter turns and skewed a few degrees, with and without scan noise,
come back with the rotation exactly right and the skew within 0.3 degrees; quarter turns are undone exactly
(the same pixels); pages without text are left as they are; no page, however blank, tiny or odd, raises."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from docvlm.converters.page_synth import random_page
from docvlm.pipeline.orientation import Orientation, detect, scan_box, upright

TEXT_RICH = ("text", "title", "section-header", "caption", "table")
TURN = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def scan(page: Image.Image, rotation: int, skew: float = 0.0) -> Image.Image:
    """`page` skewed `skew` degrees counter-clockwise, then turned so that `rotation` degrees clockwise turn it
    back (PIL's ROTATE_90 turns counter-clockwise)."""
    skewed = page.rotate(skew, resample=Image.Resampling.BICUBIC, fillcolor="white") if skew else page
    return skewed.transpose(TURN[rotation]) if rotation else skewed


@pytest.fixture(scope="module")
def text_pages():
    """30 text-rich pages, every other one with scan noise (seeds not used while the thresholds were chosen)."""
    return [random_page(random.Random(seed), kinds=TEXT_RICH, min_regions=8, noise=seed % 2 == 1).image
            for seed in range(300, 330)]


def test_rotation_exact_and_skew_close_on_every_turned_and_skewed_text_page(text_pages):
    misses = []
    for seed, page in enumerate(text_pages):
        rng = random.Random(seed)
        for rotation in (0, 90, 180, 270):
            skew = rng.choice((-1, 1)) * rng.uniform(0.5, 3)
            found = detect(scan(page, rotation, skew))
            if found.rotation != rotation or abs(found.skew - skew) > 0.3 or not found.known:
                misses.append((seed, rotation, round(skew, 2), found))
    assert not misses, misses  # 120 scans: every one right


def test_a_page_turned_a_quarter_comes_back_pixel_for_pixel(text_pages):
    """`upright(scan, detect(scan))` of a level page turned by quarters is the page itself: exact transposes, and
    no skew below `MIN_SKEW` undone (so a sideways page gives the same document as the upright one)."""
    for page in text_pages[:10]:
        for rotation in (0, 90, 180, 270):
            found = detect(scan(page, rotation))
            assert found.known and found.rotation == rotation and found.skew == 0.0, found
            assert np.array_equal(np.asarray(upright(scan(page, rotation), found)), np.asarray(page))


def test_upright_turns_the_skew_back():
    """A page of horizontal bars skewed 2 degrees: undone, each bar's ink lies in its own rows again."""
    page = Image.new("L", (400, 300), 255)
    for top in range(40, 260, 40):
        page.paste(0, (40, top, 360, top + 4))
    skewed = page.rotate(2.0, resample=Image.Resampling.BICUBIC, fillcolor=255)
    straight = np.asarray(upright(skewed, Orientation(0, 2.0))) < 128
    rows = np.flatnonzero(straight.any(axis=1))
    assert np.isin(rows, [r for top in range(40, 260, 40) for r in range(top - 1, top + 5)]).all()
    assert np.asarray(upright(skewed, Orientation(0, 2.0))).shape == (300, 400)  # same size, white corners


@pytest.mark.parametrize("kinds", [("molecule",)])
def test_a_page_without_text_is_left_as_it_is(kinds):
    for seed in range(5):
        page = random_page(random.Random(seed), kinds=kinds).image
        for rotation in (0, 90):
            found = detect(scan(page, rotation, 1.5))
            assert found == Orientation(0, 0.0, found.confidence) and not found.known, found
            assert upright(page, found) is page or np.array_equal(np.asarray(upright(page, found)), np.asarray(page))


@pytest.mark.parametrize("image", [
    Image.new("RGB", (896, 1267), "white"),  # blank
    Image.new("RGB", (1, 1), "black"),  # tiny, all ink
    Image.new("L", (3, 2), 0),
    Image.new("1", (40, 30), 1),
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    Image.new("P", (50, 80)),
    Image.new("I;16", (30, 30), 1000),
    Image.new("F", (20, 10), 0.5),
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8)),  # noise
])
def test_odd_images_give_no_rotation_and_never_raise(image):
    found = detect(image)
    assert found.rotation == 0 and found.skew == 0.0 and not found.known, found
    assert upright(image, found).size == image.size


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGBA", "CMYK", "I;16", "F", "P"])
def test_upright_fills_white_and_keeps_the_mode_of_pages_that_have_a_white(mode):
    image = Image.new("RGB", (60, 40), "white").convert(mode)
    turned = upright(image, Orientation(90, 3.0))
    assert turned.mode == ("RGB" if mode == "P" else mode) and turned.size == (40, 60)
    assert np.asarray(turned.convert("RGB")).min() >= 250  # the corners uncovered by the skew are white
    assert upright(image, Orientation(90)).mode == mode  # a quarter turn alone keeps even a palette


def ink_box(image: Image.Image) -> tuple[float, float, float, float]:
    """The box around an image's dark pixels, in fractions (x1 and y1 exclusive)."""
    ys, xs = np.nonzero(np.asarray(image.convert("L")) < 128)
    return xs.min() / image.width, ys.min() / image.height, (xs.max() + 1) / image.width, (ys.max() + 1) / image.height


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_a_box_of_the_upright_page_maps_back_onto_the_scan(rotation):
    page = Image.new("L", (300, 400), 255)
    page.paste(0, (30, 50, 120, 90))
    box = ink_box(page)
    turned = scan(page, rotation)
    assert scan_box(box, Orientation(rotation), turned.size) == pytest.approx(ink_box(turned))  # exact
    skewed = scan(page, rotation, 2.0)
    x0, y0, x1, y1 = scan_box(box, Orientation(rotation, 2.0), skewed.size)
    ink = ink_box(skewed)  # the skewed rectangle's ink lies inside the mapped box, which is not much larger
    assert x0 - 0.01 <= ink[0] and y0 - 0.01 <= ink[1] and ink[2] <= x1 + 0.01 and ink[3] <= y1 + 0.01
    assert (x1 - x0) * (y1 - y0) < 1.2 * (ink[2] - ink[0]) * (ink[3] - ink[1])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 120), st.integers(1, 120), st.integers(0, 2**32 - 1), st.floats(0, 1), st.sampled_from([0, 1, 3]))
def test_any_small_image_gives_an_orientation_without_raising(width, height, seed, ink, stride):
    """Random pages of every shape: speckle, stripes every `stride` rows, solid; `upright` of the answer keeps
    the page's size (turned a quarter, its sides swap)."""
    pixels = np.where(np.random.default_rng(seed).random((height, width)) < ink, 0, 255).astype(np.uint8)
    if stride:
        pixels[::stride] = 0
    image = Image.fromarray(pixels)
    found = detect(image)
    assert found.rotation in (0, 90, 180, 270) and abs(found.skew) <= 5 and 0 <= found.confidence <= 1
    assert sorted(upright(image, found).size) == sorted(image.size)
