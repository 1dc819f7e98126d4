"""Mixtures (docvlm.mixture): examples drawn by weight, resumable; a mixture checked before it trains; a tiny mixture
fit validated per task and exported as one model that does each task with its own prompt."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

import docvlm.tasks
import recording
from docvlm.errors import DataError
from docvlm.items import Source
from docvlm.mixture import Mixture, MixtureSampler, MixtureTask
from docvlm.tasks.molecules import MoleculesTask
from docvlm.tasks.tables import TablesTask
from docvlm.tasks.text import TextTask

REPO = Path(__file__).resolve().parents[1]
MIX = REPO / "configs" / "tiny" / "mix.yaml"


def mixed_tasks() -> dict:
    """The tasks of the tiny mixture config, with their options, by name."""
    import importlib

    tasks = {}
    for entry in yaml.safe_load(MIX.read_text())["data.mixture"]["tasks"]:
        module, _, name = entry["task"]["class_path"].rpartition(".")
        task = getattr(importlib.import_module(module), name)(**entry["task"].get("init_args", {}))
        tasks[task.name] = task
    return tasks


PROMPTS = {name: task.prefix for name, task in mixed_tasks().items()}


def task_of(index: int, sizes: list[int]) -> int:
    return next(t for t in range(len(sizes)) if index < sum(sizes[: t + 1]))


# ---- drawing ---------------------------------------------------------------------------------------------
def test_each_task_is_drawn_in_the_share_of_its_weight():
    """20,000 draws of weights 5:3:2 over sets of very different sizes: each share within 0.02 of its weight
    (about 5 standard deviations of a share at this count); batches of 8 mix tasks."""
    sizes, weights = [10, 500, 3], [0.5, 0.3, 0.2]
    sampler = MixtureSampler(sizes, weights, seed=3, epoch_size=20_000)
    drawn = [task_of(i, sizes) for i in sampler]
    counts = Counter(drawn)
    assert len(drawn) == 20_000
    for task, weight in enumerate(weights):
        assert abs(counts[task] / len(drawn) - weight) < 0.02, (task, counts)
    batches = [set(drawn[i:i + 8]) for i in range(0, len(drawn), 8)]
    assert sum(len(b) > 1 for b in batches) / len(batches) > 0.9


def test_a_task_is_seen_whole_before_an_example_repeats():
    sizes = [7, 5]
    sampler = MixtureSampler(sizes, [0.5, 0.5], seed=0, epoch_size=200)
    per_task: dict[int, list[int]] = {0: [], 1: []}
    for index in sampler:
        task = task_of(index, sizes)
        per_task[task].append(index - sum(sizes[:task]))
    for task, examples in per_task.items():
        for start in range(0, len(examples) - sizes[task] + 1, sizes[task]):
            assert sorted(examples[start:start + sizes[task]]) == list(range(sizes[task]))


def test_draws_depend_on_seed_and_epoch_alone():
    def epoch(seed, number):
        sampler = MixtureSampler([20, 30], [1, 2], seed=seed)
        sampler.set_epoch(number)
        return list(sampler)

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 0) != epoch(1, 0)


def test_a_sampler_restored_mid_epoch_goes_on_with_the_same_draws():
    whole = MixtureSampler([20, 30], [1, 2], seed=5)
    whole.set_epoch(2)
    expected = list(whole)
    state = whole.state_dict(consumed=17)
    resumed = MixtureSampler([20, 30], [1, 2], seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # what Lightning calls as the resumed epoch starts
    assert list(resumed) == expected[17:]
    resumed.set_epoch(3)  # the next epoch starts at its beginning
    whole.set_epoch(3)
    assert list(resumed) == list(whole)
    with pytest.raises(DataError, match="seed 5 on 1 ranks, this run's with seed 6"):
        MixtureSampler([20, 30], [1, 2], seed=6).load_state_dict(state)


def test_ranks_share_the_draw_and_each_sees_every_task_in_its_share():
    sizes, weights = [50, 50, 50], [0.6, 0.3, 0.1]
    ranks = [MixtureSampler(sizes, weights, seed=1, epoch_size=6000, rank=r, world_size=2) for r in range(2)]
    one = MixtureSampler(sizes, weights, seed=1, epoch_size=6000)
    drawn = [list(r) for r in ranks]
    assert [i for pair in zip(*drawn) for i in pair] == list(one)  # every draw once, over the ranks
    for indices in drawn:
        counts = Counter(task_of(i, sizes) for i in indices)
        for task, weight in enumerate(weights):
            assert abs(counts[task] / len(indices) - weight) < 0.03, counts


# ---- the figure that selects checkpoints ------------------------------------------------------------------
@pytest.mark.parametrize("name", docvlm.tasks.names())
def test_each_tasks_main_score_is_1_when_perfect_and_lower_in_0_1_otherwise(name):
    """`Task.main_score` puts every task's main metric on one scale (music's CER in percent included)."""
    task = docvlm.tasks.get(name)
    references = [task.to_target(s) for s in task.synthesize(3, seed=0)]
    assert task.main_score(task.score(references, references)) == pytest.approx(1.0)
    assert 0.0 <= task.main_score(task.score(["x"] * 3, references)) < 1.0


# ---- checks before training --------------------------------------------------------------------------------
def part(task, **kwargs):
    return MixtureTask(task=task, train=Source(synthetic=4), **{"val": Source(synthetic=2, seed=1), **kwargs})


@pytest.mark.parametrize("weight", [0, -1.0, float("nan")])
def test_a_weight_must_be_positive(weight):
    with pytest.raises(DataError, match=rf"tasks\[1\] \(tables\): weight {weight} must be a positive number"):
        Mixture([part(TextTask()), part(TablesTask(), weight=weight)]).check()


def test_two_tasks_with_one_prompt_are_refused_naming_both():
    with pytest.raises(DataError, match=r"tasks\[1\] \(tables\) has the same prompt as data.mixture.tasks\[0\] "
                                        r"\(text\): 'ocr'"):
        Mixture([part(TextTask()), part(TablesTask(prefix="ocr"))]).check()


def test_a_task_without_validation_data_is_refused():
    with pytest.raises(DataError, match=r"tasks\[2\] \(molecules\): no validation data"):
        Mixture([part(TextTask()), part(TablesTask()), part(MoleculesTask(), val=None)]).check()


def fit_command(root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(MIX), f"--trainer.default_root_dir={root}", "--model.decoding.max_new_tokens=8",
            *extra]


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ({"weight": 0}, r"data.mixture.tasks\[1\] \(tables\): weight 0.0 must be a positive number"),
    ({"val": None}, r"data.mixture.tasks\[1\] \(tables\): no validation data"),
    ({"task": {"class_path": "docvlm.tasks.tables.TablesTask", "init_args": {"prefix": "smiles"}}},
     r"data.mixture.tasks\[2\] \(molecules\) has the same prompt as data.mixture.tasks\[1\] \(tables\): 'smiles'"),
])
def test_the_command_refuses_a_bad_mixture_before_it_trains(tmp_path, change, message):
    """`docvlm fit` stops with the mistake named, in one line, before it trains a step."""
    mixture = yaml.safe_load(MIX.read_text())["data.mixture"]
    mixture["tasks"][1].update(change)
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"data.mixture": mixture}))
    done = subprocess.run([sys.executable, "-m", "docvlm.cli", *fit_command(tmp_path, "--config", str(config))],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert re.search(message, done.stderr), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not list(tmp_path.rglob("*.ckpt"))


# ---- training --------------------------------------------------------------------------------------------
def record(path: Path) -> str:
    return json.dumps({"class_path": "recording.RecordBatches", "init_args": {"path": str(path)}})


@pytest.mark.slow
@pytest.mark.parametrize("stop", [3, 7])
def test_a_run_resumed_mid_epoch_draws_what_the_unstopped_run_drew(tmp_path, stop):
    """Epochs of 5 batches, 9 steps: stopped at step 3 (mid first epoch) or 7 (mid second) and resumed from that
    checkpoint, the run trains on exactly the batches the uninterrupted run trained on from there."""
    from docvlm.cli import main

    every_step = json.dumps({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {
        "dirpath": str(tmp_path / "ckpt"), "filename": "{step}", "every_n_train_steps": 1, "save_top_k": -1}})
    quiet = ["--data.mixture.epoch_size=20", "--trainer.limit_val_batches=0", "--validate_at_end.enabled=false",
             "--export.enabled=false", "--curves.enabled=false", "--trainer.max_steps=9"]
    main(fit_command(tmp_path / "a", *quiet, f"--trainer.callbacks+={record(tmp_path / 'a')}",
                     f"--trainer.callbacks+={every_step}"))
    main(fit_command(tmp_path / "b", *quiet, f"--trainer.callbacks+={record(tmp_path / 'b')}",
                     f"--ckpt_path={tmp_path / 'ckpt' / f'step={stop}.ckpt'}"))
    whole, resumed = recording.read(tmp_path / "a"), recording.read(tmp_path / "b")
    assert [b["step"] for b in whole] == list(range(9))
    assert resumed == whole[stop:]
    assert {p for b in whole for p in b["prompts"]} == set(PROMPTS.values())


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_each_its_share_of_every_task(tmp_path):
    """Weights 2:1:1 over 2 ranks, 12 steps of 4: each rank trains on every task, about in its weight, and the two
    ranks train on different examples."""
    mixture = yaml.safe_load(MIX.read_text())["data.mixture"]
    mixture["tasks"][0]["weight"] = 2.0
    config = tmp_path / "weights.yaml"
    config.write_text(yaml.safe_dump({"data.mixture": mixture}))
    command = [sys.executable, "-m", "docvlm.cli", *fit_command(
        tmp_path, "--config", str(config), "--trainer.strategy=ddp", "--trainer.devices=2",
        "--trainer.max_steps=12", "--trainer.limit_val_batches=0", "--validate_at_end.enabled=false",
        "--export.enabled=false", "--curves.enabled=false", f"--trainer.callbacks+={record(tmp_path / 'seen')}")]
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO / "tests")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [recording.read(tmp_path / "seen", rank) for rank in (0, 1)]
    for batches in seen:
        prompts = Counter(p for b in batches for p in b["prompts"])
        assert sum(prompts.values()) == 48 and set(prompts) == set(PROMPTS.values())
        assert prompts["ocr"] > prompts["table html"] and prompts["ocr"] > prompts["smiles"], prompts
    pairs = [[(p, i) for b in batches for p, i in zip(b["prompts"], b["ids"])] for batches in seen]
    assert pairs[0] != pairs[1]


@pytest.mark.slow
def test_a_tiny_mixture_validates_each_task_and_exports_one_model_for_all(tmp_path):
    """Every task's metrics logged as val/<task>/<metric> with val/score their main metrics' mean as scores (on the
    progress line, a panel per task in curves.png, `docvlm validate` the same); docvlm.json lists the tasks, from
    fit as from `docvlm export`;
    the exported model does each task with its own prompt, in Python as in `convert --task` (and `evaluate
    --task`), and without a task it says which it has."""
    import docvlm
    from docvlm.cli import main
    from docvlm.convert import main as convert
    from docvlm.inference import TaskMismatchError
    from helpers import text_image

    cli = main(fit_command(tmp_path, "--trainer.max_steps=4", "--trainer.val_check_interval=4"))
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    tasks = mixed_tasks()
    for name, task in tasks.items():
        assert {f"val/{name}/{m.name}" for m in task.metrics if not m.optional} <= set(metrics)
        assert metrics[f"val/{name}/samples"] == 4
    mains = [task.main_score({task.main_metric: metrics[f"val/{name}/{task.main_metric}"]})
             for name, task in tasks.items()]
    assert metrics["val/score"] == pytest.approx(sum(mains) / len(mains))
    assert "val/score" in cli.trainer.progress_bar_metrics
    from docvlm.callbacks import plot_curves

    panels = plot_curves(next(tmp_path.rglob("metrics.csv")), tmp_path / "curves.png")
    assert {f"val/{name}" for name in PROMPTS} | {"val/score"} <= set(panels)

    hf = next(tmp_path.rglob("hf"))
    description = json.loads((hf / "docvlm.json").read_text())
    assert [(t["task"], t["prompt"]) for t in description["tasks"]] == list(PROMPTS.items())
    for entry in description["tasks"]:
        assert entry["metrics"] == {k.split("/")[-1]: pytest.approx(v) for k, v in metrics.items()
                                    if k.startswith(f"val/{entry['task']}/") and not k.endswith("/samples")}
    card = (hf / "README.md").read_text()
    assert all(f"--task {name}" in card and f"`{prompt}`" in card for name, prompt in PROMPTS.items())
    from docvlm.export import main as export

    checkpoint = next(tmp_path.rglob("*.ckpt"))
    assert export([str(checkpoint), str(tmp_path / "exported")]) == 0
    assert json.loads((tmp_path / "exported" / "docvlm.json").read_text())["tasks"] == description["tasks"]
    validated = main(["validate", "--config", str(MIX), f"--ckpt_path={checkpoint}",
                      "--model.decoding.max_new_tokens=8", f"--trainer.default_root_dir={tmp_path / 'validate'}"])
    assert validated.trainer.callback_metrics["val/score"] == pytest.approx(metrics["val/score"])

    with pytest.raises(TaskMismatchError, match=f"a mixture model of tasks {', '.join(PROMPTS)}"):
        docvlm.load(hf)
    image = tmp_path / "page.png"
    text_image("a 1", 224).save(image)
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    from docvlm.images import fit, load_image

    plain = PaliGemmaForConditionalGeneration.from_pretrained(hf).eval()
    processor = PaliGemmaProcessor.from_pretrained(hf)
    for name, prompt in PROMPTS.items():
        model = docvlm.load(hf, task=name)
        assert model.task.name == name and model.task.prefix == prompt
        parsed = model([image], max_new_tokens=8, repetition_guard=False)[0]
        text = parsed.text
        # plain transformers with the task's prompt gives the same text
        inputs = processor(text="<image>" + prompt, images=fit(load_image(image), 224, model.task.image_mode),
                           return_tensors="pt")
        output = plain.generate(**inputs, max_new_tokens=8, do_sample=False)
        assert text == processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        # `docvlm convert --task` writes what the task exports of that output (and the page, where it wants it)
        out = tmp_path / f"converted-{name}"
        assert convert(["--model", str(hf), "--task", name, str(image), "--out", str(out), "--max-new-tokens", "8",
                        "--no-repetition-guard", "--num-workers", "0"]) == 0
        row = json.loads((out / "manifest.jsonl").read_text().splitlines()[0]) \
            if (out / "manifest.jsonl").exists() else None
        page = {"image": load_image(image)} if model.task.export_wants_image else {}
        expected = model.task.export(parsed, tmp_path / f"expected-{name}", **page)
        written = [p for p in out.iterdir() if p.suffix == expected[0].suffix]
        assert [p.read_bytes() for p in written] == [expected[0].read_bytes()], row
    from docvlm.evaluate import main as evaluate

    assert evaluate(["--model", str(hf), "--task", "tables", "--synthetic", "2", "--max-new-tokens", "8",
                     "--out", str(tmp_path / "report")]) == 0
    assert json.loads((tmp_path / "report" / "report.json").read_text())["task"] == "tables"


def test_a_mixture_takes_no_data_of_its_own_and_a_module_needs_a_task_or_a_mixture():
    from docvlm.data import DocDataModule

    mixture = Mixture([part(TextTask()), part(TablesTask())])
    with pytest.raises(DataError, match=r"data.train: a mixture's tasks each have their own data"):
        DocDataModule(mixture=mixture, train=Source(synthetic=4))
    with pytest.raises(DataError, match="not both"):
        DocDataModule(TextTask(), mixture=mixture)
    with pytest.raises(DataError, match="no task: set data.task"):
        DocDataModule()


def test_evaluate_scores_a_mixture_runs_predictions_of_the_task_it_is_given(tmp_path):
    from docvlm.evaluate import main as evaluate

    rows = [{"id": "a", "task": "text", "target": "ab", "prediction": "ab"},
            {"id": "b", "task": "tables", "target": "<html></html>", "prediction": ""},
            {"id": "c", "task": "text", "target": "cd", "prediction": "cx"}]
    predictions = tmp_path / "val-step4.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert evaluate(["--task", "text", "--predictions", str(predictions), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [row["id"] for row in report["rows"]] == ["a", "c"]


def mixture_description(**changes) -> dict:
    """A mixture's docvlm.json as an export writes it: text measured, radiology not, from the 3B at 448 px."""
    from docvlm import mixture
    from docvlm.decode import Decoding

    mix = Mixture([part(TextTask()), part(docvlm.tasks.get("radiology"), weight=2.0)])
    data = mixture.description(mix, 448, Decoding(), {"text/cer": 0.25, "text/exact_match": 0.5, "text/samples": 4,
                                                       "score": 0.75}, 20, "google/paligemma2-3b-pt-448")
    data = json.loads(json.dumps(data))
    for key, value in changes.items():
        data["tasks"][1][key] = value
    return data


def test_a_mixture_description_is_checked_entry_by_entry_and_picks_from_checked_data():
    from docvlm import describe
    from docvlm.errors import SettingsError

    data = mixture_description()
    assert describe.check(data, "docvlm.json") is data
    text = describe.pick(data, "text")
    assert text["measured_on"]["source"] == "4 synthetic validation samples, seed 1"
    assert text["base_model"] == "google/paligemma2-3b-pt-448"
    assert text["max_target_tokens"] == TextTask().max_target_tokens
    for changes, field in [({"image_mode": "tilted"}, "image_mode must be 'pad' or 'stretch'"),
                           ({"options": {"nope": 1}}, "has no option 'nope'"),
                           ({"task": "nosuch"}, "unknown task 'nosuch'"),
                           ({"max_target_tokens": 0}, "max_target_tokens must be from 1"),
                           ({"prompt": 3}, "prompt must be str"),
                           ({"metrics": {"cer": "low"}}, "metric 'cer' must be a number"),
                           ({"weight": -1}, "weight must be above 0"),
                           ({"task": "text"}, "task 'text' is listed twice")]:
        with pytest.raises(SettingsError, match=r"^docvlm.json: tasks\[1\].*" + re.escape(field)) as raised:
            describe.check(mixture_description(**changes), "docvlm.json")
        assert "\n" not in str(raised.value)
    for tasks in (3, [], [1], [{"options": {}}]):
        with pytest.raises(SettingsError, match="docvlm.json: tasks"):
            describe.check({**data, "tasks": tasks}, "docvlm.json")
    with pytest.raises(SettingsError, match="num_beams must be from 1 to 64"):
        describe.check({**data, "decoding": {"num_beams": 1000}}, "docvlm.json")


def test_a_mixture_folder_with_a_bad_entry_is_refused_in_one_line(tmp_path, capsys):
    from docvlm import describe
    from docvlm.convert import main as convert
    from docvlm.evaluate import main as evaluate

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / describe.DESCRIPTION).write_text(json.dumps(mixture_description(image_mode="tilted")))
    for main, argv in ((convert, [str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]),
                       (evaluate, ["--synthetic", "1", "--out", str(tmp_path / "r")])):
        try:
            code = main(["--model", str(folder), "--task", "text", *argv])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert code == 2 and "Traceback" not in err and len(errors) == 1, err[-2000:]
        assert "docvlm.json: tasks[1] (radiology): image_mode must be 'pad' or 'stretch'" in errors[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_a_mixture_card_has_each_tasks_limits_metrics_in_words_and_the_licences_once():
    from docvlm import describe

    card = describe.model_card(mixture_description())
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "google/paligemma2-3b-pt-448" and meta["license"] == "other"  # radiology's terms
    assert {"mixture", "text", "radiology"} <= set(meta["tags"])
    assert card.count("## Licences") == 1 and card.count("Gemma Terms of Use") == 1 and "PhysioNet" in card
    text, radiology = card.split("## Task `text`")[1].split("## Task `radiology`")
    limit = TextTask().max_target_tokens
    assert f"outputs of at most {limit} new tokens" in text and "holds the longest task's, 512" in text
    assert f"max_new_tokens={limit}" in text and "Measured at step 20 on 4 synthetic validation samples, seed 1" in text
    assert "outputs of at most 512 new tokens" in radiology and "No validation metrics" in radiology
    assert "--task radiology" in radiology and 'docvlm.load("THIS_FOLDER", task="radiology")' in radiology


def test_curves_group_a_tasks_metrics_in_one_panel_on_the_step_axis_with_single_points_labelled():
    from docvlm.callbacks import curves_figure

    series = {"train/loss": [(s, 2.0 / (s + 1)) for s in range(0, 300, 10)],
              "val/text/cer": [(299, 0.25)], "val/text/exact_match": [(299, 0.5)], "val/score": [(299, 0.6)]}
    panels = {axes.get_title(): axes for axes in curves_figure(series).axes}
    assert set(panels) == {"train/loss", "val/text", "val/score"}
    text = panels["val/text"]
    assert sorted(t.get_text() for t in text.texts) == ["0.2500", "0.5000"]
    assert sorted(line.get_label() for line in text.lines) == ["cer", "exact_match"]
    low, high = text.get_xlim()
    assert low <= 0 and high >= 299
    assert panels["train/loss"].get_yscale() == "log"
