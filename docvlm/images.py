"""Image loading and per-task geometry: pad to a white square or stretch, then resize; augmentation.

Everything here runs in the data-loader workers, so it works on numpy arrays and PIL only.
`load_image` is the one loader of training, `convert` and the reports: whatever Pillow reads (16-bit and
float scans, transparency, CMYK, EXIF rotation) reaches the model as the scan looks, and whatever goes
wrong (a corrupt or truncated file, a decompression bomb, a FIFO) is a `BadImageError` naming the file.
"""

from __future__ import annotations

import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from docvlm.errors import DataError, file_kind, special_file_problem

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network

Image.init()
# Every format Pillow reads except EPS, which Pillow renders by running Ghostscript on the file's
# PostScript: a program, not pixels, and nothing to run on an untrusted input named `.png`.
FORMATS = tuple(f for f in Image.ID if f != "EPS")


class BadImageError(DataError):
    """An image that cannot be used; the message names the file and the problem."""


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file, else `BadImageError` naming it
    (`FileNotFoundError` when there is nothing there).

    Checked before opening (a FIFO is never opened) and again on the open descriptor, opened
    non-blocking, so a file swapped for a FIFO in between cannot hang the run either."""
    problem = special_file_problem(path)
    if problem is not None:
        raise BadImageError(f"{path}: {problem}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BadImageError(f"{path}: {file_kind(mode)}, not a regular file")
    return os.fdopen(fd, "rb")


def check_size(image: Image.Image, where: str) -> None:
    """`BadImageError` for a frame over Pillow's `MAX_IMAGE_PIXELS`: a header can claim 100000 x 100000
    pixels in a few bytes, and decoding it would take tens of GB. Pillow checks at `open` and, in some
    formats only, when a later frame is decoded; this holds the limit for every frame of every format,
    before decoding, and for images handed over already decoded (readers' callables)."""
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise BadImageError(f"{where}: {width}x{height} pixels is over the limit of {limit} pixels "
                            "(a decompression bomb, or a scan far larger than the model needs)")


def _to_8bit(image: Image.Image, significant_bits: int | None = None) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8-bit `L`, scaled by its range, never clipped.

    The range is the type's for 16-bit (0-65535, and `I` images whose values fit in it, as 16-bit PNGs
    were opened before Pillow 10), narrowed to the bits the data uses (`_bit_depth`: a 12-bit scan stored
    in 16 bits is 0-4095, and would come out almost black over 0-65535); 0-1 or 0-255 for float images
    whose values fit in one of them; otherwise the image's own minimum to maximum. Pixels equal to a
    `transparency` value become white."""
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        low, high = 0.0, float(2 ** _bit_depth(high, significant_bits) - 1)
    elif image.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    elif image.mode == "F" and low >= 0 and high <= 255:
        low, high = 0.0, 255.0
    values = np.nan_to_num(values, nan=high, posinf=high, neginf=low)
    scaled = np.rint((values - low) * (255.0 / max(high - low, 1e-12)))
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)):
        scaled[np.asarray(image) == transparent] = 255
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def _bit_depth(highest: float, significant_bits: int | None) -> int:
    """The bits of 16-bit samples whose largest value is `highest`: the PNG's `sBIT` when its data fits in
    them (a conforming writer scales b-bit data up to 16 bits; many scanners store it as it is), else the
    fewest of 8, 10, 12, 14 or 16 bits that hold the data, as scanner software reads raw 10/12/14-bit data."""
    if significant_bits is not None and 0 < significant_bits < 16 and highest < 2 ** significant_bits:
        return significant_bits
    return next(bits for bits in (8, 10, 12, 14, 16) if highest < 2 ** bits)


def _png_significant_bits(f: BinaryIO) -> int | None:
    """The greyscale significant bits a PNG's `sBIT` chunk declares (Pillow does not read it), or None;
    only the chunks before the image data are read, from the file's start."""
    f.seek(0)
    if f.read(8) != b"\x89PNG\r\n\x1a\n":
        return None
    for _ in range(64):  # sBIT comes before IDAT, after a few small chunks
        header = f.read(8)
        if len(header) < 8:
            return None
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        if kind == b"IDAT" or length > 1 << 20:
            return None
        data = f.read(length)
        f.seek(4, os.SEEK_CUR)  # CRC
        if kind == b"sBIT" and data:
            return data[0]
    return None


_LAB_TO_SRGB = None


def to_rgb(image: Image.Image, significant_bits: int | None = None) -> Image.Image:
    """`image` as 8-bit RGB, as it looks: EXIF orientation applied, transparency composited on white,
    16-bit and float greyscale scaled by range (`_to_8bit`, with a PNG's `sBIT`), CMYK, palettes, LAB and
    1-bit converted.

    The one conversion of `load_image` and of multi-page TIFF pages, so the same file gives the same
    pixels to training, `convert` and the reports."""
    global _LAB_TO_SRGB
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image, significant_bits)
    if image.mode == "LAB":  # Pillow's plain convert copies the channels
        if _LAB_TO_SRGB is None:
            _LAB_TO_SRGB = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                                   "LAB", "RGB")
        return ImageCms.applyTransform(image, _LAB_TO_SRGB)
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source, name: str | None = None, page: int | None = None) -> Image.Image:
    """An RGB image (`to_rgb`) from a path, an open binary file, a PIL image or a zero-argument callable
    returning one of these; `page` (1-based) picks a frame of a multi-page file.

    Every failure is a `BadImageError` naming `name` (default: the path) and the page: Pillow raises
    many types on hostile or damaged files (OSError, SyntaxError, ValueError, struct.error, EOFError,
    IndexError, TypeError, DecompressionBombError, MemoryError...), and a batch run must be able to
    report and skip them all alike."""
    where = _where(source, name, page)
    with _named(where):
        if callable(source):
            return load_image(source(), where)
        if isinstance(source, Image.Image):
            check_size(source, where)
            return to_rgb(source)
        if isinstance(source, (str, Path)):
            with open_regular(source) as f:
                return _read(f, where, page, load=True)
        return _read(source, where, page, load=True)


def check_image(path: str | Path, name: str | None = None) -> tuple[int, int]:
    """The (width, height) of `path` from its header, or `BadImageError` (as `load_image` words it)
    unless it is a regular file whose header Pillow reads and whose size is within the limit. The pixels
    are not decoded, so a set of 100k images is checked in seconds before training starts."""
    where = _where(path, name, None)
    with _named(where), open_regular(path) as f:
        return _read(f, where, None, load=False)


def _where(source, name: str | None, page: int | None) -> str:
    where = name if name is not None else str(source) if isinstance(source, (str, Path)) else "image"
    return f"{where}, page {page}" if page is not None else where


@contextmanager
def _named(where: str):
    """Whatever goes wrong inside as a `BadImageError` naming `where` (see `load_image`)."""
    try:
        yield
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(f"{where}: no such image file") from None
    except UnidentifiedImageError:
        raise BadImageError(f"{where}: not an image file (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"{where}: too large to decode ({e})") from None
    except MemoryError:
        raise BadImageError(f"{where}: too large to decode (out of memory)") from None
    except EOFError:
        raise BadImageError(f"{where}: truncated image (or no such page)") from None
    except Exception as e:  # noqa: BLE001  see `load_image`
        raise BadImageError(f"{where}: corrupt image ({type(e).__name__}: {e})") from None


def _read(f: BinaryIO, where: str, page: int | None, load: bool):
    """The RGB image (`load`) or only its size, from an open file."""
    with warnings.catch_warnings():  # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(f, formats=FORMATS) as image:
            if page is not None:
                image.seek(page - 1)
            check_size(image, where)
            if not load:
                return image.size
            image.load()
            deep = image.format == "PNG" and image.mode.startswith("I") and f.seekable()
            return to_rgb(image, _png_significant_bits(f) if deep else None)


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

    def build(self, boxes: bool = False):
        """The albumentations pipeline; white fill where geometry exposes new pixels. With `boxes`, it also
        moves `bboxes` (x0, y0, x1, y1 as fractions, one `labels` entry each) with the pixels, clipped to the
        image, and its geometry is box-safe: scale without rotation (a rotated box is no longer tight)."""
        import albumentations as A

        transforms = []
        rotate = 0.0 if boxes else self.rotate
        if rotate or self.scale:
            transforms.append(A.Affine(
                rotate=(-rotate, rotate), scale=(1 - self.scale, 1 + self.scale),
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
        if not boxes:
            return A.Compose(transforms)
        return A.Compose(transforms, bbox_params=A.BboxParams(format="albumentations", label_fields=["labels"],
                                                              clip=True))
