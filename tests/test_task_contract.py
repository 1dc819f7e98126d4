"""What every registered task must do, checked for each name `docvlm.tasks.names()` lists (as timm's
test_models.py runs over `list_models()`): a new task is checked without a test of its own."""

import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
from jsonargparse import ArgumentParser

import docvlm.lightning_cli  # noqa: F401  (the CLI accepts Task subclasses by class_path)
import docvlm.tasks
from docvlm.images import load_image
from docvlm.tasks.base import Parsed, Sample, Task
from docvlm.tasks.manifest import ManifestError

NAMES = docvlm.tasks.names()
N = 4  # synthetic samples per check: enough for set-level metrics (CIDEr-D's document frequencies)
GARBAGE = ["", " ", "\x00\x01", "<table><tr><td>", "<script>alert(1)</script>", "*" * 5000, "\ufffd\u202e漢字",
           "C1CC(", "**kern\n4c\t*-", "FINDINGS:", "<loc0001>" * 10, "\n\n\t"]


@pytest.fixture(scope="module", params=NAMES)
def task(request) -> Task:
    return docvlm.tasks.get(request.param)


@pytest.fixture(scope="module")
def samples(task) -> list[Sample]:
    return list(task.synthesize(N, seed=7))


def _pixels(sample: Sample) -> np.ndarray:
    return np.asarray(load_image(sample.image))


def test_synthesis_is_deterministic_in_the_seed(task, samples):
    again = list(task.synthesize(N, seed=7))
    assert [(s.id, s.target, s.prefix) for s in again] == [(s.id, s.target, s.prefix) for s in samples]
    assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(samples, again))
    assert len({s.id for s in samples}) == N and all(isinstance(s.target, str) and s.target for s in samples)
    other = list(task.synthesize(N, seed=8))
    assert [s.target for s in other] != [s.target for s in samples]


def test_targets_parse_cleanly_and_parse_never_raises(task, samples):
    for sample in samples:  # what the model is taught to write, the task reads back without a problem
        parsed = task.parse(task.to_target(sample))
        assert isinstance(parsed, Parsed) and parsed.ok, (sample.id, parsed.problems)
    for text in GARBAGE + [s.target[: len(s.target) // 2] for s in samples]:
        parsed = task.parse(text)
        assert isinstance(parsed, Parsed) and parsed.text == text
        assert all(isinstance(p, str) for p in parsed.problems)


def test_declared_metrics(task):
    names = [m.name for m in task.metrics]
    assert len(set(names)) == len(names) and task.main_metric in names
    for metric in task.metrics:  # what identical predictions score is the bound of the metric's direction
        assert metric.perfect in (None, 1.0 if metric.higher_is_better else 0.0), metric


def _check_keys(task: Task, scores: dict) -> None:
    declared = {m.name for m in task.metrics}
    required = {m.name for m in task.metrics if not m.optional}
    assert required <= scores.keys() <= declared, (sorted(scores.keys() - declared), sorted(required - scores.keys()))
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values()), scores


def test_score_returns_the_declared_metrics_and_identical_predictions_score_best(task, samples):
    references = [task.to_target(s) for s in samples]
    best = task.score(references, references)
    _check_keys(task, best)
    for metric in task.metrics:
        if metric.perfect is not None and metric.name in best:
            assert best[metric.name] == pytest.approx(metric.perfect), metric.name
    shifted = references[1:] + references[:1]  # each prediction another sample's target
    for predictions in (shifted, [""] * N, GARBAGE[:N]):
        worse = task.score(predictions, references)
        _check_keys(task, worse)
        for metric in task.metrics:
            if metric.name in worse and metric.name in best:
                sign = 1 if metric.higher_is_better else -1
                assert sign * worse[metric.name] <= sign * best[metric.name] + 1e-9, (metric.name, predictions[:1])


def test_score_refuses_a_prediction_count_that_is_not_the_reference_count(task, samples):
    """`zip` would silently score only the shorter list (`docvlm.metrics.common.same_length` says so)."""
    references = [task.to_target(s) for s in samples]
    with pytest.raises(ValueError, match="predictions for"):
        task.score(references[:-1], references)


def test_sample_level_metrics_average_over_samples_and_the_main_metric_ranks_samples(task, samples):
    """A metric not declared `corpus` is the mean of its per-sample values (what reports rank and plot)."""
    references = [task.to_target(s) for s in samples]
    predictions = references[1:] + references[:1]
    predictions[0] = references[0]  # one right, the rest wrong
    whole = task.score(predictions, references)
    single = [task.score([p], [r]) for p, r in zip(predictions, references)]
    for metric in task.metrics:
        values = [s[metric.name] for s in single if metric.name in s]
        if not metric.corpus and values and metric.name in whole:
            assert whole[metric.name] == pytest.approx(sum(values) / len(values), abs=1e-9), metric.name
    main = task.metric(task.main_metric)
    sign = 1 if main.higher_is_better else -1
    assert sign * single[0][main.name] > sign * single[1][main.name]  # a right sample ranks above a wrong one


def test_export_writes_only_inside_its_folder(task, samples, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i, text in enumerate([task.to_target(samples[0]), "", GARBAGE[3], GARBAGE[6]]):
        stem = out / f"page.{i}"  # a dot in the stem must not be taken for a suffix
        paths = task.export(task.parse(text), stem)
        assert paths and all(p.parent == out and p.name.startswith(stem.name + ".") and p.is_file() for p in paths)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != out] == []


def test_task_and_samples_pickle_for_worker_processes(task, samples):
    again = pickle.loads(pickle.dumps(task))
    assert type(again) is type(task) and again.options() == task.options()
    sample = pickle.loads(pickle.dumps(samples[0]))
    assert np.array_equal(_pixels(sample), _pixels(samples[0]))


def test_options_round_trip_through_the_cli_and_are_type_checked(task):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--task", type=Task)
    path = f"{type(task).__module__}.{type(task).__qualname__}"
    config = parser.parse_args(["--task", json.dumps({"class_path": path, "init_args": task.options()})])
    assert parser.instantiate_classes(config).task.options() == task.options()
    with pytest.raises(Exception, match="image_mode"):  # the base class's Literal, kept by every task
        parser.parse_args(["--task", json.dumps({"class_path": path, "init_args": {"image_mode": "sideways"}})])


def test_readers_return_samples_and_raise_one_error_type(task, samples, tmp_path):
    sample = samples[0]
    load_image(sample.image).save(tmp_path / "a.png")
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "target": task.to_target(sample)}) + "\n", encoding="utf-8")
    read = task.read(manifest)
    assert isinstance(read, list) and len(read) == 1 and isinstance(read[0], Sample)
    assert task.parse(task.to_target(read[0])).ok
    for missing in (tmp_path / "missing.jsonl", tmp_path / "missing"):
        with pytest.raises(ManifestError, match="missing"):
            task.read(missing, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="empty"):
        task.read(tmp_path / "empty", "train")


def test_importing_the_tasks_loads_no_domain_library():
    """Domain libraries load when a task first uses them, in every task alike: `import docvlm.tasks` (the CLI's
    --help, a data loader worker) stays light."""
    heavy = ["rdkit", "music21", "verovio", "cairosvg", "lxml", "pyarrow", "torch", "matplotlib"]
    code = f"import sys, docvlm.tasks; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
