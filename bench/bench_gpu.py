"""GPU figures of PaliGemma 2 3B at 896 px: training step, peak memory and MFU, LoRA, QLoRA, export.

    python bench/bench_gpu.py --out bench_gpu.json        # one GPU (H200), at most 8 minutes
    python bench/bench_gpu.py --smoke --out smoke.json    # the same code, tiny model on the CPU

The real architecture is built from its config with random weights (`random:paligemma2-3b-896`, see
`docvlm.model.paligemma2_3b_896_config`): the GPU machine has no network, and speed and memory do not
depend on the weights. Every training run goes through `DocVLM` and `lightning.Trainer` as `docvlm fit`
runs it (bf16-mixed with float32 master weights, gradient checkpointing, AdamW, clipping 1) on batches
collated by docvlm's `Collator` from synthetic tables; each target is cut or repeated to exactly
`--target-tokens` tokens, by default the PubTabNet task's `max_target_tokens` (4096, `<eos>` included):
the longest target sets a padded batch's length, so it decides which batch sizes fit.

Phases, in this order, each with its own share of `--budget` (time a phase leaves unused passes on):
- `eager`: batch 1, 2, 4, 8 with eager attention, stopping at the first batch that does not fit (CUDA
  OOM). One fit runs the sizes one after the other (`--warmup` + `--steps` steps each): at the end of every
  fit Lightning moves the model and the optimizer state to the CPU, which a fit per size would pay each time;
- `transformers`: the same steps written directly against transformers (`model(**batch).loss`, backward,
  clipping, AdamW, autocast bf16) on the same model and batches: docvlm's overhead (goal: at most 5%);
- `export_full`: one training step, then the export `docvlm fit` runs at its end (`ExportHF` in
  `on_fit_end`, which Lightning calls after moving the model and optimizer state to the CPU): time, GPU
  and host memory;
- `flex`: the gradients of `flex_attention` against eager's on one batch (same weights), then the batch
  sweep with flex attention; GPU only (flex attention's backward has no CPU kernel);
- `lora`, `qlora`: `configs/lora.yaml`'s and `configs/qlora.yaml`'s settings, one batch size
  (`--adapter-batch`): step time and peak memory, then the merged export at the end of the fit.
A phase starts only if its window has time left, a batch size only if the previous one's wall time
(scaled by the batch) fits; every skip and every error is recorded with its reason in the JSON.

Memory: on the GPU, torch's peak allocated (and reserved) bytes per batch size; on the host, the process's
resident size sampled every 10 ms (`host_peak_gib`; on the CPU in smoke mode that is the only figure).

FLOPs (`forward_flops`) are counted from the architecture, matrix products only (2 per multiply-add):
SigLIP's patch embedding, per layer q/k/v/o and the MLP plus attention scores and values over all
4096 image tokens (4 n^2 d), the projector; per Gemma 2 layer q/k/v/o, the gated MLP (3 matrices) and
attention over the whole sequence S (4 S^2 heads*head_dim: the full square, as PaLM's MFU formula counts
it, though the prefix-LM mask leaves the suffix causal), and the output head on the target positions only
(the logits docvlm computes). Model FLOPs = 3 x forward (forward + backward); hardware FLOPs add the
forward of every SigLIP and Gemma layer again (gradient checkpointing recomputes it). MFU and HFU divide
those by the step time and `--peak-tflops` (H200 SXM dense bf16: 989). The forward count is checked
against `torch.utils.flop_counter` on the model itself (`flops.counted_over_analytic`, 1.0 when it holds).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

STARTED = time.perf_counter()  # the 8-minute window includes the imports
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import docvlm.tasks as tasks  # noqa: E402
from docvlm.callbacks import ExportHF  # noqa: E402
from docvlm.items import Collator, TaskDataset  # noqa: E402
from docvlm.model import LoraSpec, ModelSpec  # noqa: E402
from docvlm.module import DocVLM  # noqa: E402

REAL = "random:paligemma2-3b-896"
PHASES = ("eager", "transformers", "export_full", "flex", "lora", "qlora")
# Seconds of an 8-minute window, per phase ("setup": imports, building the model and the batches);
# scaled to --budget. Flex compiles its kernels; QLoRA writes and reloads 12 GB to quantize.
SHARES = {"setup": 40, "eager": 80, "transformers": 60, "export_full": 30, "flex": 90, "lora": 60, "qlora": 90}
# Seconds a phase needs at least to start on the GPU (a 3B build, an export, a QLoRA round trip).
MIN_START = {"eager": 20, "transformers": 15, "export_full": 20, "flex": 45, "lora": 30, "qlora": 60}
BATCH_KEYS = ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "labels")
GIB = 2**30


# ----------------------------------------------------------------------------------------- time and memory
class Budget:
    """The run's time: a hard end (a training run that reaches it stops), and one window per phase,
    cumulative, so time a phase leaves unused passes on to the next ones."""

    def __init__(self, seconds: float, phases: list[str], start: float):
        self.start = start
        self.end = start + seconds
        names = ["setup", *phases]
        total = sum(SHARES[name] for name in names)
        self.deadlines, elapsed = {}, 0.0
        for name in names:
            elapsed += SHARES[name] / total * seconds
            self.deadlines[name] = start + elapsed

    def left(self, phase: str | None = None) -> float:
        return (self.deadlines[phase] if phase else self.end) - time.perf_counter()


class HostPeak:
    """The process's largest resident size while it runs, read from /proc every 10 ms (Linux)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def start(self) -> None:
        self.peak = self.resident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.resident())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.resident()) / GIB


class Device:
    """Synchronisation and peak memory on the GPU; the host's resident size on both."""

    def __init__(self, smoke: bool):
        self.cuda = torch.cuda.is_available() and not smoke
        self.type = "cuda" if self.cuda else "cpu"
        self.torch = torch.device(self.type)
        self.host = HostPeak()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def start_peak(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.host.start()

    def peak(self) -> dict[str, Any]:
        """Since `start_peak`: the GPU's allocated and reserved peaks and the host's; `peak_gib` is the
        device's (the host's in smoke mode)."""
        self.sync()
        host = self.host.stop()
        if not self.cuda:
            return {"peak_gib": host, "host_peak_gib": host}
        return {"peak_gib": torch.cuda.max_memory_allocated() / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB, "host_peak_gib": host}

    def building(self):
        """Where models are built: directly on the GPU (3B random weights initialise in seconds there)."""
        return torch.device("cuda") if self.cuda else contextlib.nullcontext()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


# ------------------------------------------------------------------------------------------------ FLOPs
def forward_flops(config, seq_len: int, target_tokens: int) -> tuple[float, float]:
    """(whole forward, the part in checkpointed layers) in FLOPs for one sample of `seq_len` text-model
    positions (image tokens included) and `target_tokens` labelled positions. See the module docstring."""
    v, t = config.vision_config, config.text_config
    n = (v.image_size // v.patch_size) ** 2
    vision_layer = 2 * n * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size) + 4 * n * n * v.hidden_size
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    s = seq_len
    text_layer = 2 * s * t.hidden_size * (2 * q + 2 * kv) + 6 * s * t.hidden_size * t.intermediate_size + 4 * s * s * q
    layers = v.num_hidden_layers * vision_layer + t.num_hidden_layers * text_layer
    patch = 2 * n * 3 * v.patch_size**2 * v.hidden_size
    projector = 2 * n * v.hidden_size * t.hidden_size
    head = 2 * target_tokens * t.hidden_size * t.vocab_size
    return float(patch + layers + projector + head), float(layers)


def flops_per_batch(config, batch: dict) -> dict[str, float]:
    """Model and hardware FLOPs of one training step with gradient checkpointing on `batch` (each row at
    its own length)."""
    lengths = batch["attention_mask"].sum(1).tolist()
    targets = (batch["labels"] != -100).sum(1).tolist()
    model = hardware = 0.0
    for seq_len, target in zip(lengths, targets):
        forward, layers = forward_flops(config, seq_len, target)
        model += 3 * forward
        hardware += 3 * forward + layers
    return {"model": model, "hardware": hardware}


# ------------------------------------------------------------------------------------------------- data
def make_batches(processor, sizes: list[int], target_tokens: int) -> dict[int, dict]:
    """One collated batch per size, through docvlm's `TaskDataset` and `Collator`: synthetic tables (the
    PubTabNet task), each target made exactly `target_tokens` long with `<eos>`."""
    task = tasks.get("tables")
    samples = list(task.synthesize(max(sizes), seed=0))
    tokenizer = processor.tokenizer
    targets = []
    for sample in samples:
        text = sample.target
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < target_tokens:
            text += sample.target
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        text = text[: offsets[target_tokens - 2][1]]  # target_tokens - 1 tokens, then <eos>
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) != target_tokens - 1:
            raise RuntimeError("a target could not be cut to the requested token count")
        targets.append(text)
    dataset = TaskDataset(samples, task, processor.image_processor.size["height"], augment=None, targets=targets)
    collate = Collator(processor, with_targets=True)
    batches = {b: collate([dataset[i] for i in range(b)]) for b in sizes}
    for b, batch in batches.items():
        if int((batch["labels"] != -100).sum()) != b * target_tokens:
            raise RuntimeError(f"batch {b}: labels do not cover {target_tokens} target tokens per sample")
    return batches


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: batch[k].to(device) for k in BATCH_KEYS}


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class Settings:
    device: Device
    budget: Budget
    warmup: int
    steps: int
    peak_tflops: float
    tmp: Path
    skipped: list[str] = field(default_factory=list)


class Groups:
    """Step ends and peak memory per batch size over a schedule (one batch size per step, in groups);
    says when to stop: at the budget's hard end, or before a group whose estimate (the previous group's
    wall time scaled by the batch) does not fit the phase's window."""

    def __init__(self, schedule: list[int], s: Settings, phase: str):
        self.schedule, self.s, self.phase = schedule, s, phase
        self.groups: dict[int, dict[str, Any]] = {}
        self.running: int | None = None  # the batch size whose steps have started and not all ended
        self.stopped: str | None = None

    def step_start(self, index: int) -> None:
        size = self.schedule[index]
        if index == 0 or self.schedule[index - 1] != size:
            self.s.device.start_peak()
            self.groups[size] = {"start": time.perf_counter(), "ends": []}
            self.running = size

    def step_end(self, index: int) -> bool:
        """Whether to stop after this step."""
        self.s.device.sync()
        size = self.schedule[index]
        group = self.groups[size]
        group["ends"].append(time.perf_counter())
        last = index + 1 == len(self.schedule) or self.schedule[index + 1] != size
        if last:
            group["memory"] = self.s.device.peak()
            self.running = None
        if self.s.budget.left() <= 0:
            self.stopped = f"the run's time budget ran out during batch {size}"
        elif last and index + 1 < len(self.schedule):
            following = self.schedule[index + 1]
            estimate = (group["ends"][-1] - group["start"]) * following / size
            left = self.s.budget.left(self.phase)
            if estimate > left:
                self.stopped = (f"batch {following} not run: estimated {estimate:.0f} s, "
                                f"{max(left, 0):.0f} s left in the {self.phase} window")
        if self.stopped and self.running is not None:
            group["memory"] = self.s.device.peak()
            self.running = None
        return self.stopped is not None


class GroupsCallback(L.Callback):
    def __init__(self, groups: Groups):
        self.groups = groups

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.groups.step_start(batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.groups.step_end(batch_idx):
            trainer.should_stop = True


class ExportProbe(L.Callback):
    """`docvlm fit`'s export at the end of the fit (`ExportHF`), timed, with its peak memory."""

    def __init__(self, device: Device, directory: Path):
        self.device = device
        self.export = ExportHF(dirpath=str(directory))
        self.directory = directory
        self.result: dict[str, Any] = {}

    def on_fit_end(self, trainer, pl_module) -> None:
        where = next(pl_module.parameters()).device.type
        self.device.start_peak()
        host_before = HostPeak.resident() / GIB
        start = time.perf_counter()
        self.export.on_fit_end(trainer, pl_module)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in self.directory.rglob("*") if f.is_file())
        self.result = {"export_s": seconds, **self.device.peak(), "host_before_gib": host_before,
                       "model_on": where, "written_gib": size / GIB}


def failed(error: BaseException) -> dict[str, Any]:
    """What is kept of an error: its first line and whether it was CUDA running out of memory (the
    exception itself is dropped, its traceback holds the failed step's tensors)."""
    if not out_of_memory(error):
        traceback.print_exc()
    return {"error": first_line(error), "fits": not out_of_memory(error)}


def sweep_runs(groups: Groups, config, batches: dict[int, dict], s: Settings, failure: dict | None,
               with_flops: bool = True) -> dict[str, Any]:
    """Figures per batch size that ran, then the size that failed (does not fit, or another error)."""
    runs = [summarize(g, batches[size], config, s, with_flops) for size, g in groups.groups.items()
            if "memory" in g]
    if groups.stopped:
        s.skipped.append(f"{groups.phase}: {groups.stopped}")
    if failure is None:
        return {"runs": runs, "stopped": groups.stopped}
    size = groups.running
    runs.append({"batch": size, **failure, **({"note": "does not fit"} if not failure["fits"] else {})})
    return {"runs": runs, "stopped": f"batch {size}: {'error' if failure['fits'] else 'does not fit'}"}


def summarize(group: dict, batch: dict, config, s: Settings, with_flops: bool = True) -> dict[str, Any]:
    """Per-step figures from the ends of the measured steps (after `warmup`)."""
    ends = group["ends"]
    size = int(batch["input_ids"].shape[0])
    out: dict[str, Any] = {"batch": size, "fits": True, **group["memory"]}
    if len(ends) < s.warmup + 1:
        out["error"] = f"only {len(ends)} steps ran (budget): no measured step after {s.warmup} warm-up steps"
        return out
    measured = ends[s.warmup - 1:]  # from the end of the last warm-up step
    step_s = (measured[-1] - measured[0]) / (len(measured) - 1)
    tokens = int(batch["attention_mask"].sum())
    targets = int((batch["labels"] != -100).sum())
    out.update(step_s=step_s, measured_steps=len(measured) - 1, samples_per_s=size / step_s,
               tokens_per_s=tokens / step_s, target_tokens_per_s=targets / step_s)
    if with_flops:
        flops = flops_per_batch(config, batch)
        peak = s.peak_tflops * 1e12
        out.update(model_tflop_per_step=flops["model"] / 1e12, mfu=flops["model"] / step_s / peak,
                   hfu=flops["hardware"] / step_s / peak)
    return out


def schedule_of(sizes: list[int], s: Settings) -> list[int]:
    return [size for size in sizes for _ in range(s.warmup + s.steps)]


def fit(module: DocVLM, batches: dict[int, dict], schedule: list[int], s: Settings, phase: str,
        export_to: Path | None = None) -> tuple[Groups, ExportProbe | None, dict | None]:
    """The schedule's steps of `module` under `lightning.Trainer` as `docvlm fit` runs them (bf16-mixed,
    clipping 1), in one fit; with `export_to`, the end-of-fit export measured too. An error (CUDA OOM)
    is returned (`failed`), not raised: the groups before it have their figures."""
    groups = Groups(schedule, s, phase)
    probe = ExportProbe(s.device, export_to) if export_to is not None else None
    trainer = L.Trainer(
        accelerator="gpu" if s.device.cuda else "cpu", devices=1, precision="bf16-mixed",
        max_steps=len(schedule), max_epochs=1, gradient_clip_val=1.0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(s.tmp / "runs"),
        callbacks=[GroupsCallback(groups), *([probe] if probe else [])],
    )
    loader = DataLoader([batches[size] for size in schedule], batch_size=None, shuffle=False)
    failure = None
    try:
        trainer.fit(module, train_dataloaders=loader)
    except Exception as error:  # noqa: BLE001 - CUDA OOM at a batch size ends the sweep, not the run
        failure = failed(error)
    finally:
        module.trainer = None  # the trainer holds the optimizer state: let it go with the trainer
        module.zero_grad(set_to_none=True)
        if groups.running is not None:
            s.device.host.stop()
    return groups, probe, failure


def transformers_fit(model, batches: dict[int, dict], schedule: list[int], s: Settings, phase: str
                     ) -> tuple[Groups, dict | None]:
    """The same steps written directly against transformers: the model's own loss, backward, clipping,
    AdamW (as `DocVLM.configure_optimizers` builds it), bf16 autocast around the forward."""
    groups = Groups(schedule, s, phase)
    model.to(s.device.torch).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    failure = None
    try:
        for index, size in enumerate(schedule):
            groups.step_start(index)
            inputs = to_device(batches[size], s.device.torch)
            with torch.autocast(s.device.type, dtype=torch.bfloat16):
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if groups.step_end(index):
                break
    except Exception as error:  # noqa: BLE001 - as `fit`
        failure = failed(error)
    finally:
        optimizer.state.clear()
        model.zero_grad(set_to_none=True)
        if groups.running is not None:
            s.device.host.stop()
    return groups, failure


def run_phase(name: str, s: Settings, body: Callable[[], dict]) -> dict[str, Any]:
    """A phase that starts only with time left in its window; its errors are recorded, not raised."""
    left = s.budget.left(name)
    need = MIN_START[name] if s.device.cuda else 0
    if left < need:
        reason = f"not run: {max(left, 0):.0f} s left in its window, needs at least {need} s"
        s.skipped.append(f"{name}: {reason}")
        return {"skipped": reason}
    start = time.perf_counter()
    try:
        result = body()
    except Exception as error:  # noqa: BLE001 - recorded, the next phases still run
        result = failed(error)
    s.device.free()
    result["phase_s"] = time.perf_counter() - start
    return result


# -------------------------------------------------------------------------------------------- gradients
def gradients(module: DocVLM, batch: dict, device: Device) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of one bf16-mixed step of `module.loss` (what `training_step` runs)."""
    module.to(device.torch).train()
    module.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = module.loss(to_device(batch, device.torch))
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in module.net.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return float(loss), grads


def compare_gradients(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Relative L2 error of all gradients together and the worst single tensor (among tensors whose
    reference norm is at least 1e-3 of the largest one: tiny norms make relative errors meaningless)."""
    if reference.keys() != other.keys():
        raise ValueError(f"different parameters have gradients: {sorted(reference.keys() ^ other.keys())[:3]}")
    norms = {n: float(g.norm()) for n, g in reference.items()}
    diffs = {n: float((other[n] - g).norm()) for n, g in reference.items()}
    total = sum(v**2 for v in norms.values()) ** 0.5
    floor = 1e-3 * max(norms.values())
    relative = {n: diffs[n] / norms[n] for n in norms if norms[n] >= floor}
    worst = max(relative, key=relative.get)
    return {"relative_error": sum(v**2 for v in diffs.values()) ** 0.5 / total,
            "worst_tensor": worst, "worst_tensor_relative_error": relative[worst], "tensors": len(reference)}


# ------------------------------------------------------------------------------------------------ main
class Models:
    """The modules alive at a time: the 3B model is 12 GB of float32 weights, so at most two."""

    def __init__(self, spec: ModelSpec, device: Device, lr: float = 1e-4):
        self.spec, self.device, self.lr = spec, device, lr
        self.modules: dict[str, DocVLM] = {}
        self.build_s: dict[str, float] = {}

    def get(self, name: str, **changes) -> DocVLM:
        if name not in self.modules:
            start = time.perf_counter()
            with self.device.building():
                module = DocVLM(model=dataclasses.replace(self.spec, **changes), lr=self.lr, task=tasks.get("tables"))
            self.modules[name] = module
            self.device.sync()
            self.build_s[name] = time.perf_counter() - start
        return self.modules[name]

    def drop(self, *names: str) -> None:
        for name in names:
            self.modules.pop(name, None)
        self.device.free()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny model (224 px / patch 28) on the CPU")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default 450; smoke 300)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes, growing")
    parser.add_argument("--adapter-batch", type=int, help="LoRA and QLoRA batch size (default 4; smoke 2)")
    parser.add_argument("--target-tokens", type=int,
                        help="target length with <eos> (default: the task's 4096; smoke 64)")
    parser.add_argument("--warmup", type=int, help="warm-up steps per batch size (default 2; smoke 1)")
    parser.add_argument("--steps", type=int, help="measured steps per batch size (default 3; smoke 2)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H200 SXM: 989)")
    parser.add_argument("--grad-tolerance", type=float, default=0.05,
                        help="largest relative L2 error of all of flex's gradients against eager's")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    if set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(set(phases) - set(PHASES))}")
    args.warmup = args.warmup or (1 if args.smoke else 2)
    args.steps = args.steps or (2 if args.smoke else 3)
    sizes = [int(b) for b in args.batches.split(",")]
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|smaller than the logging).*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    device = Device(args.smoke)
    if not device.cuda and not args.smoke:
        parser.error("no CUDA device: run with --smoke (tiny model on the CPU) or on a GPU")
    if not device.cuda:
        torch.set_num_threads(1)  # a shared CPU: more threads than free cores makes small steps 10x slower
    budget = Budget(args.budget or (300.0 if args.smoke else 450.0), phases, STARTED)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    s = Settings(device, budget, args.warmup, args.steps, args.peak_tflops, tmp)
    spec = (ModelSpec(name_or_path="tiny", image_size=224, patch_size=28, gradient_checkpointing=True) if args.smoke
            else ModelSpec(name_or_path=REAL, gradient_checkpointing=True))
    target_tokens = args.target_tokens or (64 if args.smoke else tasks.get("tables").max_target_tokens)
    adapter_batch = args.adapter_batch or (2 if args.smoke else 4)

    models = Models(spec, device)
    eager = models.get("eager")
    config = eager.net.config
    batches = make_batches(eager.processor, sorted({*sizes, adapter_batch}), target_tokens)
    one = batches[min(sizes)]
    report: dict[str, Any] = {"meta": {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "smoke": args.smoke,
        "device": torch.cuda.get_device_name(0) if device.cuda else f"CPU ({platform.machine()}), 1 thread",
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / GIB if device.cuda else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__, "lightning": L.__version__,
                     "peft": __import__("peft").__version__},
        "model": spec.name_or_path, "image_size": config.vision_config.image_size,
        "image_tokens": (config.vision_config.image_size // config.vision_config.patch_size) ** 2,
        "params": sum(p.numel() for p in eager.net.parameters()),
        "target_tokens": target_tokens, "sequence_length": int(one["input_ids"].shape[1]),
        "precision": "bf16-mixed (float32 weights)", "gradient_checkpointing": True,
        "warmup_steps": args.warmup, "measured_steps": args.steps, "peak_tflops": args.peak_tflops,
        "budget_s": budget.end - budget.start, "phases": phases, "build_eager_s": models.build_s["eager"],
    }}

    # the FLOP formula against torch's own count of the model's forward (eager: every matmul is visible)
    eager.net.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16), FlopCounterMode(display=False) as count:
        eager.loss(to_device(one, device.torch))
    eager.net.train()
    analytic = sum(forward_flops(config, int(n), int(t))[0]
                   for n, t in zip(one["attention_mask"].sum(1), (one["labels"] != -100).sum(1)))
    per_sample = {k: v / len(one["input_ids"]) for k, v in flops_per_batch(config, one).items()}
    report["flops"] = {
        "per_sample_model_tflop": per_sample["model"] / 1e12,
        "per_sample_hardware_tflop": per_sample["hardware"] / 1e12,
        "per_token_model_gflop": per_sample["model"] / report["meta"]["sequence_length"] / 1e9,
        "analytic_forward": analytic, "counted_forward": count.get_total_flops(),
        "counted_over_analytic": count.get_total_flops() / analytic,
        "formula": "matmul FLOPs (2 per multiply-add): SigLIP patches + layers (attention over all image tokens) "
                   "+ projector + Gemma 2 layers (attention over the full sequence) + output head on target "
                   "positions; model = 3 x forward, hardware = model + forward of the checkpointed layers",
    }

    def docvlm_sweep(module: DocVLM, phase: str) -> dict:
        groups, _, failure = fit(module, batches, schedule_of(sizes, s), s, phase)
        return sweep_runs(groups, config, batches, s, failure)

    if "eager" in phases:
        report.setdefault("train", {})["eager"] = run_phase("eager", s,
                                                           lambda: docvlm_sweep(models.get("eager"), "eager"))
    if "transformers" in phases:
        def baseline() -> dict:
            groups, failure = transformers_fit(models.get("eager").net, batches, schedule_of(sizes, s), s,
                                              "transformers")
            return sweep_runs(groups, config, batches, s, failure)
        report["transformers"] = {"eager": run_phase("transformers", s, baseline)}
        ours = {r["batch"]: r for r in report.get("train", {}).get("eager", {}).get("runs", []) if "step_s" in r}
        theirs = {r["batch"]: r for r in report["transformers"]["eager"].get("runs", []) if "step_s" in r}
        report["overhead"] = {str(b): ours[b]["step_s"] / theirs[b]["step_s"] - 1
                              for b in sizes if b in ours and b in theirs}
    if "export_full" in phases:
        def export_full() -> dict:
            _, probe, failure = fit(models.get("eager"), batches, [min(sizes)], s, "export_full",
                                    export_to=tmp / "full")
            shutil.rmtree(tmp / "full", ignore_errors=True)
            return failure or probe.result
        report.setdefault("export", {})["full"] = run_phase("export_full", s, export_full)
    if "flex" in phases:
        if not device.cuda:
            reason = "flex attention's backward runs only on a GPU (no CPU kernel): not run in smoke mode"
            report["flex_gradients"] = {"skipped": reason}
            report.setdefault("train", {})["flex_attention"] = {"skipped": reason}
            s.skipped.append(f"flex: {reason}")
        else:
            def flex() -> dict:
                flex_module = models.get("flex", attn_implementation="flex_attention")
                flex_module.net.load_state_dict(models.get("eager").net.state_dict())
                t0 = time.perf_counter()
                eager_loss, eager_grads = gradients(models.get("eager"), one, device)
                t1 = time.perf_counter()
                flex_loss, flex_grads = gradients(flex_module, one, device)
                t2 = time.perf_counter()
                check = compare_gradients(eager_grads, flex_grads)
                del eager_grads, flex_grads
                models.drop("eager")
                check.update(eager_loss=eager_loss, flex_loss=flex_loss, tolerance=args.grad_tolerance,
                             within_tolerance=check["relative_error"] <= args.grad_tolerance,
                             batch=len(one["input_ids"]), eager_step_s=t1 - t0, flex_first_step_s=t2 - t1)
                report["flex_gradients"] = check
                return docvlm_sweep(flex_module, "flex")
            result = report.setdefault("train", {})["flex_attention"] = run_phase("flex", s, flex)
            if "flex_gradients" not in report:
                report["flex_gradients"] = ({"skipped": result["skipped"]} if "skipped" in result else
                                            {"error": "the flex phase failed before the comparison: "
                                             + result["error"]})
    models.drop("eager", "flex")
    adapters = {"lora": {"lora": LoraSpec(), "freeze_vision": True, "freeze_projector": True},
                "qlora": {"lora": LoraSpec(), "quantize": "nf4"}}
    for name, changes in adapters.items():
        if name not in phases:
            continue
        if name == "qlora" and not bitsandbytes_installed():
            report[name] = {"skipped": "bitsandbytes is not installed"}
            s.skipped.append("qlora: bitsandbytes is not installed")
            continue

        def adapter(name=name, changes=changes) -> dict:
            try:
                module = models.get(name, **changes)
                trained = sum(p.numel() for p in module.net.parameters() if p.requires_grad)
                schedule = [adapter_batch] * (s.warmup + s.steps)
                groups, probe, failure = fit(module, batches, schedule, s, name, export_to=tmp / name)
            finally:
                shutil.rmtree(tmp / name, ignore_errors=True)
                models.drop(name)
            report.setdefault("export", {})[name] = probe.result or {"error": "the fit ended before its export"}
            result = sweep_runs(groups, config, batches, s, failure, with_flops=False)
            run = result["runs"][0] if result["runs"] else {"error": result["stopped"]}
            return {**run, "trainable_params": trained, "build_s": models.build_s[name],
                    "settings": {k: (dataclasses.asdict(v) if isinstance(v, LoraSpec) else v)
                                 for k, v in changes.items()}}
        report[name] = run_phase(name, s, adapter)
    shutil.rmtree(tmp, ignore_errors=True)
    report["skipped"] = s.skipped
    report["meta"]["wall_s"] = time.perf_counter() - STARTED
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    return report


def bitsandbytes_installed() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(report: dict) -> None:
    meta = report["meta"]
    print(f"\n{meta['model']} on {meta['device']}: {meta['image_tokens']} image tokens, targets of "
          f"{meta['target_tokens']} tokens, sequence {meta['sequence_length']}, "
          f"{meta['params'] / 1e9:.2f} B parameters")
    print("| path | batch | step s | samples/s | tokens/s | peak GiB | host GiB | MFU | HFU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    paths = [(f"docvlm {k}", v) for k, v in report.get("train", {}).items()]
    paths += [(f"transformers {k}", v) for k, v in report.get("transformers", {}).items()]
    paths += [(f"docvlm {k}", {"runs": [report[k]]} if "batch" in report[k] else report[k])
              for k in ("lora", "qlora") if k in report]
    for label, part in paths:
        for r in part.get("runs", []):
            if "step_s" in r:
                flops = f"{100 * r['mfu']:.1f}% | {100 * r['hfu']:.1f}%" if "mfu" in r else " | "
                print(f"| {label} | {r['batch']} | {r['step_s']:.3f} | {r['samples_per_s']:.2f} | "
                      f"{r['tokens_per_s']:.0f} | "
                      f"{r['peak_gib']:.1f} | {r['host_peak_gib']:.1f} | {flops} |")
            else:
                print(f"| {label} | {r['batch']} | {r.get('note') or r.get('error')} | | | | | | |")
        if "skipped" in part or "error" in part:
            print(f"| {label} | | {part.get('skipped') or part.get('error')} | | | | | | |")
    for b, ratio in report.get("overhead", {}).items():
        print(f"overhead of docvlm at batch {b}: {100 * ratio:+.1f}% (goal: at most +5%)")
    grads = report.get("flex_gradients")
    if grads:
        print("flex vs eager gradients: " + (grads.get("skipped") or grads.get("error") or
              f"relative error {grads['relative_error']:.2e} (tolerance {grads['tolerance']}), "
              f"worst tensor {grads['worst_tensor_relative_error']:.2e}"))
    for name, r in report.get("export", {}).items():
        if "export_s" in r:
            print(f"export ({name}, model on {r['model_on']}): {r['export_s']:.1f} s, "
                  f"device peak {r['peak_gib']:.1f} GiB, "
                  f"host peak {r['host_peak_gib']:.1f} GiB (before {r['host_before_gib']:.1f}), "
                  f"wrote {r['written_gib']:.2f} GiB")
        else:
            print(f"export ({name}): {r.get('skipped') or r.get('error')}")
    flops = report["flops"]
    print(f"FLOPs per sample: model {flops['per_sample_model_tflop']:.2f} TFLOP, hardware "
          f"{flops['per_sample_hardware_tflop']:.2f} TFLOP; "
          f"counted/analytic forward {flops['counted_over_analytic']:.4f}")
    for line in report["skipped"]:
        print(f"skipped: {line}")
    print(f"wall time {meta['wall_s']:.0f} s (budget {meta['budget_s']:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
