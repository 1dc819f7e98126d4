"""Pixel values of fitted images by table look-up, bit-identical to the image processor's.

`PaliGemmaProcessor`'s PIL image processor turns each 896 px image into floats in several passes over its
2.4M values (copies, to float64, scale, to float32, subtract, divide): 40-130 ms a page on a CPU, a large
share of a page for a small model, and time the accelerator waits. Every output value depends only on
its input byte and channel, so the processor run once on an image holding the 256 byte values gives a
table, and one look-up per value gives the same bits. Used only where that holds (`PixelTable.build`);
otherwise the processor does the work, as before.

Data-loader workers hand fitted pages to the process that decodes as `planes`: (3, H, W) uint8 tensors,
which cross processes through shared memory (a PIL image is pickled through a pipe and rebuilt, about as
costly as its pixel values) and whose channel planes the table reads contiguously (half the time of
reading every third byte of the interleaved image).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class PixelTable:
    """The processor's output for each (channel, byte) of an RGB image already at its input size."""

    def __init__(self, table: np.ndarray, size: tuple[int, int] | None):
        self.table = table  # (3, 256)
        self.size = size  # (width, height) the processor resizes to; None: it keeps any size

    @classmethod
    def build(cls, image_processor) -> PixelTable | None:
        """The table of a PIL-backend image processor that only resizes, rescales and normalizes (then
        resizing an image of its size is a copy); None for any other processor (e.g. the torchvision
        backend, whose float arithmetic differs)."""
        from transformers.image_processing_backends import PilBackend

        if not isinstance(image_processor, PilBackend) or any(
                getattr(image_processor, step, None) for step in ("do_center_crop", "do_pad")):
            return None
        size = None
        if image_processor.do_resize:
            height, width = image_processor.size.get("height"), image_processor.size.get("width")
            if not (height and width):
                return None
            size = (width, height)
        every_byte = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
        values = image_processor(images=[Image.fromarray(every_byte, "RGB")], do_resize=False,
                                 return_tensors="np")["pixel_values"][0]
        if values.shape != (3, 16, 16):
            return None
        return cls(np.ascontiguousarray(values.reshape(3, 256)), size)

    def accepts(self, images: list) -> bool:
        """Whether the processor would give `images` the table's values: RGB PIL images or `planes` of its
        size (of one size when it does not resize)."""
        if not images or not all(_is_planes(image) or isinstance(image, Image.Image) and image.mode == "RGB"
                                 for image in images):
            return False
        sizes = {_size(image) for image in images}
        return len(sizes) == 1 and (self.size is None or sizes == {self.size})

    def __call__(self, images: list) -> torch.Tensor:
        """(N, 3, H, W) pixel values, as `processor(images=images, return_tensors="pt")` gives them."""
        width, height = _size(images[0])
        out = np.empty((len(images), 3, height, width), dtype=self.table.dtype)
        for n, image in enumerate(images):
            pixels = planes(image).numpy()
            for c in range(3):
                np.take(self.table[c], pixels[c], out=out[n, c])
        return torch.from_numpy(out)


def planes(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """An RGB image as (3, H, W) uint8 channel planes (planes are returned as they are)."""
    if _is_planes(image):
        return image
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))


def to_image(image: Image.Image | torch.Tensor) -> Image.Image:
    """`planes` back as the RGB image (a PIL image is returned as it is), for the processor's own path."""
    return Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB") if _is_planes(image) else image


def hand_over(items: list[dict]) -> list[dict]:
    """A data-loader batch of items as workers hand it over: RGB images as `planes` (collate_fn)."""
    for item in items:
        image = item.get("image")
        if isinstance(image, Image.Image) and image.mode == "RGB":
            item["image"] = planes(image)
    return items


def _is_planes(image) -> bool:
    return isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3


def _size(image) -> tuple[int, int]:
    """(width, height), as PIL gives it."""
    return (image.shape[2], image.shape[1]) if _is_planes(image) else image.size
