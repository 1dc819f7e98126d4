"""Pixel values by table look-up (`docvlm.pixels`) are the processor's, bit for bit, and so are the batches
the `Collator` makes with them."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

from docvlm.images import fit, load_image
from docvlm.items import Collator
from docvlm.model import build_tiny_tokenizer
from docvlm.pixels import PixelTable, hand_over, planes, to_image

# google/paligemma2-3b-pt-896's preprocessor_config.json
REAL_896 = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "resample": 3, "rescale_factor": 0.00392156862745098,
            "size": {"height": 896, "width": 896}}


def processor(size: int = 896, **settings) -> PaliGemmaProcessor:
    image_processor = SiglipImageProcessorPil(**{**REAL_896, "size": {"height": size, "width": size}, **settings})
    image_processor.image_seq_length = 16
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer())


def scans(size: int) -> list[Image.Image]:
    """Fitted pages from many kinds of files: every byte value, text, greys, palettes, transparency, CMYK,
    16-bit, odd shapes, padded and stretched."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (301, 517, 3), dtype=np.uint8), "RGB")
    page = Image.new("RGB", (640, 160), "white")
    ImageDraw.Draw(page).text((20, 50), "the quick brown fox", fill="black", font_size=28)
    sources = [
        noise, page, page.convert("L"), page.convert("P"), noise.convert("CMYK"),
        Image.fromarray(rng.integers(0, 256, (90, 700, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(rng.integers(0, 65536, (200, 150), dtype=np.uint16)),
        page.convert("1"),
    ]
    fitted = []
    for i, source in enumerate(sources):
        encoded = io.BytesIO()
        source.save(encoded, format="PNG" if source.mode != "CMYK" else "TIFF")
        fitted.append(fit(load_image(io.BytesIO(encoded.getvalue())), size, "pad" if i % 2 else "stretch"))
    return fitted


@pytest.mark.parametrize("settings", [
    {},  # the real 896 model's processor (and the tiny model's: the same mean, std and scale)
    {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},  # ImageNet's, one per channel
    {"rescale_factor": 1 / 127.5, "image_mean": [1.0, 1.0, 1.0], "image_std": [1.0, 1.0, 1.0]},
    {"do_normalize": False},
])
@pytest.mark.parametrize("size", [896, 224])
def test_table_gives_the_processors_bits(settings, size):
    proc = processor(size, **settings)
    table = PixelTable.build(proc.image_processor)
    images = scans(size)
    assert table is not None and table.accepts(images)
    expected = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
    got = table(images)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)
    handed = [planes(image) for image in images]  # as loader workers hand pages over
    assert table.accepts(handed) and torch.equal(table(handed), expected)


def test_collator_batches_are_the_processors(tiny_small):
    _, proc = tiny_small
    images = scans(224)
    items = [{"index": i, "id": str(i), "prompt": f"prompt {'x' * i}", "target": f"target {i}" * (i + 1),
              "truncated": i == 2, "image": image} for i, image in enumerate(images)]
    handed = hand_over([dict(item) for item in items])
    assert all(isinstance(item["image"], torch.Tensor) for item in handed)
    for with_targets in (False, True):
        collator = Collator(proc, with_targets=with_targets)
        fast = collator(items)
        collator._table = None  # the processor for everything
        for batch in (collator(items), collator(handed), Collator(proc, with_targets=with_targets)(handed)):
            assert fast.keys() == batch.keys()
            for key in fast:
                if isinstance(fast[key], torch.Tensor):
                    assert torch.equal(fast[key], batch[key]), key
                else:
                    assert fast[key] == batch[key], key


def test_hand_over_keeps_everything_but_the_form_of_rgb_images():
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8), "RGB")
    grey = Image.new("L", (7, 5), 9)
    items = hand_over([{"index": 0, "image": rgb}, {"index": 1, "image": grey}, {"index": 2, "error": "bad"}])
    assert items[0]["image"].shape == (3, 5, 7) and items[0]["image"].dtype == torch.uint8
    assert np.array_equal(np.asarray(to_image(items[0]["image"])), np.asarray(rgb))
    assert items[1]["image"] is grey and items[2] == {"index": 2, "error": "bad"}


def test_anything_else_is_left_to_the_processor():
    proc = processor(224)
    table = PixelTable.build(proc.image_processor)
    assert not table.accepts([Image.new("RGB", (200, 224))])  # the processor would resize it
    assert not table.accepts([Image.new("L", (224, 224))])
    assert not table.accepts([])
    assert PixelTable.build(processor(224, do_center_crop=True, crop_size={"height": 200, "width": 200})
                            .image_processor) is None
