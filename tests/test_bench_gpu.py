"""bench/bench_gpu.py works before GPU time is spent on it: its smoke mode (tiny model, CPU) fills every
section of the JSON with numbers, and the paths a CPU never takes by itself (a batch that does not fit,
a phase window that runs out) stop the sweep and say why."""

import importlib.util
import json
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def errors(node, path="") -> list[str]:
    """Every `error` entry anywhere in the report."""
    if isinstance(node, dict):
        found = [f"{path}: {node['error']}"] if "error" in node else []
        return found + [e for k, v in node.items() for e in errors(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [e for i, v in enumerate(node) for e in errors(v, f"{path}[{i}]")]
    return []


def positive(record: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(record[key], (int, float)) and record[key] > 0, (key, record)


@pytest.mark.slow
def test_smoke_run_fills_every_section(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_gpu.py"), "--smoke", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert errors(report) == []
    assert "| docvlm eager | 8 |" in done.stdout and "overhead of docvlm" in done.stdout

    meta = report["meta"]
    assert meta["smoke"] and meta["model"] == "tiny" and meta["target_tokens"] == 64
    # image tokens, <bos>, "table html" (one token per character), "\n", the target with <eos>
    assert meta["sequence_length"] == meta["image_tokens"] + 1 + 10 + 1 + 64
    positive(meta, "params", "wall_s")
    # the FLOP formula counts the matrix products torch sees in the model's forward: exactly with
    # transformers 5.23; 5.17 (the GPU machine's) computes the rotary angles with a small bmm too (+0.01%)
    assert report["flops"]["counted_over_analytic"] == pytest.approx(1.0, rel=1e-3)
    positive(report["flops"], "per_sample_model_tflop", "per_sample_hardware_tflop", "per_token_model_gflop")

    for part in (report["train"]["eager"], report["transformers"]["eager"]):
        assert [r["batch"] for r in part["runs"]] == [1, 2, 4, 8] and part["stopped"] is None
        for run in part["runs"]:
            positive(run, "step_s", "samples_per_s", "tokens_per_s", "target_tokens_per_s", "peak_gib",
                     "host_peak_gib", "mfu", "hfu")
            assert run["hfu"] > run["mfu"]  # recomputation under gradient checkpointing
    assert sorted(report["overhead"]) == ["1", "2", "4", "8"]
    assert all(isinstance(v, float) for v in report["overhead"].values())

    for name in ("lora", "qlora"):
        positive(report[name], "step_s", "samples_per_s", "peak_gib", "trainable_params")
        assert report[name]["trainable_params"] < meta["params"]
    for name in ("full", "lora", "qlora"):
        positive(report["export"][name], "export_s", "peak_gib", "host_peak_gib", "written_gib")

    # flex attention's backward needs a GPU: skipped, with the reason, and nothing else is
    assert "GPU" in report["flex_gradients"]["skipped"] and "GPU" in report["train"]["flex_attention"]["skipped"]
    assert [line.split(":")[0] for line in report["skipped"]] == ["flex"]


def test_a_batch_that_does_not_fit_ends_the_sweep(bench, tmp_path):
    from docvlm.model import ModelSpec
    from docvlm.module import DocVLM

    module = DocVLM(model=ModelSpec(name_or_path="tiny", image_size=224, patch_size=28, gradient_checkpointing=True))
    train = module.training_step

    def step(batch, batch_idx):
        if batch["input_ids"].shape[0] >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return train(batch, batch_idx)

    module.training_step = step
    s = bench.Settings(bench.Device(smoke=True), bench.Budget(300, ["eager"], time.perf_counter()),
                       warmup=1, steps=1, peak_tflops=989.0, tmp=tmp_path)
    batches = bench.make_batches(module.processor, [1, 2, 4, 8], target_tokens=8)
    groups, _, failure = bench.fit(module, batches, bench.schedule_of([1, 2, 4, 8], s), s, "eager")
    result = bench.sweep_runs(groups, module.net.config, batches, s, failure)

    assert [r["batch"] for r in result["runs"]] == [1, 2, 4]
    assert all(r["step_s"] > 0 for r in result["runs"][:2])
    assert result["runs"][2]["fits"] is False and result["runs"][2]["note"] == "does not fit"
    assert "CUDA out of memory" in result["runs"][2]["error"]
    assert result["stopped"] == "batch 4: does not fit"
    assert module._trainer is None and all(p.grad is None for p in module.parameters())  # released for the next phase


def test_a_batch_size_that_would_outrun_its_window_is_not_started(bench, tmp_path):
    s = bench.Settings(bench.Device(smoke=True), bench.Budget(300, ["eager"], time.perf_counter()),
                       warmup=1, steps=1, peak_tflops=989.0, tmp=tmp_path)
    groups = bench.Groups(bench.schedule_of([1, 2], s), s, "eager")
    groups.step_start(0)
    assert not groups.step_end(0)
    s.budget.deadlines["eager"] = time.perf_counter()  # the eager window is spent
    groups.step_start(1)
    assert groups.step_end(1)  # the last step of batch 1: batch 2 would not fit the window
    assert groups.stopped.startswith("batch 2 not run") and "memory" in groups.groups[1]

    s.budget.end = time.perf_counter()  # the whole run's time is spent: stop even within a batch size
    groups = bench.Groups(bench.schedule_of([1], s), s, "eager")
    groups.step_start(0)
    assert groups.step_end(0) and "budget ran out" in groups.stopped and "memory" in groups.groups[1]


def test_gradient_comparison(bench):
    reference = {"a": torch.ones(10), "b": torch.full((4,), 2.0), "tiny": torch.full((3,), 1e-9)}
    assert bench.compare_gradients(reference, dict(reference))["relative_error"] == 0.0
    other = {**reference, "b": reference["b"] * 1.1, "tiny": torch.zeros(3)}
    check = bench.compare_gradients(reference, other)
    assert check["worst_tensor"] == "b"  # not `tiny`, whose relative error is 1 but whose norm is negligible
    assert check["worst_tensor_relative_error"] == pytest.approx(0.1, rel=1e-5)
    assert check["relative_error"] == pytest.approx(0.4 / (10 + 16) ** 0.5, rel=1e-5)
    with pytest.raises(ValueError, match="different parameters"):
        bench.compare_gradients(reference, {"a": torch.ones(10)})


def test_the_real_architecture_builds_from_its_config():
    """`random:paligemma2-3b-896` through `load`: PaliGemma 2 3B at 896 px, transfer settings applied
    (built on the meta device: the shapes without 12 GB of weights)."""
    from docvlm.model import GLOBAL_WINDOW, ModelSpec, load

    with torch.device("meta"):
        model, processor = load(ModelSpec(name_or_path="random:paligemma2-3b-896", gradient_checkpointing=True))
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.image_size, vision.patch_size, vision.num_hidden_layers, vision.hidden_size,
            vision.intermediate_size, vision.num_attention_heads) == (896, 14, 27, 1152, 4304, 16)
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.num_key_value_heads,
            text.head_dim, text.intermediate_size, text.vocab_size) == (26, 2304, 8, 4, 256, 9216, 257216)
    assert text.final_logit_softcapping is None and text.sliding_window >= GLOBAL_WINDOW
    assert processor.image_seq_length == 4096 and model.config.image_token_id == processor.image_token_id
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(3.04e9, rel=0.01)
