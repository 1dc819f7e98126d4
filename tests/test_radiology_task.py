"""The radiology task: MIMIC-CXR-JPG reader on a layout built here, synthetic films, scoring, and a
few training steps of the tiny model through the CLI."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

import docvlm.tasks
from docvlm.tasks.radiology import MimicLayoutError, RadiologyTask
from helpers import fit_tiny

REPO = Path(__file__).resolve().parents[1]

REPORTS = {
    # study: (subject, report text)
    "50000001": ("10000032", "INDICATION: ___ year old man with cough.\n\nFINDINGS: Lungs are clear.\n\n"
                             "IMPRESSION: No acute process.\n"),
    "50000002": ("10000032", "HISTORY: Chest pain.\nIMPRESSION:\n1. Mild cardiomegaly.\n2. No effusion.\n"),
    "50000003": ("11000011", "FINDINGS: Small left effusion.\n"),  # no indication
    "50000004": ("12000022", "INDICATION: Trauma.\nCOMPARISON: None.\n"),  # neither FINDINGS nor IMPRESSION
}
IMAGES = [  # dicom, study, subject, split, view
    ("d1a", "50000001", "10000032", "train", "PA"),
    ("d1b", "50000001", "10000032", "train", "LATERAL"),
    ("d1c", "50000001", "10000032", "train", "AP"),
    ("d2a", "50000002", "10000032", "train", "AP"),
    ("d3a", "50000003", "11000011", "validate", "PA"),
    ("d4a", "50000004", "12000022", "train", "PA"),
    ("d5a", "50000005", "13000033", "test", "PA"),  # report missing
]


def _write_csv(path: Path, header: list[str], rows: list[list[str]], compress: bool = False) -> None:
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture()
def mimic(tmp_path: Path) -> Path:
    """The MIMIC-CXR-JPG layout (gzipped CSVs, as distributed) with reports beside the study folders."""
    root = tmp_path / "mimic-cxr-jpg"
    for dicom, study, subject, _, _ in IMAGES:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{dicom}.jpg").write_bytes(b"")
    for study, (subject, text) in REPORTS.items():
        (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").write_text(text)
    _write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
               [[d, st, su, sp] for d, st, su, sp, _ in IMAGES], compress=True)
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
               [[d, su, st, v] for d, st, su, _, v in IMAGES], compress=True)
    return root


def test_reader_one_frontal_image_per_study(mimic: Path) -> None:
    samples = RadiologyTask().read(mimic, "train")
    # study 1: PA preferred over AP, lateral dropped; study 2: its AP; study 4 has no target; 3 is validate
    assert [s.id for s in samples] == ["d1a", "d2a"]
    first = samples[0]
    assert first.target == "FINDINGS: Lungs are clear. IMPRESSION: No acute process."
    assert first.prefix == "indication: ___ year old man with cough."
    assert Path(first.image) == mimic / "files/p10/p10000032/s50000001/d1a.jpg"
    assert first.meta["view"] == "PA" and first.meta["study_id"] == "50000001"
    assert samples[1].target == "IMPRESSION: 1. Mild cardiomegaly. 2. No effusion."
    assert samples[1].prefix == "indication: Chest pain."
    assert RadiologyTask().prompt(samples[1]) == "report indication: Chest pain."


def test_reader_options_and_splits(mimic: Path) -> None:
    all_views = RadiologyTask(views=[], one_image_per_study=False).read(mimic, "train")
    assert sorted(s.id for s in all_views) == ["d1a", "d1b", "d1c", "d2a"]
    val = RadiologyTask().read(mimic, "val")
    assert [(s.id, s.prefix, s.target) for s in val] == [("d3a", "", "FINDINGS: Small left effusion.")]
    assert RadiologyTask().read(mimic, "test") == []  # its report is missing: skipped, logged
    assert len(RadiologyTask().read(mimic, None)) == 3
    with pytest.raises(ValueError, match="unknown split"):
        RadiologyTask().read(mimic, "dev")


def test_reports_root_and_layout_errors(mimic: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "reports"
    for report in (mimic / "files").rglob("*.txt"):  # the reports as a separate download
        moved = elsewhere / report.relative_to(mimic)
        moved.parent.mkdir(parents=True, exist_ok=True)
        report.rename(moved)
    assert RadiologyTask().read(mimic, "train") == []  # no reports beside the images any more
    assert [s.id for s in RadiologyTask(reports_root=str(elsewhere)).read(mimic, "train")] == ["d1a", "d2a"]
    with pytest.raises(MimicLayoutError, match="mimic-cxr-2.0.0-split.csv"):
        RadiologyTask().read(tmp_path / "empty-dir", "train")


def test_reader_takes_the_generic_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"image": "a.jpg", "target": "FINDINGS: x", "prefix": "indication: y"}\n')
    (sample,) = RadiologyTask().read(tmp_path / "m.jsonl")
    assert (sample.target, sample.prefix) == ("FINDINGS: x", "indication: y")


def test_synthetic_samples_are_deterministic_and_state_the_drawn_findings() -> None:
    task = docvlm.tasks.get("radiology", synthetic_size=224)
    a, b = list(task.synthesize(12, seed=3)), list(task.synthesize(12, seed=3))
    assert [s.target for s in a] == [s.target for s in b]
    assert np.array_equal(np.asarray(a[0].image), np.asarray(b[0].image)) and a[0].image.size == (224, 224)
    from docvlm.metrics.chexpert import label

    for sample in a:
        case = sample.meta["findings"]
        labels = label(sample.target.replace("FINDINGS:", "").replace("IMPRESSION:", ""))
        assert (labels["Cardiomegaly"] == 1) == case["cardiomegaly"]
        assert (labels["Pleural Effusion"] == 1) == bool(case["effusion"])
        assert (labels["Consolidation"] == 1) == bool(case["consolidation"])
        assert (labels["Support Devices"] == 1) == bool(case["device"])
        assert sample.prefix.startswith("indication: ")
    # the heart shadow is wider with cardiomegaly: more bright pixels on the heart's row band
    big = next(s for s in a if s.meta["findings"]["cardiomegaly"] and not s.meta["findings"]["effusion"])
    small = next(s for s in a if not s.meta["findings"]["cardiomegaly"] and not s.meta["findings"]["effusion"])

    def bright(sample) -> int:
        return int((np.asarray(sample.image.convert("L"))[150:170] > 130).sum())

    assert bright(big) > bright(small)


def test_score_parse_and_export(tmp_path: Path) -> None:
    task = docvlm.tasks.get("radiology")
    refs = [s.target for s in task.synthesize(6, seed=0)]
    perfect = task.score(refs, refs)
    assert perfect["rouge_l"] == 1.0 and perfect["chexpert_f1_micro_14"] == 1.0
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-8)
    worse = task.score(["", "garbage", *refs[2:]], refs)
    assert worse["bleu4"] < perfect["bleu4"] and worse["cider"] < perfect["cider"]
    assert {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "chexpert_f1_macro_5"} <= set(worse)
    # markers do not count as words: a target and its marker-free text score the same
    assert task.score(["FINDINGS: No effusion. IMPRESSION: Normal."], ["No effusion. Normal."])["rouge_l"] == 1.0
    parsed = task.parse("IMPRESSION: cardiomegaly")
    assert parsed.ok and parsed.value.impression == "cardiomegaly"
    assert not task.parse("").ok and task.parse("").value is None
    paths = task.export(parsed, tmp_path / "out")
    assert "IMPRESSION: cardiomegaly" in paths[0].read_text()
    assert [p.name for p in task.export(task.parse("no markers at all"), tmp_path / "raw")] == ["raw.txt", "raw.json"]


@pytest.mark.slow
def test_tiny_radiology_fit_logs_report_metrics(tmp_path: Path) -> None:
    cli = fit_tiny("radiology", tmp_path, train=4, val=2)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    expected = {"val/bleu4", "val/rouge_l", "val/cider", "val/chexpert_f1_micro_14", "val/chexpert_f1_micro_5"}
    assert expected <= set(metrics)
    # 8 new tokens from a barely trained model against ~40-word reports: far from the references
    assert float(metrics["val/rouge_l"]) < 0.5
