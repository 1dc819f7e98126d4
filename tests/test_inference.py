"""One decoding path: validation, `evaluate`, `convert`, `docvlm.load` and the model card's plain-transformers
snippet give the same text; exported models describe themselves; prompts carry per-page parts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import docvlm
from docvlm.cli import main as cli_main
from docvlm.convert import _PageDataset, convert_with
from docvlm.convert import main as convert_main
from docvlm.convert_run import gather_pages, plan
from docvlm.decode import Decoding, generate, guard_window, repeating_period
from docvlm.evaluate import main as evaluate_main
from docvlm.items import TaskDataset
from docvlm.model import build_tiny_tokenizer
from docvlm.tasks.base import Sample
from docvlm.tasks.manifest import read_manifest
from helpers import text_image

REPO = Path(__file__).resolve().parents[1]
LINES = ["alpha 12", "beta 7", "gamma", "delta 300", "epsilon"]


def manifest_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo model after a short fit whose validation set is five PNG files listed in a manifest."""
    root = tmp_path_factory.mktemp("fit")
    pages = root / "pages"
    pages.mkdir()
    for i, line in enumerate(LINES):
        text_image(line, 224).save(pages / f"line{i}.png")
    manifest = pages / "val.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"line{i}.png", "target": t}) + "\n" for i, t in enumerate(LINES)))
    cli = cli_main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--data.train.synthetic=8",
                    "--data.batch_size=4", "--model.model.image_size=224", f"--data.val.path={manifest}",
                    "--data.val.synthetic=0",
                    "--model.decoding.max_new_tokens=12", "--trainer.max_steps=3", "--trainer.val_check_interval=3",
                    f"--trainer.default_root_dir={root}"])
    log_dir = Path(cli.trainer.log_dir)
    validation = [json.loads(line) for line in (log_dir / "predictions" / "val-step3.jsonl").read_text().splitlines()]
    return {"hf": log_dir / "hf", "pages": pages, "manifest": manifest, "root": root,
            "validation": {Path(r["id"]).stem: r["prediction"] for r in validation}}


def test_the_exported_folder_describes_itself(trained):
    folder = trained["hf"]
    description = json.loads((folder / "docvlm.json").read_text())
    assert description["task"] == "text" and description["prompt"] == docvlm.tasks.get("text").prefix
    assert description["image_size"] == 224 and description["decoding"]["max_new_tokens"] == 12
    assert description["measured_on"]["samples"] == len(LINES) and description["measured_on"]["step"] == 3
    assert description["measured_on"]["source"] == f"{len(LINES)} validation samples of {trained['manifest']}"
    assert set(description["metrics"]) == {"cer", "exact_match"}
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["max_new_tokens"], generation["eos_token_id"], generation["pad_token_id"]) == (12, 1, 0)
    card = (folder / "README.md").read_text()
    assert "docvlm convert --model" in card and "docvlm.load(" in card and "cer" in card


@pytest.mark.slow
def test_validation_evaluate_convert_load_and_the_model_card_give_the_same_text(trained, tmp_path):
    expected = trained["validation"]
    assert len(expected) == len(LINES)

    out = tmp_path / "evaluated"
    assert evaluate_main(["--model", str(trained["hf"]), "--data", str(trained["manifest"]), "--out", str(out)]) == 0
    evaluated = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {Path(r["id"]).stem: r["prediction"] for r in evaluated} == expected

    converted = tmp_path / "converted"  # no --task: the folder names it
    assert convert_main(["--model", str(trained["hf"]), str(trained["pages"]), "--out", str(converted),
                         "--num-workers", "0"]) == 0
    assert {r["id"]: r["text"] for r in manifest_rows(converted)} == expected

    model = docvlm.load(trained["hf"])
    assert model.task.name == "text" and model.decoding.max_new_tokens == 12
    names = sorted(expected)
    results = model([trained["pages"] / f"{n}.png" for n in names], batch_size=2)
    assert [r.text for r in results] == [expected[n] for n in names]
    assert all(r.value == r.text for r in results)
    assert convert_with(model, [trained["pages"]], tmp_path / "api", num_workers=0) == 0  # the command's Python entry
    assert {r["id"]: r["text"] for r in manifest_rows(tmp_path / "api")} == expected

    card = (trained["hf"] / "README.md").read_text()
    snippet = re.search(r"With plain `transformers`.*?```python\n(.*?)```", card, re.S)
    script = tmp_path / "snippet.py"
    script.write_text(snippet.group(1))
    pages = [str(trained["pages"] / f"{n}.png") for n in names]
    printed = subprocess.run([sys.executable, str(script), str(trained["hf"]), *pages],
                             capture_output=True, text=True, check=True, timeout=300).stdout
    assert printed.splitlines() == [expected[n] for n in names]


def test_a_task_that_contradicts_the_model_and_a_model_without_a_task_are_usage_errors(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        convert_main(["--model", str(trained["hf"]), "--task", "tables", str(trained["pages"]), "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "trained for task 'text', not 'tables'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["--model", "tiny", "--synthetic", "1", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "give --task" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_model_folders_that_cannot_be_loaded_are_one_line_and_exit_2(tmp_path, capsys):
    import pickle

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": {}}))
    (tmp_path / "page.png").write_bytes(b"")
    text_image("x", 64).save(tmp_path / "page.png")
    def status(main, argv: list[str]) -> int:  # a checkpoint is checked with the arguments: argparse exits
        try:
            return main(argv)
        except SystemExit as e:
            return e.code

    for model, message in [(tmp_path / "missing", "no such model folder"), (evil, "can be read safely")]:
        assert status(convert_main, ["--model", str(model), "--task", "text", str(tmp_path / "page.png"),
                                     "--out", str(tmp_path / "out"), "--num-workers", "0"]) == 2
        err = capsys.readouterr()
        assert message in err.err and "Traceback" not in err.err + err.out
        assert status(evaluate_main, ["--model", str(model), "--task", "text", "--synthetic", "1",
                                      "--out", str(tmp_path / "e")]) == 2
        assert message in capsys.readouterr().err
    from docvlm.export import main as export_main

    assert export_main([str(evil), str(tmp_path / "x")]) == 2
    assert "can be read safely" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_radiology_manifest_prefix_reaches_the_model_as_training_builds_it(tmp_path):
    task = docvlm.tasks.get("radiology")
    for i in range(2):
        text_image(f"film {i}", 128).save(tmp_path / f"film{i}.png")
    manifest = tmp_path / "studies.jsonl"
    rows = [{"image": "film0.png", "prefix": "INDICATION: cough, fever."}, {"image": "film1.png"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    pages, errors, _ = gather_pages([str(manifest)], None, tmp_path / "out")
    assert errors == []
    jobs = plan(pages, {})
    converted = _PageDataset(jobs, task, 224, 200)
    training = TaskDataset(read_manifest(manifest), task, 224)
    assert [converted[i]["prompt"] for i in range(2)] == [training[i]["prompt"] for i in range(2)]
    assert converted[0]["prompt"] == f"{task.prefix} INDICATION: cough, fever."
    assert converted[1]["prompt"] == task.prefix

    out = tmp_path / "out"
    assert convert_main(["--model", "tiny", "--task", "radiology", str(manifest), "--out", str(out),
                         "--max-new-tokens", "6", "--num-workers", "0"]) == 0
    model = docvlm.load("tiny", task="radiology")
    direct = model([tmp_path / "film0.png", tmp_path / "film1.png"], prompts=[rows[0]["prefix"], None],
                   max_new_tokens=6)
    assert [r["text"] for r in manifest_rows(out)] == [r.text for r in direct]


def test_repetition_guard_stops_a_loop_but_not_legitimately_repetitive_targets():
    tokenizer = build_tiny_tokenizer()  # one token per character: the most tokens a target can take

    def ids(text):
        return np.array(tokenizer(text, add_special_tokens=False)["input_ids"])

    def stops(text, budget):
        tokens = ids(text)
        window = guard_window(budget)
        return any(repeating_period(tokens[:n], window) is not None for n in range(window, len(tokens) + 1, 8))

    tables, music = docvlm.tasks.get("tables"), docvlm.tasks.get("music")
    rows = "<table>" + "<tr><td>0.5</td><td></td></tr>" * 60 + "</table>"  # 60 equal rows
    assert len(ids(rows)) < tables.max_target_tokens and not stops(rows, tables.max_target_tokens)
    bar = "4c\t4e\n4c\t4e\n=\t=\n"
    score = "**kern\t**kern\n*clefF4\t*clefG2\n" + bar * 32 + "*-\t*-\n"  # 32 repeated bars
    assert len(ids(score)) < music.max_target_tokens and not stops(score, music.max_target_tokens)
    for task in (tables, music):  # a synthetic set never trips it
        for sample in task.synthesize(6, seed=3):
            assert not stops(task.to_target(sample), task.max_target_tokens)
    loop = "<table>" + "<tr><td>7</td></tr>" * 400
    assert stops(loop, tables.max_target_tokens)


@pytest.mark.slow
def test_decoding_stops_a_looping_sequence_and_says_so(tiny_small):
    """The random tiny model repeats one token: the guard stops it at the window, and the others go on."""
    from helpers import make_batch

    model, processor = tiny_small
    batch = make_batch(processor, ["ocr", "ocr"], size=224)
    budget = 400
    guarded = generate(model.eval(), processor, batch, Decoding(), budget)
    free = generate(model, processor, batch, Decoding(repetition_guard=False), budget)
    for g, f in zip(guarded, free):
        assert any("repeated" in p for p in g.problems)
        assert len(g.text) < len(f.text) and f.text.startswith(g.text)
        assert any("max_new_tokens=400" in p for p in f.problems)


@pytest.mark.slow
def test_loading_and_converting_on_one_device_import_no_lightning(tmp_path):
    """`docvlm.load` reads a model without `docvlm.module` (no import cycle); converting a page on one device
    needs nothing of Lightning (its import costs seconds of every run's start-up)."""
    from PIL import Image

    Image.new("RGB", (64, 32), "white").save(tmp_path / "page.png")
    code = ("import sys, docvlm; model = docvlm.load('tiny', task='text'); "
            "print('docvlm.module' in sys.modules, 'docvlm.convert' in sys.modules); "
            "from pathlib import Path; from docvlm.convert import convert_with; "
            f"code = convert_with(model, [Path({str(tmp_path / 'page.png')!r})], {str(tmp_path / 'out')!r}, "
            "max_new_tokens=2); "
            "print(code, 'lightning' in sys.modules)")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                             env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}).stdout
    lines = printed.splitlines()
    assert lines[0].split() == ["False", "False"] and lines[-1].split() == ["0", "False"], printed


def test_the_next_batch_is_prepared_while_this_one_decodes_and_a_failure_there_costs_no_page(tiny_small):
    """decode_items takes group k+1 (starting its pixel values in a thread) before handing group k on;
    when the pixel values of a batch fail, its pages are decoded one by one, each as alone."""
    from unittest import mock

    from docvlm.inference import _one_ahead, decode_items
    from docvlm.items import Collator

    taken: list[int] = []

    def numbers():
        for n in range(3):
            taken.append(n)
            yield n

    assert [(n, list(taken)) for n in _one_ahead(numbers())] == [(0, [0, 1]), (1, [0, 1, 2]), (2, [0, 1, 2])]

    model, processor = tiny_small
    task = docvlm.tasks.get("text")
    samples = [Sample(id=str(i), image=text_image(word, 224), target=word) for i, word in enumerate(LINES)]
    dataset = TaskDataset(samples, task, 224, targets=[None] * len(samples))
    groups = [[dataset[i] for i in range(0, 3)], [dataset[i] for i in range(3, 5)]]
    decoding = Decoding(max_new_tokens=4)
    alone = [generate(model, processor, Collator(processor, with_targets=False)([item]), decoding, 4)[0].text
             for group in groups for item in group]
    real = Collator.pixel_values
    calls = []

    def fails_for_batches(self, images):
        calls.append(len(images))
        if len(images) > 1:
            raise RuntimeError("pixel values failed")
        return real(self, images)

    with mock.patch.object(Collator, "pixel_values", fails_for_batches):
        got = [generation.text for group in decode_items(model, processor, groups, decoding, 4)
               for _, generation in group]
    assert got == alone and calls.count(3) == 1 and calls.count(2) == 1 and calls.count(1) == 5
