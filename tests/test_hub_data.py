"""Data from Hugging Face `datasets` (the real library; small datasets saved at test time): every task
reads its own samples back, column mappings, errors naming the row and column, streaming through the
data module (workers, limit, length limit, bad images) giving what the list path gives, and a CLI fit."""

import io
import json
import pickle
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import docvlm.tasks as tasks
from docvlm.data import DocDataModule
from docvlm.errors import DataError
from docvlm.images import BadImageError, load_image
from docvlm.items import Source


def save(folder, rows: dict) -> str:
    """`rows` (column -> values) saved with `save_to_disk`; PIL images become the `Image` feature."""
    data = datasets.Dataset.from_dict(rows)
    if "image" in rows and not isinstance(data.features["image"], datasets.Image):  # {bytes, path} cells
        data = data.cast_column("image", datasets.Image())
    data.save_to_disk(str(folder))
    return str(folder)


def pixels(image) -> np.ndarray:
    return np.asarray(load_image(image))


def noise(seed: int, size=(40, 30)) -> Image.Image:
    """A picture unlike any other seed's, so that a row's image cannot pass for another's."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


@pytest.mark.parametrize("name", tasks.names())
def test_every_task_reads_its_own_samples_back_from_a_saved_dataset(name, tmp_path):
    task = tasks.get(name)
    originals = list(task.synthesize(3, seed=5))
    images = [load_image(s.image) for s in originals]
    folder = save(tmp_path / "ds", {"image": images, "target": [s.target for s in originals],
                                    "prefix": [s.prefix for s in originals], "id": [s.id for s in originals]})
    samples = Source(dataset=folder).samples(task)
    assert [s.id for s in samples] == [s.id for s in originals]
    assert [s.target for s in samples] == [s.target for s in originals]
    assert [task.to_target(s) for s in samples] == [task.to_target(s) for s in originals]
    assert [task.prompt(s) for s in samples] == [task.prompt(s) for s in originals]
    assert [s.source for s in samples] == [f"{folder} row {i}" for i in range(3)]
    for sample, image in zip(samples, images):
        assert callable(sample.image)  # lazy: decoded only when used
        assert np.array_equal(pixels(sample.image), np.asarray(image))


def test_samples_hold_no_pixels_and_pickle_small(tmp_path):
    images = [noise(i, (200, 200)) for i in range(6)]
    folder = save(tmp_path / "ds", {"image": images, "target": [f"t{i}" for i in range(6)]})
    samples = Source(dataset=folder).samples(tasks.get("text"))
    assert len(pickle.dumps(samples)) < 200 * 200 * 3  # less than one image's raw bytes for all six rows
    assert np.array_equal(pixels(pickle.loads(pickle.dumps(samples))[4].image), np.asarray(images[4]))


def test_a_column_mapping_and_a_split_of_a_dataset_dict(tmp_path):
    def part(offset):
        rows = {"picture": [noise(offset + i) for i in range(3)], "text": [f"line {offset + i}" for i in range(3)],
                "lang": ["en", "fr", ""], "key": [f"k{offset + i}" for i in range(3)]}
        return datasets.Dataset.from_dict(rows, features=datasets.Features(
            {"picture": datasets.Image(), "text": datasets.Value("string"), "lang": datasets.Value("string"),
             "key": datasets.Value("string")}))

    datasets.DatasetDict({"train": part(0), "test": part(10)}).save_to_disk(str(tmp_path / "dd"))
    mapping = {"image": "picture", "target": "text", "prefix": "lang", "id": "key"}
    task = tasks.get("text")
    samples = Source(dataset=str(tmp_path / "dd"), split="test", columns=mapping).samples(task)
    assert [(s.id, s.target, task.prompt(s)) for s in samples] == [
        ("k10", "line 10", "ocr en"), ("k11", "line 11", "ocr fr"), ("k12", "line 12", "ocr")]
    assert np.array_equal(pixels(samples[2].image), np.asarray(noise(12)))
    assert samples[0].source == f"{tmp_path / 'dd'} [test] row 0"
    unlabelled = Source(dataset=str(tmp_path / "dd"), split="test", columns={**mapping, "target": None}).samples(task)
    assert [s.target for s in unlabelled] == [None, None, None]
    with pytest.raises(DataError, match=r"no split 'val'; it has \['test', 'train'\]"):
        Source(dataset=str(tmp_path / "dd"), split="val", columns=mapping).samples(task)
    with pytest.raises(DataError, match=r"name a split; it has \['test', 'train'\]"):
        Source(dataset=str(tmp_path / "dd"), columns=mapping).samples(task)


def test_a_missing_column_names_the_dataset_row_and_column(tmp_path, tiny_small):
    folder = save(tmp_path / "ds", {"image": [noise(0)], "target": ["a"]})
    with pytest.raises(DataError, match=rf"{folder} row 0: no column 'text' \(the dataset has \['image', 'target'\]\)"):
        Source(dataset=folder, columns={"target": "text"}).samples(tasks.get("text"))
    with pytest.raises(DataError, match=rf"{folder} row 0: no column 'picture'"):
        Source(dataset=folder, columns={"image": "picture"}).samples(tasks.get("text"))
    dm = DocDataModule(tasks.get("text"), train=Source(dataset=folder, streaming=True, columns={"target": "text"}),
                       augment=None)
    dm.processor = tiny_small[1]
    with pytest.raises(DataError, match=rf"{folder} row 0: no column 'text'"):
        dm.setup("fit")  # a stream's first row is read before training


def test_an_unknown_dataset_and_a_missing_library_are_data_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no-such/dataset: cannot load"):
        Source(dataset="no-such/dataset", split="train").samples(tasks.get("text"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: cannot load"):
        Source(dataset=str(tmp_path / "empty")).samples(tasks.get("text"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError, match=r"pip install 'docvlm\[hub\]'"):
        Source(dataset=str(tmp_path / "empty")).samples(tasks.get("text"))


def test_pubtabnet_records_give_the_jsonl_readers_targets(data_dir, tmp_path):
    examples = data_dir / "pubtabnet" / "examples"
    rows = [json.loads(line) for line in (examples / "PubTabNet_Examples.jsonl").read_text().splitlines()][:4]
    folder = save(tmp_path / "ds", {"image": [Image.open(examples / r["filename"]) for r in rows],
                                    "html": [r["html"] for r in rows], "id": [r["filename"] for r in rows]})
    for options in ({}, {"coords": True}, {"target_format": "otsl"}):
        task = tasks.get("tables", **options)
        expected = {s.id: s.target for s in task.read(examples, "train")}
        samples = Source(dataset=folder).samples(task)
        assert [s.target for s in samples] == [expected[r["filename"]] for r in rows]
        assert ('coords="<loc' in samples[0].target) == bool(options.get("coords"))
    renamed = save(tmp_path / "renamed",
                   {"image": [Image.open(examples / rows[0]["filename"])], "ann": [rows[0]["html"]]})
    expected = {s.id: s.target for s in tasks.get("tables").read(examples, "train")}
    renamed_samples = Source(dataset=renamed, columns={"html": "ann"}).samples(tasks.get("tables"))
    assert renamed_samples[0].target == expected[rows[0]["filename"]]
    broken = save(tmp_path / "broken", {"image": [noise(0)], "html": [{"structure": {"tokens": ["<td>"]}}]})
    with pytest.raises(DataError, match=rf"{broken} row 0: column 'html': KeyError: 'cells'"):
        Source(dataset=broken).samples(tasks.get("tables"))


def test_mimic_style_sections_give_the_readers_target_and_prompt(tmp_path):
    from docvlm.converters import reports

    task = tasks.get("radiology")
    text = "INDICATION: Cough.\n\nFINDINGS: Lungs are clear.\nNo effusion.\n\nIMPRESSION: Normal chest."
    report = reports.parse_report(text)
    folder = save(tmp_path / "ds", {"image": [noise(0), noise(1)], "findings": [report.findings, ""],
                                    "impression": [report.impression, "No change."],
                                    "indication": [report.indication, None]})
    first, second = Source(dataset=folder).samples(task)
    assert first.target == reports.to_target(report)
    assert first.target == "FINDINGS: Lungs are clear. No effusion. IMPRESSION: Normal chest."
    assert task.prompt(first) == "report indication: Cough." and task.prompt(second) == "report"
    assert second.target == "IMPRESSION: No change."
    whole = save(tmp_path / "whole", {"image": [noise(0)], "report": [text]})
    assert Source(dataset=whole).samples(task)[0].target == first.target


# ---- streaming through the data module ---------------------------------------------------------------

def text_dataset(folder, n=7, long=None):
    targets = [f"line {i}" for i in range(n)]
    if long is not None:
        targets[long] = "x" * 300
    return save(folder, {"image": [noise(i) for i in range(n)], "target": targets, "id": [f"r{i}" for i in range(n)]})


def module(processor, **kwargs):
    dm = DocDataModule(tasks.get("text"), augment=None, **kwargs)
    dm.processor = processor
    return dm


def batches(loader):
    """{id: (target, pixel_values)} over a loader, and how often each id came."""
    seen, counts = {}, Counter()
    for batch in loader:
        for i, id_ in enumerate(batch["id"]):
            counts[id_] += 1
            seen[id_] = (batch["target"][i], batch["pixel_values"][i])
    return seen, counts


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_gives_the_same_samples_as_the_list_path(tmp_path, tiny_small, workers):
    folder = text_dataset(tmp_path / "ds")
    listed = module(tiny_small[1], val=Source(dataset=folder), train=Source(dataset=folder), batch_size=3)
    streamed = module(tiny_small[1], val=Source(dataset=folder, streaming=True),
                      train=Source(dataset=folder, streaming=True), batch_size=3, num_workers=workers)
    listed.setup("fit")
    streamed.setup("fit")
    assert not hasattr(streamed.datasets["val"], "samples")  # nothing materialised
    for loader in ("val_dataloader", "train_dataloader"):
        expected, _ = batches(getattr(listed, loader)())
        got, counts = batches(getattr(streamed, loader)())
        assert set(counts) == set(expected) and set(counts.values()) == {1}  # each sample once
        for id_, (target, image) in expected.items():
            assert got[id_][0] == target and torch.equal(got[id_][1], image)


def test_streaming_keeps_limit_length_limit_and_bad_image_policy(tmp_path, tiny_small):
    processor = tiny_small[1]
    folder = text_dataset(tmp_path / "ds", n=5, long=1)
    limited = module(processor, val=Source(dataset=folder, streaming=True, limit=3), num_workers=2, batch_size=2)
    limited.setup("validate")
    assert batches(limited.val_dataloader())[1] == Counter({"r0": 1, "r1": 1, "r2": 1})

    skip = module(processor, train=Source(dataset=folder, streaming=True), batch_size=5)
    skip.setup("fit")
    assert set(batches(skip.train_dataloader())[1]) == {"r0", "r2", "r3", "r4"}  # the over-long r1 skipped
    cut = module(processor, train=Source(dataset=folder, streaming=True), batch_size=5, overlength="truncate")
    cut.setup("fit")
    batch = next(iter(cut.train_dataloader()))
    row = batch["id"].index("r1")
    limit = cut.task.max_target_tokens
    assert batch["target"][row] == "x" * limit and int((batch["labels"][row] != -100).sum()) == limit  # no <eos>
    other = 1 if row != 1 else 0
    assert batch["labels"][other, -1] == processor.tokenizer.eos_token_id

    good = io.BytesIO()
    noise(0).save(good, format="PNG")
    images = [{"bytes": good.getvalue(), "path": None}, {"bytes": b"not an image", "path": None}]
    bad = save(tmp_path / "bad", {"image": images,
                                  "target": ["a", "b"], "id": ["good", "bad"]})
    dm = module(processor, val=Source(dataset=bad, streaming=True), batch_size=2)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    with pytest.raises(BadImageError, match=rf"{bad} shard 1 row 0: image: not an image file.*on_bad_image: skip"):
        dm.on_before_batch_transfer(batch, 0)
    dm = module(processor, val=Source(dataset=bad, streaming=True), batch_size=2, on_bad_image="skip")
    dm.setup("validate")
    batch = dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert batch["id"] == ["good"] and len(batch["skipped"]) == 1


def test_a_streamed_train_split_is_shuffled_each_epoch(tmp_path, tiny_small):
    folder = text_dataset(tmp_path / "ds", n=12)
    dm = module(tiny_small[1], train=Source(dataset=folder, streaming=True), val=Source(dataset=folder, streaming=True),
                batch_size=12)
    dm.setup("fit")
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    epochs = [next(iter(loader))["id"] for _ in range(2)]
    ordered = [f"r{i}" for i in range(12)]
    assert sorted(epochs[0]) == sorted(ordered) and epochs[0] != ordered and epochs[0] != epochs[1]
    assert next(iter(dm.val_dataloader()))["id"] == ordered  # validation keeps the dataset's order


def test_streamed_parts_share_the_rows_once(tmp_path):
    folder = text_dataset(tmp_path / "ds", n=9)
    task = tasks.get("text")
    whole = [s.id for _, s in Source(dataset=folder, streaming=True).stream(task)]
    assert whole == [f"r{i}" for i in range(9)]
    parts = [[s.id for _, s in Source(dataset=folder, streaming=True).stream(task, part, 4, seed=1)]
             for part in range(4)]
    assert sorted(i for p in parts for i in p) == sorted(whole) and all(parts)  # 4 parts (2 ranks x 2 workers)
    indices = [i for part in range(4) for i, _ in Source(dataset=folder, streaming=True).stream(task, part, 4)]
    assert len(set(indices)) == 9


@pytest.mark.slow
def test_fit_through_the_cli_on_saved_datasets(tmp_path):
    from docvlm.cli import main

    folder = text_dataset(tmp_path / "ds", n=6)
    config = str(Path(__file__).resolve().parents[1] / "configs/tiny/text.yaml")
    cli = main(["fit", "--config", config, "--trainer.max_steps=2", "--trainer.val_check_interval=2",
                f"--trainer.default_root_dir={tmp_path / 'run'}", "--model.decoding.max_new_tokens=4",
                "--data.train.synthetic=0", f"--data.train.dataset={folder}", "--data.train.streaming=true",
                "--data.val.synthetic=0", f"--data.val.dataset={folder}", "--data.val.limit=3", "--data.batch_size=2"])
    assert cli.trainer.global_step == 2
    assert "val/cer" in cli.trainer.logged_metrics
    assert len(cli.datamodule.datasets["val"]) == 3


def test_a_target_column_of_integers_names_the_dataset_row_and_column(tmp_path):
    """Through `docvlm fit`, as a user meets it: one line naming the row, before any training step."""
    from docvlm.cli import main

    folder = save(tmp_path / "ds", {"image": [noise(0), noise(1)], "target": [3, 4]})
    with pytest.raises(DataError, match=rf"^{folder} row 0: column 'target' \(the target\) holds int 3, not text$"):
        main(["fit", "--config", str(Path(__file__).resolve().parents[1] / "configs/tiny/text.yaml"),
              "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path / 'run'}", "--data.train.synthetic=0",
              f"--data.train.dataset={folder}", "--data.val=null"])
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").rglob("*.ckpt"))
