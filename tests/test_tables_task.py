"""The `tables` task: PubTabNet reader on the sample examples, scoring, export, and a tiny fit."""

from pathlib import Path

import pytest

from docvlm.tasks import get
from helpers import fit_tiny


@pytest.fixture(scope="module")
def examples(data_dir) -> Path:
    return data_dir / "pubtabnet" / "examples"


def test_reads_pubtabnet_examples(examples):
    task = get("tables")
    samples = task.read(examples, "train")
    assert len(samples) == 20 and task.read(examples, "val") == []
    first = samples[0]
    assert first.id == "PMC4840965_004_00.png" and Path(first.image).is_file()
    assert first.target.startswith("<table><thead><tr><td><b>Variable</b></td>")
    assert task.parse(first.target).ok
    otsl = get("tables", target_format="otsl").read(examples / "PubTabNet_Examples.jsonl", "train")[0]
    assert otsl.target.startswith("<ched><b>Variable</b>")


def test_score_keys_ranges_and_bad_outputs(examples):
    task = get("tables")
    refs = [s.target for s in task.read(examples, "train")[:4]]
    perfect = task.score(refs, refs)
    assert perfect == {"teds": 1.0, "teds_struct": 1.0, "grits_top": 1.0, "grits_con": 1.0, "unparseable": 0.0}
    bad = task.score(["", "plain text", "<p>no table</p>", refs[3][: len(refs[3]) // 2]], refs)
    assert bad["unparseable"] == 0.75
    assert all(0.0 <= v < 1.0 for v in bad.values())
    otsl_task = get("tables", target_format="otsl")
    samples = list(otsl_task.synthesize(3, seed=2))
    assert otsl_task.score([s.target for s in samples], [s.target for s in samples])["teds"] == 1.0


def test_synthesize_is_deterministic_and_export_writes_files(tmp_path):
    task = get("tables", coords=True)
    a, b = list(task.synthesize(2, seed=3)), list(task.synthesize(2, seed=3))
    assert [s.target for s in a] == [s.target for s in b] and "coords=" in a[0].target
    paths = task.export(task.parse(a[0].target), tmp_path / "t")
    assert sorted(p.suffix for p in paths) == [".csv", ".html", ".json", ".md"]
    assert task.export(task.parse("garbage"), tmp_path / "g")[0].read_text() == "garbage"


@pytest.mark.slow
def test_tiny_tables_fit_logs_teds(tmp_path):
    cli = fit_tiny("tables", tmp_path)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert {"val/teds", "val/teds_struct", "val/grits_top", "val/grits_con", "val/unparseable"} <= set(metrics)
    assert all(0.0 <= float(metrics[f"val/{k}"]) <= 1.0 for k in ("teds", "teds_struct", "grits_top", "grits_con"))
