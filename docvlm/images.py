"""Image loading and per-task geometry: pad to a white square or stretch, then resize; augmentation.

Everything here runs in the data-loader workers, so it works on numpy arrays and PIL only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network


class BadImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def load_image(source) -> Image.Image:
    """An RGB image from a path, a PIL image or a zero-argument callable returning one."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if callable(source):
        return load_image(source())
    path = Path(source)
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise BadImageError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise BadImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise BadImageError(f"{path}: corrupt image ({e})") from None


def pad_to_square(image: Image.Image, fill=(255, 255, 255)) -> Image.Image:
    """Pad the shorter side with white, centred, as the paper does for tables and molecules."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def fit(image: Image.Image, size: int, mode: str) -> Image.Image:
    """The model's square input: `pad` keeps the aspect ratio, `stretch` does not."""
    if mode == "pad":
        image = pad_to_square(image)
    elif mode != "stretch":
        raise ValueError(f"unknown image mode {mode!r} (expected 'pad' or 'stretch')")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


@dataclass
class Augment:
    """Mild, document-style training augmentation (albumentations); never used for evaluation.

    Attributes:
        p: probability that each transform is applied.
        rotate: largest rotation in degrees (scans are rarely more than a few degrees off).
        scale: largest relative zoom in or out.
        blur: apply Gaussian blur (out-of-focus scans).
        noise: apply Gaussian noise (sensor noise).
        jpeg: apply JPEG compression artefacts.
        brightness_contrast: apply random brightness and contrast changes (faded or dark scans).
    """

    p: float = 0.3
    rotate: float = 2.0
    scale: float = 0.05
    blur: bool = True
    noise: bool = True
    jpeg: bool = True
    brightness_contrast: bool = True

    def build(self):
        """The albumentations pipeline; white fill where geometry exposes new pixels."""
        import albumentations as A

        transforms = []
        if self.rotate or self.scale:
            transforms.append(A.Affine(
                rotate=(-self.rotate, self.rotate), scale=(1 - self.scale, 1 + self.scale),
                fill=255, border_mode=0, p=self.p,
            ))
        if self.blur:
            transforms.append(A.GaussianBlur(blur_limit=(3, 3), p=self.p))
        if self.noise:
            transforms.append(A.GaussNoise(std_range=(0.01, 0.04), p=self.p))
        if self.jpeg:
            transforms.append(A.ImageCompression(quality_range=(60, 95), p=self.p))
        if self.brightness_contrast:
            transforms.append(A.RandomBrightnessContrast(0.1, 0.1, p=self.p))
        return A.Compose(transforms)


def augment(pipeline, image: Image.Image) -> Image.Image:
    return Image.fromarray(pipeline(image=np.asarray(image))["image"])
