"""Data path: manifests, image geometry, bad images, over-long targets, augmentation."""

import json

import numpy as np
import pytest
from PIL import Image

import docvlm.tasks as tasks
from docvlm.data import DocDataModule
from docvlm.images import Augment, BadImageError, fit, load_image
from docvlm.items import Source
from docvlm.tasks.manifest import ManifestError, read_manifest


def write_manifest(folder, rows, name="data.jsonl"):
    path = folder / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def image_folder(tmp_path):
    for name in ("a", "b", "c"):
        Image.new("RGB", (300, 100), "white").save(tmp_path / f"{name}.png")
    return tmp_path


def module(processor, **kwargs):
    dm = DocDataModule(tasks.get("text"), augment=None, **kwargs)
    dm.processor = processor
    return dm


def test_manifest_jsonl_and_csv(image_folder):
    rows = [{"image": "a.png", "target": "alpha"}, {"image": "b.png", "target": "beta", "prefix": "en"}]
    samples = read_manifest(write_manifest(image_folder, rows))
    assert [s.target for s in samples] == ["alpha", "beta"]
    assert samples[1].prefix == "en" and samples[0].image == image_folder / "a.png"
    (image_folder / "m.csv").write_text("image,target\na.png,alpha\nc.png,\"x, y\"\n")
    assert [s.target for s in read_manifest(image_folder / "m.csv")] == ["alpha", "x, y"]
    assert tasks.get("text").prompt(samples[1]) == "ocr en"


def test_malformed_manifest_line_is_named(image_folder):
    path = image_folder / "bad.jsonl"
    path.write_text('{"image": "a.png", "target": "x"}\n{"image": "b.png", "target": \n')
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2: not valid JSON"):
        read_manifest(path)
    path.write_text('{"image": "a.png", "target": "x"}\n\n{"target": "y"}\n')
    with pytest.raises(ManifestError, match=r"bad\.jsonl:3: row has no 'image'"):
        read_manifest(path)
    (image_folder / "bad.csv").write_text("image,target\na.png,x,extra\n")
    with pytest.raises(ManifestError, match=r"bad\.csv:2: more fields"):
        read_manifest(image_folder / "bad.csv")


def test_pad_keeps_aspect_with_white_and_stretch_does_not():
    image = Image.new("RGB", (400, 100), "black")
    padded = np.asarray(fit(image, 64, "pad"))
    assert padded.shape == (64, 64, 3)
    assert (padded[0] == 255).all() and (padded[-1] == 255).all()  # white bands above and below
    assert (padded[32] < 10).all()  # the black content in the middle, full width
    stretched = np.asarray(fit(image, 64, "stretch"))
    assert (stretched < 10).all()


def test_corrupt_and_missing_images_are_named(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(BadImageError, match="corrupt.png"):
        load_image(tmp_path / "corrupt.png")
    with pytest.raises(BadImageError, match="missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
    good = Image.new("RGB", (64, 64), "white")
    good.save(tmp_path / "truncated.png")
    data = (tmp_path / "truncated.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="truncated.png"):
        load_image(tmp_path / "truncated.png")


def test_bad_image_in_a_batch_errors_or_is_skipped(image_folder, tiny_small):
    """An image whose header is bad is found in `setup`; one that fails only when decoded (truncated
    data) when its batch is loaded, raised in the main process. Either way the manifest line is named."""
    _, processor = tiny_small
    (image_folder / "broken.png").write_bytes(b"not an image")
    data = (image_folder / "c.png").read_bytes()
    (image_folder / "cut.png").write_bytes(data[: len(data) // 2])
    rows = [{"image": "a.png", "target": "x"}, {"image": "broken.png", "target": "y"},
            {"image": "b.png", "target": "z"}]
    manifest = write_manifest(image_folder, rows)
    dm = module(processor, train=Source(path=str(manifest)), batch_size=3)
    with pytest.raises(BadImageError,
                       match=rf"{manifest}:2: .*broken\.png: not an image file.*data\.on_bad_image: skip"):
        dm.setup("fit")
    rows[1]["image"] = "cut.png"
    manifest = write_manifest(image_folder, rows)
    dm = module(processor, train=Source(path=str(manifest)), batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with pytest.raises(BadImageError, match=rf"{manifest}:2: .*cut\.png: .*data\.on_bad_image: skip"):
        dm.on_before_batch_transfer(batch, 0)
    dm = module(processor, train=Source(path=str(manifest)), batch_size=3, on_bad_image="skip")
    dm.setup("fit")
    batch = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["input_ids"].shape[0] == 2
    assert len(batch["skipped"]) == 1 and f"{manifest}:2: " in batch["skipped"][0] and "cut.png" in batch["skipped"][0]


def test_overlong_targets_are_skipped_or_truncated_and_counted(image_folder, tiny_small):
    _, processor = tiny_small
    rows = [{"image": "a.png", "target": "short"}, {"image": "b.png", "target": "x" * 300}]
    manifest = str(write_manifest(image_folder, rows))
    dm = module(processor, train=Source(path=manifest))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 1 and dm.overlength_counts["train"] == 1
    dm = module(processor, train=Source(path=manifest), overlength="truncate", batch_size=2)
    dm.setup("fit")
    assert dm.overlength_counts["train"] == 1
    limit = dm.task.max_target_tokens
    assert dm.datasets["train"].targets[1] == "x" * limit  # cut to the token budget
    batch = next(iter(dm.train_dataloader()))
    row = [i for i, t in enumerate(batch["target"]) if t.startswith("x")][0]
    assert int((batch["labels"][row] != -100).sum()) == limit  # no <eos> learned after a cut
    other = 1 - row
    assert batch["labels"][other, -1] == processor.tokenizer.eos_token_id


def test_augmentation_changes_pixels_but_keeps_size():
    image = Image.new("RGB", (128, 128), "white")
    image.paste(Image.new("RGB", (40, 40), "black"), (40, 40))
    pipeline = Augment(p=1.0, rotate=5).build()
    out = np.asarray(pipeline(image=np.asarray(image))["image"])
    assert out.shape == (128, 128, 3)
    assert not np.array_equal(out, np.asarray(image))


def test_validation_data_is_not_augmented(tiny_small):
    _, processor = tiny_small
    dm = DocDataModule(tasks.get("text", synthetic_size=224), train=Source(synthetic=2), val=Source(synthetic=2),
                       augment=Augment(p=1.0))
    dm.processor = processor
    dm.setup("fit")
    assert dm.datasets["val"].augment is None and dm.datasets["train"].augment is not None
    a, b = dm.datasets["val"][0]["image"], dm.datasets["val"][0]["image"]
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_source_needs_data():
    with pytest.raises(ValueError, match="path"):
        Source().samples(tasks.get("text"))


def test_metrics_are_reachable_by_name_and_load_lazily():
    import subprocess
    import sys

    table = "'<html><body><table><tr><td>a</td></tr></table></body></html>'"
    code = ("import sys, docvlm.tasks, docvlm.metrics as M; assert 'rdkit' not in sys.modules, 'rdkit loaded'; "
            f"assert M.cer(['ab'], ['ab']) == 0.0 and M.teds({table}, {table}) == 1.0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Once every submodule is imported (which binds each as a package attribute), every name is still the function.
    code = ("import importlib, pkgutil, docvlm.metrics as M; "
            "[importlib.import_module(f'docvlm.metrics.{m.name}') for m in pkgutil.iter_modules(M.__path__)]; "
            "bad = [n for n in M.__all__ if not callable(getattr(M, n))]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import docvlm.metrics

    with pytest.raises(AttributeError):
        docvlm.metrics.no_such_metric


def test_every_metric_module_lists_its_names_and_each_is_reached_once():
    """`docvlm.metrics` finds a module's names in its `__all__` (no list to keep by hand): every module has one,
    each listed name exists there, and no name is listed by two modules."""
    import importlib
    import pkgutil

    import docvlm.metrics

    listed = []
    for module in pkgutil.iter_modules(docvlm.metrics.__path__):
        imported = importlib.import_module(f"docvlm.metrics.{module.name}")
        assert "__all__" in vars(imported), f"docvlm/metrics/{module.name}.py has no __all__"
        listed += imported.__all__
        assert all(getattr(docvlm.metrics, name) is getattr(imported, name) for name in imported.__all__), module.name
    assert sorted(listed) == docvlm.metrics.__all__


def test_targets_with_coordinates_get_no_geometric_augmentation():
    located = DocDataModule(tasks.get("tables", coords=True), augment=Augment(rotate=3, scale=0.1, blur=False))
    assert (located.augment.rotate, located.augment.scale) == (0.0, 0.0)
    assert "Affine" not in [type(t).__name__ for t in located.augment.build().transforms]
    plain = DocDataModule(tasks.get("tables"), augment=Augment(rotate=3, scale=0.1))
    assert (plain.augment.rotate, plain.augment.scale) == (3, 0.1)
    assert "Affine" in [type(t).__name__ for t in plain.augment.build().transforms]
