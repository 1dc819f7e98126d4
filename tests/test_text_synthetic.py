"""The text task's synthetic lines: the demo's random glyph strings (`synthetic_alphabet`)."""

import numpy as np

from docvlm.model import ModelSpec, load
from docvlm.tasks.text import TextTask


def test_glyph_lines_are_random_strings_one_character_per_cell_along_the_top():
    task = TextTask(synthetic_size=140, synthetic_alphabet="0123456789", synthetic_min_chars=4, synthetic_max_chars=5)
    samples = list(task.synthesize(200, seed=0))
    texts = [s.target for s in samples]
    assert all(set(t) <= set("0123456789") and 4 <= len(t) <= 5 for t in texts)
    assert len(set(texts)) > 195 and len({t[:2] for t in texts}) > 60  # no shared words or prefixes to guess
    assert [s.target for s in task.synthesize(5, seed=0)] == texts[:5]
    assert [s.target for s in task.synthesize(5, seed=1)] != texts[:5]
    for sample in samples[:20]:
        ink = np.asarray(sample.image.convert("L")) < 128
        assert sample.image.size == (140, 140) and not ink[28:].any()  # the line is the top row of cells
        cells = [ink[:28, 28 * i: 28 * (i + 1)] for i in range(5)]
        assert [c.any() for c in cells] == [i < len(sample.target) for i in range(5)]  # a character per cell
        assert all(c[:, :2].sum() + c[:, -2:].sum() == 0 for c in cells)  # no glyph crosses into its neighbour
        rows = np.flatnonzero(cells[0].any(axis=1))
        assert rows[-1] - rows[0] > 28 * 0.6  # drawn big


def test_words_stay_the_default():
    texts = [s.target for s in TextTask(synthetic_size=112).synthesize(20, seed=0)]
    assert any(" " in t for t in texts) and any(c.isalpha() for t in texts for c in t)


def test_tiny_width_scales_both_towers():
    model, _ = load(ModelSpec(name_or_path="tiny", image_size=112, patch_size=28, tiny_width=2))
    assert model.config.vision_config.hidden_size == 64 and model.config.text_config.hidden_size == 128
    narrow, _ = load(ModelSpec(name_or_path="tiny", image_size=112, patch_size=28))
    assert narrow.config.vision_config.hidden_size == 32 and narrow.config.text_config.hidden_size == 64
