"""`load_image`: every image mode Pillow reads reaches the model as the scan looks, and every way a file
can fail (corrupt, truncated, a decompression bomb, a FIFO, a pickle named .png) is a `BadImageError`
naming it. Files are written with Pillow and read back through the real loader."""

import io
import os
import pickle
import random
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from docvlm.images import BadImageError, check_image, load_image
from docvlm.pages import Page


def pixels(path, **kwargs) -> np.ndarray:
    image = load_image(path, **kwargs)
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def grey(values) -> np.ndarray:
    """The RGB pixels of a grey image with these 8-bit values."""
    return np.repeat(np.asarray(values, dtype=int)[..., None], 3, axis=-1)


def test_16_bit_greyscale_is_scaled_by_its_range_not_clipped_to_white(tmp_path):
    values = np.array([[0, 257, 32896, 65535], [1000, 20000, 40000, 60000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode == "I;16"
    assert (pixels(tmp_path / "scan.png") == grey(np.rint(values.astype(float) * 255 / 65535))).all()
    Image.fromarray(values).save(tmp_path / "scan.tif")  # the same through TIFF
    assert (pixels(tmp_path / "scan.tif") == grey(np.rint(values.astype(float) * 255 / 65535))).all()


def _png_16(path, values: np.ndarray, significant_bits: int | None = None) -> None:
    """A 16-bit greyscale PNG, with an `sBIT` chunk before the image data when `significant_bits` is given."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if significant_bits is not None:
        info.add(b"sBIT", bytes([significant_bits]))
    Image.fromarray(values).save(path, pnginfo=info)
    assert Image.open(path).mode == "I;16" and (significant_bits is None) == (b"sBIT" not in path.read_bytes())


def test_a_12_bit_scan_in_a_16_bit_png_is_scaled_by_its_bit_depth_not_left_almost_black(tmp_path):
    """Raw 12-bit samples (white 4095) read over 0-4095, whether the file declares `sBIT` 12 or nothing
    (its data then fits in 12 bits); a conforming writer's samples scaled to 16 bits keep 0-65535; an `sBIT`
    the data exceeds is not believed; TIFF alike."""
    raw = np.array([[4095, 4095, 2048], [0, 1000, 4095]], dtype=np.uint16)  # a page: white, grey, ink
    expected = grey(np.rint(raw.astype(float) * 255 / 4095))
    for name, bits in (("plain.png", None), ("sbit.png", 12), ("lying.png", 10)):
        _png_16(tmp_path / name, raw, bits)
        assert (pixels(tmp_path / name) == expected).all(), name
    Image.fromarray(raw).save(tmp_path / "raw.tif")
    assert (pixels(tmp_path / "raw.tif") == expected).all()
    scaled = (raw.astype(np.uint32) * 65535 // 4095).astype(np.uint16)  # what the PNG specification asks for
    _png_16(tmp_path / "scaled.png", scaled, 12)
    assert (pixels(tmp_path / "scaled.png") == grey(np.rint(scaled.astype(float) * 255 / 65535))).all()
    assert pixels(tmp_path / "sbit.png")[0, 0, 0] == 255  # the background is white (it was 16 of 255)


def test_32_bit_integer_and_float_greyscale(tmp_path):
    values = np.array([[0, 65535], [32896, 1000]], dtype=np.int32)  # 16-bit data in an `I` image
    Image.fromarray(values).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert (pixels(tmp_path / "i.tif") == grey(np.rint(values.astype(float) * 255 / 65535))).all()
    signed = np.array([[-100, 0], [60, 300]], dtype=np.int32)  # outside 0-65535: its own range
    Image.fromarray(signed).save(tmp_path / "signed.tif")
    assert (pixels(tmp_path / "signed.tif") == grey([[0, 64], [102, 255]])).all()

    fractions = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)  # 0-1: fractions of white
    Image.fromarray(fractions).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert (pixels(tmp_path / "f.tif") == grey([[0, 64], [128, 255]])).all()
    levels = np.array([[0.0, 12.4], [200.0, 255.0]], dtype=np.float32)  # 0-255: as they are
    Image.fromarray(levels).save(tmp_path / "levels.tif")
    assert (pixels(tmp_path / "levels.tif") == grey([[0, 12], [200, 255]])).all()
    counts = np.array([[1000.0, 2000.0], [3000.0, np.nan]], dtype=np.float32)  # anything else: min to max
    Image.fromarray(counts).save(tmp_path / "counts.tif")
    assert (pixels(tmp_path / "counts.tif") == grey([[0, 128], [255, 255]])).all()


def test_transparency_is_composited_on_white(tmp_path):
    la = Image.new("LA", (3, 1))
    la.putdata([(0, 0), (0, 255), (0, 128)])  # transparent, opaque black, half-transparent black
    la.save(tmp_path / "la.png")
    assert (pixels(tmp_path / "la.png") == grey([[255, 0, 127]])).all()

    rgba = Image.new("RGBA", (2, 1))
    rgba.putdata([(0, 0, 0, 0), (255, 0, 0, 255)])
    rgba.save(tmp_path / "rgba.png")
    assert (pixels(tmp_path / "rgba.png") == [[[255, 255, 255], [255, 0, 0]]]).all()

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 0, 255])  # index 0 black, 1 blue
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png", transparency=0)  # black is the transparent entry
    palette.save(tmp_path / "p.gif", transparency=0)
    for name in ("p.png", "p.gif"):
        assert (pixels(tmp_path / name) == [[[255, 255, 255], [0, 0, 255]]]).all(), name

    keyed = Image.fromarray(np.array([[0, 10, 200]], dtype=np.uint8))
    keyed.save(tmp_path / "keyed.png", transparency=0)  # a greyscale PNG with a transparent value (tRNS)
    assert (pixels(tmp_path / "keyed.png") == grey([[255, 10, 200]])).all()


def test_cmyk_one_bit_and_exif_rotation(tmp_path):
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)])
    cmyk.save(tmp_path / "cmyk.tif")
    assert (pixels(tmp_path / "cmyk.tif") == [[[255, 255, 255], [255, 0, 0], [0, 0, 0]]]).all()

    bits = Image.new("1", (2, 1))
    bits.putdata([0, 1])
    bits.save(tmp_path / "bits.png")
    assert (pixels(tmp_path / "bits.png") == grey([[0, 255]])).all()

    upright = np.array([[0, 50, 100], [150, 200, 250]], dtype=np.uint8)  # 2 rows x 3 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; display rotated 90 degrees clockwise
    Image.fromarray(upright).save(tmp_path / "turned.png", exif=exif)
    assert (pixels(tmp_path / "turned.png") == grey(np.rot90(upright, k=-1))).all()


def test_tiff_pages_get_the_same_conversion_as_single_images(tmp_path):
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.new("RGB", (4, 4), "red").save(tmp_path / "pages.tif", save_all=True, append_images=[Image.fromarray(values)])
    page = Page(tmp_path / "pages.tif", 2, "tiff", "pages-p2")
    assert (np.asarray(page.load()).astype(int) == grey(np.rint(values.astype(float) * 255 / 65535))).all()
    with pytest.raises(BadImageError, match=r"pages\.tif, page 3"):
        Page(tmp_path / "pages.tif", 3, "tiff", "pages-p3").load()


def png(width: int, height: int, body: bytes = b"") -> bytes:
    """A PNG whose header claims width x height greyscale pixels, followed by `body`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + body + chunk(b"IEND", b"")


def test_decompression_bombs_are_bad_images_naming_the_file(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png(100_000, 100_000))  # 10^10 pixels: Pillow raises
    with pytest.raises(BadImageError, match=r"bomb\.png: too large to decode"):
        load_image(tmp_path / "bomb.png")
    (tmp_path / "big.png").write_bytes(png(10_000, 10_000))  # 1x-2x the limit: Pillow only warns
    with pytest.raises(BadImageError, match=r"big\.png: too large to decode"):
        load_image(tmp_path / "big.png")


def test_check_image_reads_the_size_from_the_header_only(tmp_path):
    (tmp_path / "cut.png").write_bytes(png(300, 200, b""))  # a header and no pixel data
    assert check_image(tmp_path / "cut.png") == (300, 200)
    with pytest.raises(BadImageError, match=r"cut\.png: truncated image|cut\.png: corrupt image"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "bomb.png").write_bytes(png(100_000, 100_000))
    with pytest.raises(BadImageError, match=r"manifest\.jsonl:4: too large to decode"):
        check_image(tmp_path / "bomb.png", name="manifest.jsonl:4")


def test_the_pixel_limit_holds_for_images_handed_over_decoded(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(BadImageError, match=r"train\.parquet:3: image: 100x100 pixels is over the limit of 5000"):
        load_image(lambda: Image.new("L", (100, 100)), name="train.parquet:3: image")


def test_every_pillow_failure_is_a_bad_image_error(tmp_path):
    """Hostile and damaged files: a pickle and an EPS (Ghostscript would run it) named .png, and byte
    mutations of small PNG, GIF, TIFF, BMP, JPEG and WebP files: each loads or raises `BadImageError`."""
    (tmp_path / "pickle.png").write_bytes(pickle.dumps({"not": "an image"}))
    (tmp_path / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    for name in ("pickle.png", "eps.png"):
        with pytest.raises(BadImageError, match=rf"{name}: not an image file"):
            load_image(tmp_path / name)
    sources = {}
    formats = (("PNG", "png"), ("GIF", "gif"), ("TIFF", "tif"), ("BMP", "bmp"), ("JPEG", "jpg"), ("WEBP", "webp"))
    for fmt, suffix in formats:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 8), "white").save(buffer, fmt)
        sources[suffix] = buffer.getvalue()
    rng = random.Random(0)
    failures = 0
    for i in range(300):
        suffix, data = rng.choice(sorted(sources.items()))
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(len(data), 64))] = rng.randrange(256)  # headers: where parsers trip
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        path = tmp_path / f"mutant{i}.{suffix}"
        path.write_bytes(bytes(data))
        try:
            assert load_image(path).mode == "RGB"
        except BadImageError as e:
            assert str(e).startswith(f"{path}: "), e
            failures += 1
    assert failures > 50


def test_a_lazily_decoded_image_is_named_by_its_sample(tmp_path):
    """Readers of parquet files hand a callable; its Pillow error names what the caller says."""
    with pytest.raises(BadImageError, match=r"train\.parquet:7: not an image file"):
        load_image(lambda: Image.open(io.BytesIO(b"junk")), name="train.parquet:7")
    values = np.array([[0, 65535]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    assert (np.asarray(load_image(lambda: io.BytesIO(buffer.getvalue()))).astype(int) == grey([[0, 255]])).all()


def finishes(call, seconds: float = 10.0):
    """The result of `call()`, or a failure if it blocks (the thread is then left waiting on the FIFO)."""
    result = {}

    def target():
        try:
            result["value"] = call()
        except BaseException as e:  # noqa: BLE001  handed to the test
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} blocked"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_special_files_are_never_opened(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(BadImageError, match=r"fifo\.png: a FIFO, not a regular file"):
        finishes(lambda: load_image(tmp_path / "fifo.png"))
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    with pytest.raises(BadImageError, match=r"dangling\.png: a link to a missing file"):
        load_image(tmp_path / "dangling.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(BadImageError, match=r"folder\.png: a folder, not a regular file"):
        load_image(tmp_path / "folder.png")
    with pytest.raises(BadImageError, match="/dev/zero: a character device"):
        finishes(lambda: load_image("/dev/zero"))
    Image.new("L", (2, 2), 7).save(tmp_path / "real.png")
    os.symlink(tmp_path / "real.png", tmp_path / "link.png")  # a link to a regular file is an input
    assert (pixels(tmp_path / "link.png") == grey([[7, 7], [7, 7]])).all()
