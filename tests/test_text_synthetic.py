"""The text task's synthetic lines: the demo's random glyph strings (`synthetic_alphabet`)."""

from docvlm.model import ModelSpec, load
from docvlm.tasks.text import TextTask


def test_glyph_lines_are_random_strings_of_the_alphabet_drawn_big():
    task = TextTask(synthetic_size=112, synthetic_alphabet="0123456789", synthetic_min_chars=3, synthetic_max_chars=4)
    samples = list(task.synthesize(200, seed=0))
    texts = [s.target for s in samples]
    assert all(set(t) <= set("0123456789") and 3 <= len(t) <= 4 for t in texts)
    assert len(set(texts)) > 190 and len({t[:2] for t in texts}) > 60  # no shared words or prefixes to guess
    assert [s.target for s in task.synthesize(5, seed=0)] == texts[:5]
    assert [s.target for s in task.synthesize(5, seed=1)] != texts[:5]
    image = samples[0].image.convert("L")
    assert image.size == (112, 112)
    ink_rows = [y for y in range(112) if min(image.getpixel((x, y)) for x in range(112)) < 128]
    assert max(ink_rows) - min(ink_rows) > 112 * 0.5  # glyphs fill most of the height


def test_words_stay_the_default():
    texts = [s.target for s in TextTask(synthetic_size=112).synthesize(20, seed=0)]
    assert any(" " in t for t in texts) and any(c.isalpha() for t in texts for c in t)


def test_tiny_width_scales_both_towers():
    model, _ = load(ModelSpec(name_or_path="tiny", image_size=112, patch_size=28, tiny_width=2))
    assert model.config.vision_config.hidden_size == 64 and model.config.text_config.hidden_size == 128
    narrow, _ = load(ModelSpec(name_or_path="tiny", image_size=112, patch_size=28))
    assert narrow.config.vision_config.hidden_size == 32 and narrow.config.text_config.hidden_size == 64
