"""The Lightning CLI end to end: every shipped config parses; fit writes a checkpoint, resumes,
exports a model that plain transformers loads and decodes identically; DDP scores the set once."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

from docvlm.callbacks import plot_curves
from docvlm.cli import main
from docvlm.evaluate import main as evaluate_main
from docvlm.export import main as export_main
from docvlm.inference import load_weights
from docvlm.module import DocVLM

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
# Overlays (and the real runs' base) hold only the keys they change and are applied on top of the demo.
OVERLAYS = {p for p in CONFIGS
            if p.parent.name in ("strategies", "models") or p.name in ("lora.yaml", "qlora.yaml", "base.yaml")}
SMALL = ["--data.train.synthetic=8", "--data.val.synthetic=4", "--data.batch_size=4",
         "--model.decoding.max_new_tokens=8"]


def config_args(path: Path) -> list[str]:
    if path in OVERLAYS:
        return ["--config", str(REPO / "configs/demo.yaml"), "--config", str(path)]
    return ["--config", str(path)]


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_every_config_parses(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *config_args(path), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed and "task:" in printed


REAL = sorted(p for p in (REPO / "configs" / "paligemma2").glob("*.yaml") if p.name != "base.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_every_real_config_trains_and_validates_on_the_tiny_model(path, tmp_path):
    """Each real run with its own settings (precision, checkpointing, task options, loss, decoding), on the
    tiny model, synthetic data and the CPU: only what needs a GPU, the hub or the dataset is overridden (a
    mixture's: each task's data, the same way)."""
    own = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "data.mixture" in own:
        for part in own["data.mixture"]["tasks"]:
            part.update(train={"synthetic": 4}, val={"synthetic": 2, "seed": 1})
        (tmp_path / "synthetic.yaml").write_text(yaml.safe_dump({"data.mixture": own["data.mixture"]}))
        data = ["--config", str(tmp_path / "synthetic.yaml")]
    else:
        data = ["--data.train.synthetic=4", "--data.val.synthetic=2"]
    cli = main(["fit", "--config", str(path), "--model.model.name_or_path=tiny", "--trainer.accelerator=cpu",
                "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.accumulate_grad_batches=1",
                *data, "--data.batch_size=2", "--data.eval_batch_size=2",
                "--data.num_workers=0", "--model.decoding.max_new_tokens=8", "--trainer.log_every_n_steps=1",
                f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.global_step == 2
    assert cli.model.net.is_activation_checkpointing
    mixture = cli.datamodule.mixture
    tasks = [(f"val/{p.task.name}/", p.task) for p in mixture.tasks] if mixture else [("val/", cli.datamodule.task)]
    for prefix, task in tasks:
        assert cli.trainer.callback_metrics[f"{prefix}samples"] == 2
        assert f"{prefix}{task.main_metric}" in cli.trainer.callback_metrics
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "hf" / "config.json").is_file()
    checkpoints = cli.trainer.checkpoint_callback  # the best by the task's metric, and the last
    assert checkpoints.monitor in cli.trainer.callback_metrics and Path(checkpoints.best_model_path).is_file()
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    with open(log_dir / "metrics.csv", newline="") as f:
        rates = [float(row["lr-AdamW"]) for row in csv.DictReader(f) if row.get("lr-AdamW")]
    assert rates and rates[0] > 0  # warm-up: the first step's rate is lr / warmup_steps
    drawn = plot_curves(log_dir / "metrics.csv", tmp_path / "again.png")  # what fit drew into curves.png
    panels = {"val/score", *(prefix.rstrip("/") for prefix, _ in tasks)} if mixture else {f"val/{task.main_metric}"}
    assert {"train/loss", "lr-AdamW", *panels} <= set(drawn) and "val/samples" not in drawn
    assert Image.open(log_dir / "curves.png").size == Image.open(tmp_path / "again.png").size


def test_the_console_script_lists_every_command():
    docvlm = Path(sys.executable).parent / "docvlm"
    printed = subprocess.run([str(docvlm), "--help"], capture_output=True, text=True, check=True, timeout=60).stdout
    listed = {line.split()[0] for line in printed.split("commands:")[1].splitlines() if line.startswith("  ")}
    assert listed == {"fit", "validate", "test", "predict", "convert", "evaluate", "export"}
    assert subprocess.run([str(docvlm)], capture_output=True, text=True, timeout=60).returncode == 2


@pytest.mark.parametrize("command", [
    ["convert", "page.png"], ["convert", "--task", "text", "page.png"], ["evaluate", "--synthetic", "2"],
], ids=["convert", "convert-with-task", "evaluate"])
@pytest.mark.parametrize("model", ["no/such/folder", "no-such.ckpt"])
def test_a_missing_model_is_one_line_naming_it_and_nothing_is_created(tmp_path, command, model):
    docvlm = Path(sys.executable).parent / "docvlm"
    done = subprocess.run([str(docvlm), command[0], "--model", str(tmp_path / model), *command[1:], "--out", "out"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"docvlm {command[0]}: error: {tmp_path / model}: no such "
                                        f"{'checkpoint file' if model.endswith('.ckpt') else 'model folder'}"]
    assert not (tmp_path / "out").exists()


def test_top_level_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    printed = capsys.readouterr().out
    commands = ("fit", "predict", "docvlm convert", "docvlm evaluate", "docvlm export")
    assert all(command in printed for command in commands)


def run_fit(root, *extra):
    return main(["fit", "--config", str(REPO / "configs/demo.yaml"), *SMALL, f"--trainer.default_root_dir={root}",
                 *extra])


@pytest.mark.slow
def test_fit_checkpoint_resume_and_export(tmp_path):
    cli = run_fit(tmp_path, "--trainer.max_steps=3", "--trainer.val_check_interval=3")
    log_dir = Path(cli.trainer.log_dir)
    checkpoints = list((log_dir / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 1
    assert {"val/cer", "val/exact_match", "val/samples"} <= set(cli.trainer.callback_metrics)
    assert cli.trainer.callback_metrics["val/samples"] == 4

    resumed = run_fit(tmp_path, "--trainer.max_steps=5", "--trainer.val_check_interval=5",
                      f"--ckpt_path={checkpoints[0]}")
    assert resumed.trainer.global_step == 5
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    assert state["global_step"] == 3
    restored = DocVLM.load_from_checkpoint(checkpoints[0], task=cli.datamodule.task, weights_only=True)
    assert restored.decoding.max_new_tokens == 8
    assert all(torch.equal(v, state["state_dict"][k]) for k, v in restored.state_dict().items())

    # the export loads with plain transformers and decodes exactly as docvlm does
    export = Path(resumed.trainer.log_dir) / "hf"
    model = PaliGemmaForConditionalGeneration.from_pretrained(export).eval()
    processor = PaliGemmaProcessor.from_pretrained(export)
    dm, module = resumed.datamodule, resumed.model.eval()
    batch = next(iter(dm.val_dataloader()))
    ours = module.decode(batch)
    images = [dm.datasets["val"][i]["image"] for i in range(len(batch["id"]))]
    inputs = processor(text=["<image>ocr"] * len(batch["id"]), images=images, return_tensors="pt", padding="longest")
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    theirs = processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert ours == theirs
    assert model.config.text_config.final_logit_softcapping is None

    # `docvlm export` writes a chosen checkpoint the same way
    assert export_main([str(checkpoints[0]), str(tmp_path / "from-ckpt")]) == 0
    exported = PaliGemmaForConditionalGeneration.from_pretrained(tmp_path / "from-ckpt")
    assert all(torch.equal(v, state["state_dict"][f"net.{k}"]) for k, v in exported.state_dict().items())
    assert PaliGemmaProcessor.from_pretrained(tmp_path / "from-ckpt").image_seq_length == processor.image_seq_length
    # convert and evaluate decode from a checkpoint directly, with the weights export writes
    ckpt_model, ckpt_processor, description = load_weights(str(checkpoints[0]))
    assert description["task"] == "text" and description["metrics"].keys() >= {"cer", "exact_match"}
    assert all(torch.equal(v, exported.state_dict()[k]) for k, v in ckpt_model.state_dict().items())
    assert ckpt_processor.image_seq_length == processor.image_seq_length
    out = tmp_path / "eval-ckpt"
    assert evaluate_main(["--task", "text", "--model", str(checkpoints[0]), "--synthetic", "2",
                          "--max-new-tokens", "4", "--out", str(out)]) == 0
    assert len(json.loads((out / "report.json").read_text(encoding="utf-8"))["rows"]) == 2


def test_export_names_a_missing_or_unreadable_checkpoint(tmp_path, capsys):
    assert export_main([str(tmp_path / "none.ckpt"), str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'none.ckpt'}: no such checkpoint file" in capsys.readouterr().err
    (tmp_path / "torn.ckpt").write_bytes(b"PK\x03\x04 not a whole zip")
    assert export_main([str(tmp_path / "torn.ckpt"), str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'torn.ckpt'}: not a docvlm checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_qlora_checkpoints_hold_the_adapters_resume_and_export_a_float_model(tmp_path):
    qlora = ["--config", str(REPO / "configs/qlora.yaml"), "--model.model.lora.r=4"]
    cli = run_fit(tmp_path, *qlora, "--trainer.max_steps=3", "--trainer.val_check_interval=3")
    checkpoint = next((Path(cli.trainer.log_dir) / "checkpoints").glob("*.ckpt"))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    trained = {f"net.{n}": p for n, p in cli.model.net.named_parameters() if p.requires_grad}
    assert saved.keys() == trained.keys() and all("lora_" in k for k in saved)  # no 4-bit base in it
    assert all(torch.equal(saved[k], p) for k, p in trained.items())

    resumed = run_fit(tmp_path, *qlora, "--trainer.max_steps=5", "--trainer.val_check_interval=5",
                      f"--ckpt_path={checkpoint}")
    assert resumed.trainer.global_step == 5
    restored = DocVLM.load_from_checkpoint(checkpoint, task=cli.datamodule.task, weights_only=True)
    assert all(torch.equal(p, saved[f"net.{n}"]) for n, p in restored.net.named_parameters() if p.requires_grad)
    incomplete = {**torch.load(checkpoint, map_location="cpu", weights_only=True), "state_dict": {}}
    torch.save(incomplete, tmp_path / "incomplete.ckpt")
    with pytest.raises(KeyError, match="lacks"):
        DocVLM.load_from_checkpoint(tmp_path / "incomplete.ckpt", task=cli.datamodule.task, weights_only=True)

    export = PaliGemmaForConditionalGeneration.from_pretrained(Path(resumed.trainer.log_dir) / "hf")
    assert getattr(export.config, "quantization_config", None) is None
    assert {p.dtype for p in export.parameters()} == {torch.float32}


def test_validate_writes_predictions(tmp_path):
    cli = main(["validate", "--config", str(REPO / "configs/demo.yaml"), *SMALL,
                f"--trainer.default_root_dir={tmp_path}"])
    rows = [json.loads(line) for line in next(Path(tmp_path).rglob("val-step0.jsonl")).read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"synthetic-1-{i}" for i in range(4)]  # the demo validates on seed 1
    assert cli.trainer.callback_metrics["val/samples"] == 4


@pytest.mark.slow
def test_ddp_on_cpu_scores_the_whole_set_once(tmp_path):
    """7 validation samples on 2 ranks: the sampler pads one duplicate; metrics see 7, each once."""
    docvlm = Path(sys.executable).parent / "docvlm"
    command = [
        sys.executable, str(docvlm), "fit", "--config", str(REPO / "configs/demo.yaml"),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--data.train.synthetic=8",
        "--data.val.synthetic=7", "--data.batch_size=2", "--data.eval_batch_size=2",
        "--model.decoding.max_new_tokens=4", f"--trainer.default_root_dir={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = list(tmp_path.rglob("val-step2.jsonl"))
    assert len(predictions) == 1
    ids = [json.loads(line)["id"] for line in predictions[0].read_text().splitlines()]
    assert sorted(ids) == sorted(f"synthetic-1-{i}" for i in range(7))  # the demo validates on seed 1
    with next(tmp_path.rglob("metrics.csv")).open() as f:
        samples = [row["val/samples"] for row in csv.DictReader(f) if row.get("val/samples")]
    assert [float(s) for s in samples] == [7.0]


def test_fsdp_overlay_builds_a_wrap_policy_of_the_real_layer_classes():
    """FSDP needs GPUs, so the strategy is built alone: the YAML's class names must resolve."""
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.gemma2.modeling_gemma2 import Gemma2DecoderLayer
    from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

    parser = ArgumentParser()
    parser.add_argument("--strategy", type=FSDPStrategy)
    config = yaml.safe_load((REPO / "configs/strategies/fsdp.yaml").read_text())["trainer"]["strategy"]
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": config})).strategy
    policy = strategy.kwargs["auto_wrap_policy"]
    assert set(policy._module_classes) == {Gemma2DecoderLayer, SiglipEncoderLayer}


def test_predict_writes_rows_from_a_manifest(tmp_path):
    from helpers import text_image

    for i in range(3):
        text_image(f"line {i}", 224).save(tmp_path / f"{i}.png")
    manifest = tmp_path / "predict.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"{i}.png", "id": f"page-{i}"}) + "\n" for i in range(3)))
    main(["predict", "--config", str(REPO / "configs/demo.yaml"), f"--data.predict.path={manifest}",
          "--data.eval_batch_size=2", "--model.decoding.max_new_tokens=4", f"--trainer.default_root_dir={tmp_path}"])
    rows = [json.loads(line) for line in next(tmp_path.rglob("predict-rank0.jsonl")).read_text().splitlines()]
    assert [r["id"] for r in rows] == ["page-0", "page-1", "page-2"]
    assert all(isinstance(r["prediction"], str) for r in rows)


@pytest.mark.slow
def test_ddp_survives_a_rank_whose_whole_batch_is_unreadable(tmp_path):
    """With `on_bad_image: skip`, one rank's batch holds only a broken image: that rank must still join
    the gradient all-reduce (a zero-loss step), or DDP waits forever."""
    from helpers import text_image

    rows = []
    for i in range(4):
        name = f"{i}.png"
        text_image(f"line {i}", 224).save(tmp_path / name)
        if i == 1:  # rank 1 gets samples 1 and 3 with batch size 1; sample 1 is cut in half: its header passes
            whole = (tmp_path / name).read_bytes()  # the up-front check, its pixels fail in the worker
            (tmp_path / name).write_bytes(whole[: len(whole) // 2])
        rows.append(json.dumps({"image": name, "target": f"line {i}"}))
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    docvlm = Path(sys.executable).parent / "docvlm"
    command = [
        sys.executable, str(docvlm), "fit", "--config", str(REPO / "configs/demo.yaml"),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0", f"--data.train.path={tmp_path / 'train.jsonl'}", "--data.train.synthetic=0",
        "--data.val=null", "--data.batch_size=1", "--data.on_bad_image=skip", "--export.enabled=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1.png" in done.stderr  # the skipped file is named in the log
