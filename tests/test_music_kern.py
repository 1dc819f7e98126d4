"""Kern converter, readers, synthetic scores and exports on the real GrandStaff samples."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image

import docvlm.tasks
from docvlm.converters import kern, kern_render, kern_synth
from docvlm.images import load_image
from docvlm.tasks.manifest import ManifestError


@pytest.fixture(scope="module")
def data(data_dir) -> Path:
    return data_dir / "grandstaff"


def _gt(data: Path) -> list[str]:
    return [(data / "gt" / f"{i}.krn").read_text(encoding="utf-8") for i in range(5)]


def test_normalize_follows_smt():
    raw = "\n**ekern_1.0\t**ekern_1.0\n*clefF4\t*clefG2\n=12\t=12\n4·.·A·-\t8·cc·L\n=-\t=-\n*-\t*-\n \n"
    assert kern.normalize(raw) == "**ekern_1.0\t**ekern_1.0\n*clefF4\t*clefG2\n=\t=\n4.A-\t8ccL\n=-\t=-\n*-\t*-"
    assert kern.normalize(raw, "bekern").split("\n")[3] == "4·.·A·-\t8·cc·L"
    assert kern.to_humdrum(raw).startswith("**kern\t**kern\n")
    with pytest.raises(ValueError, match="unknown kern format"):
        kern.normalize(raw, "mei")


def test_pitch_and_duration():
    assert [kern.note_pitch(t) for t in ("4c", "4cc#", "8B-", "2CC", "4r", "4x")] == [60, 73, 58, 36, None, None]
    assert [kern.token_duration(t) for t in ("4c", "4.c", "24ggLL", "8..d", "1r", "ccq", "0c")] == [
        1, Fraction(3, 2), Fraction(1, 6), Fraction(7, 8), 4, 0, 8
    ]


def test_grandstaff_samples_are_well_formed_and_predictions_are_not(data):
    for text in _gt(data):
        assert kern.check(text) == []
        assert kern.repair(text) == kern.to_humdrum(text)
    problems = kern.check((data / "hyp_cnnt" / "1.krn").read_text())
    assert "line 15: 2 fields for 3 active spines" in problems
    assert "line 16: malformed token '24LL' in spine 2" in problems
    assert kern.check((data / "hyp_cnnt" / "3.krn").read_text())[0] == (
        "line 12: spines reach the barline at different times"
    )


def test_bad_input_is_listed_and_repaired():
    assert kern.scan("") == (None, ["empty transcription"])
    repaired, problems = kern.scan("hello world")
    assert repaired is None and "no data records (notes or rests)" in problems
    ragged = "**kern\t**kern\n4c\t4d\t4e\n4c\n*-\t*-"
    repaired, problems = kern.scan(ragged)
    assert problems == ["line 2: 3 fields for 2 active spines", "line 3: 1 fields for 2 active spines"]
    assert repaired == "**kern\t**kern\n4c\t4d\n4c\t.\n*-\t*-\n"
    repaired, problems = kern.scan("4c\t4dQz\n*\t*v")
    assert problems == [
        "line 1: no exclusive interpretation (**kern) header",
        "line 1: malformed token '4dQz' in spine 2",
        "line 2: spine merge *v in spine 2 has no neighbour to merge with",
        "no *- terminator at the end",
    ]
    assert kern.check(repaired) == []
    split = "**kern\n*^\n4c\t4e\n*v\t*v\n4d\n*-"
    assert kern.check(split) == [] and len(kern.notes(split)) == 3
    assert kern.check("**kern\t**kern\n*^\t*\n4c\t4e\t4g\n*v\t*v\t*v\n4d\n*-") == []  # three *v merge into one


def _notes(text: str) -> Counter:
    return Counter((n.onset, n.midi, n.duration) for n in kern.notes(text))


@pytest.mark.slow
def test_round_trip_through_musicxml(data, tmp_path):
    texts = _gt(data) + [kern_synth.random_kern(random.Random(i)) for i in range(8)]
    for i, text in enumerate(texts):
        path = kern_render.write_musicxml(text, tmp_path / f"{i}.musicxml")
        assert Counter(kern_render.musicxml_notes(path)) == _notes(text), i
    assert len(kern.notes(texts[0])) == 59  # the note_events count of demo_manifest.csv for sample 0


def test_synthetic_kern_is_valid_and_varied():
    texts = [kern_synth.random_kern(random.Random(i)) for i in range(60)]
    assert all(kern.check(t) == [] for t in texts)
    joined = "\n".join(texts)
    for feature in ("*^", "*v", "[", "]", "L", "J", "12", "r", "#", "-", "n", "*k[", "*M6/8", " "):
        assert feature in joined, feature
    assert kern_synth.random_kern(random.Random(5)) == texts[5]
    assert kern_synth.key_signature(-3) == "*k[b-e-a-]" and kern_synth.key_signature(2) == "*k[f#c#]"
    bekern = kern_synth.to_bekern(texts[0])
    assert "·" in bekern and kern.strip_separators(bekern) == texts[0]


def test_render_single_system(data):
    image = kern_render.render(_gt(data)[0])
    assert image.mode == "RGB" and image.width > 3 * image.height  # one wide system, like GrandStaff's
    pixels = image.convert("L").getextrema()
    assert pixels == (0, 255)


def test_task_synthesize_is_deterministic():
    task = docvlm.tasks.get("music")
    a, b = list(task.synthesize(2, seed=3)), list(task.synthesize(2, seed=3))
    assert [s.target for s in a] == [s.target for s in b] and a[0].target != a[1].target
    assert a[0].image().size == b[0].image().size
    bekern = next(iter(docvlm.tasks.get("music", encoding="bekern").synthesize(1, seed=3))).target
    assert kern.strip_separators(bekern) == a[0].target


def _layout(data: Path, root: Path) -> None:
    """The 5 samples in GrandStaff's layout, with partition lists as ScoreVision-MIDI names them."""
    piece = root / "grandstaff" / "beethoven" / "piano-sonatas" / "sonata01-1"
    piece.mkdir(parents=True)
    names = []
    for image in sorted((data / "images").glob("*.jpg")):
        index, stem = image.stem.split("_", 1)
        gt = (data / "gt" / f"{index}.krn").read_text().replace("=\t=", "=7\t=7").replace("4c", "4·c")
        (piece / f"{stem}.bekrn").write_text(gt)
        shutil.copy(image, piece / f"{stem}.jpg")
        names.append(f"Data/grandstaff/beethoven/piano-sonatas/sonata01-1/{stem}.bekrn")
    (root / "partitions").mkdir()
    (root / "partitions" / "test.txt").write_text("\n".join(names[:3]) + "\n")


def test_read_grandstaff_layout(data, tmp_path):
    _layout(data, tmp_path)
    task = docvlm.tasks.get("music")
    test = list(task.read(tmp_path, "test"))
    assert [s.id for s in test] == [
        "grandstaff/beethoven/piano-sonatas/sonata01-1/original_m-0-5",
        "grandstaff/beethoven/piano-sonatas/sonata01-1/original_m-10-15",
        "grandstaff/beethoven/piano-sonatas/sonata01-1/original_m-100-105",
    ]
    assert [s.target for s in test] == [t.strip("\n") for t in _gt(data)[:3]]  # numbers and · dropped
    assert Image.open(test[0].image).size == (839, 256)
    assert len(list(task.read(tmp_path))) == 5
    with pytest.raises(ManifestError, match="val.txt"):
        list(task.read(tmp_path, "val"))
    with pytest.raises(ManifestError, match="_distorted.jpg"):
        list(docvlm.tasks.get("music", distorted=True).read(tmp_path, "test"))
    bekern = list(docvlm.tasks.get("music", encoding="bekern").read(tmp_path, "test"))
    assert "4·c" in bekern[0].target and "=7" not in bekern[0].target


def test_read_parquet_and_manifest(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = (data / "images" / "0_original_m-0-5.jpg").read_bytes()
    (tmp_path / "data").mkdir()
    table = pa.table({"image": [{"bytes": image, "path": None}], "transcription": ["**ekern_1.0\n=3\n4·c\n*-"]})
    pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    task = docvlm.tasks.get("music")
    samples = list(task.read(tmp_path, "test"))
    assert len(samples) == 1 and samples[0].target == "**ekern_1.0\n=\n4c\n*-"
    assert load_image(samples[0].image).size == (839, 256)  # the parquet bytes, decoded by the one loader
    assert len(list(task.read(tmp_path))) == 2
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "x.jpg", "target": "**kern\n=1\n4·c\n*-"}) + "\n")
    assert next(iter(task.read(manifest))).target == "**kern\n=\n4c\n*-"


def test_parquet_images_are_read_from_their_row_group_when_loaded(tmp_path, monkeypatch):
    """The reader holds no image bytes: it reads the transcriptions only, and each sample's image is read
    from its own row group (three of them here) when the sample is loaded, in any order."""
    import io
    import pickle

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from docvlm.images import BadImageError

    pictures = [np.random.default_rng(i).integers(0, 256, (20 + i, 60, 3), dtype=np.uint8) for i in range(7)]
    encoded = []
    for picture in pictures:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    encoded[5] = {"bytes": None, "path": None}
    texts = [f"**kern\n={i}\n4c\n*-" for i in range(7)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": encoded, "transcription": texts}), path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 3
    read_columns = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, columns=None, **kw: read_columns.append(columns)
                        or original(self, i, columns=columns, **kw))
    samples = docvlm.tasks.get("music").read(path)
    assert set(map(tuple, read_columns)) == {("transcription",)}  # no image bytes read up front
    assert len(pickle.dumps(samples)) < min(len(e["bytes"]) for e in encoded if e["bytes"])  # nor held
    assert [s.target for s in samples] == ["**kern\n=\n4c\n*-"] * 7 and samples[6].source == f"{path}:6"
    for i in (6, 0, 4, 1, 3, 2):
        assert np.array_equal(np.asarray(load_image(samples[i].image)), pictures[i])
    with pytest.raises(BadImageError, match=r"train\.parquet:5: .*no image bytes"):
        load_image(samples[5].image, f"{samples[5].source}: image")


def test_parse_and_export(data, tmp_path):
    task = docvlm.tasks.get("music")
    clean = task.parse(_gt(data)[2])
    assert clean.ok
    files = task.export(clean, tmp_path / "clean")
    assert [f.suffix for f in files] == [".krn", ".musicxml", ".mid", ".svg", ".png"]
    assert (tmp_path / "clean.mid").read_bytes()[:4] == b"MThd"
    assert "<svg" in (tmp_path / "clean.svg").read_text()[:500]
    assert Counter(kern_render.musicxml_notes(tmp_path / "clean.musicxml")) == _notes(_gt(data)[2])
    broken = task.parse((data / "hyp_cnnt" / "4.krn").read_text())  # ragged spines: music21 gives up on it
    assert not broken.ok and broken.value is not None and len(broken.problems) > 5
    assert [f.suffix for f in task.export(broken, tmp_path / "broken")][:3] == [".krn", ".musicxml", ".mid"]
    empty = task.parse("")
    assert empty.value is None and empty.problems == ["empty transcription"]
    assert task.export(empty, tmp_path / "empty") == [tmp_path / "empty.krn"]
    assert Image.open(tmp_path / "clean.png").width > 3 * Image.open(tmp_path / "clean.png").height
