"""Small builders shared by the core tests."""

from PIL import Image, ImageDraw

from docvlm.data import Collator


def text_image(text: str, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).text((size // 10, size // 3), text, fill="black", font_size=size // 8)
    return image


def make_batch(processor, prompts, targets=None, size=None):
    """A batch as the data module builds it, from prompts, optional targets and drawn images."""
    size = size or processor.image_processor.size["height"]
    items = [
        {"index": i, "id": str(i), "prompt": p, "target": None if targets is None else targets[i],
         "truncated": False, "image": text_image(p if targets is None else f"{p} {targets[i]}", size)}
        for i, p in enumerate(prompts)
    ]
    return Collator(processor, with_targets=targets is not None)(items)
