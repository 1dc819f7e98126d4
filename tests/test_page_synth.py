"""Synthetic pages: every box tight around what was drawn there, nothing drawn outside the boxes, no two boxes
overlapping, contents that their domains read back, and the same page for the same seed."""

import random
from itertools import combinations

import numpy as np
import pytest

from docvlm.converters.page_synth import INK, KINDS, random_page
from docvlm.converters.reading_order import reading_order

SEEDS = range(12)


@pytest.fixture(scope="module")
def pages():
    return [random_page(random.Random(seed), noise=False) for seed in SEEDS]


def test_every_box_is_tight_and_nothing_is_drawn_outside_the_boxes(pages):
    for page in pages:
        ink = (np.asarray(page.image) < INK).any(axis=2)
        outside = ink.copy()
        for region in page.regions:
            x0, y0, x1, y1 = region.box
            inside = ink[y0:y1, x0:x1]
            assert inside.shape == (y1 - y0, x1 - x0) and inside.size, region
            edges = inside[0].any(), inside[-1].any(), inside[:, 0].any(), inside[:, -1].any()
            assert all(edges), (region.label, region.box, edges)  # ink touches all four edges: tight
            outside[y0:y1, x0:x1] = False
        assert not outside.any(), np.argwhere(outside)[:5]


def test_no_two_regions_overlap(pages):
    for page in pages:
        for a, b in combinations(page.regions, 2):
            overlap_x = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
            overlap_y = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
            assert overlap_x <= 0 or overlap_y <= 0, (a.label, a.box, b.label, b.box)


def test_pages_hold_one_to_eight_regions_in_reading_order_with_their_contents(pages):
    from rdkit import Chem

    from docvlm.converters import kern
    from docvlm.converters.tables import parse_html

    seen = set()
    for page in pages:
        assert 1 <= len(page.regions) <= 8
        assert reading_order([r.box for r in page.regions]) == list(range(len(page.regions)))
        for region in page.regions:
            seen.add(region.label)
            assert region.content.strip(), region
            if region.label == "table":
                assert parse_html(region.content)[1] == []
            elif region.label == "molecule":
                assert Chem.MolFromSmiles(region.content) is not None
            elif region.label == "music":
                assert kern.scan(region.content)[1] == []
    assert {"table", "molecule", "music", "text"} <= seen <= set(KINDS)


def test_pages_are_deterministic_in_the_seed_and_noise_keeps_the_layout():
    a, b = random_page(random.Random(5)), random_page(random.Random(5))
    assert a.regions == b.regions and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    clean = random_page(random.Random(5), noise=False)
    assert clean.regions == a.regions and not np.array_equal(np.asarray(clean.image), np.asarray(a.image))
    assert random_page(random.Random(6)).regions != a.regions


def test_kinds_limit_what_a_page_holds():
    for seed in range(6):
        page = random_page(random.Random(seed), kinds=("table", "text"), width=448, max_regions=3)
        assert {r.label for r in page.regions} <= {"table", "text"} and 1 <= len(page.regions) <= 3
        assert page.size == (448, round(448 * 297 / 210))
    with pytest.raises(ValueError, match="kinds"):
        random_page(random.Random(0), kinds=("sofa",))


def test_grid_pages_put_every_box_on_the_lattice_tight_and_apart():
    for seed in range(8):
        page = random_page(random.Random(seed), kinds=("table", "molecule"), width=448, max_regions=3, grid=8,
                           noise=False, bold=seed % 3)
        cell_w, cell_h = page.size[0] // 8, page.size[1] // 8
        ink = (np.asarray(page.image) < INK).any(axis=2)
        for region in page.regions:
            x0, y0, x1, y1 = region.box
            assert x0 % cell_w == 0 and y0 % cell_h == 0, region.box  # the top-left corner on a cell line
            # the far edges within the pixels trimming takes of a cell line
            assert min(x1 % cell_w, -x1 % cell_w) <= 2 and min(y1 % cell_h, -y1 % cell_h) <= 2, region.box
            inside = ink[y0:y1, x0:x1]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        for a, b in combinations(page.regions, 2):
            apart_x = min(a.box[2], b.box[2]) <= max(a.box[0], b.box[0])
            assert apart_x or min(a.box[3], b.box[3]) <= max(a.box[1], b.box[1])
    with pytest.raises(ValueError, match="grid"):
        random_page(random.Random(0), kinds=("table", "text"), width=448, grid=8)


def test_bold_strokes_darken_the_same_layout():
    thin = random_page(random.Random(3), kinds=("table", "molecule"), width=448, grid=8, noise=False)
    bold = random_page(random.Random(3), kinds=("table", "molecule"), width=448, grid=8, noise=False, bold=4)
    assert [r.label for r in thin.regions] == [r.label for r in bold.regions]
    assert (np.asarray(bold.image) < INK).sum() > 2 * (np.asarray(thin.image) < INK).sum()
