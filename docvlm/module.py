"""The LightningModule: suffix-only loss (per-example mean as big_vision, or per-token mean as
transformers), AdamW with warm-up and cosine decay, validation by decoding and the task's metrics."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from docvlm import describe, mixture
from docvlm.decode import Decoding, Generation, generate
from docvlm.errors import DataError
from docvlm.items import FILLER
from docvlm.model import TINY, ModelSpec, load, model_spec, save_pretrained, unwrap
from docvlm.tasks.base import Task


def suffix_loss(
    model, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0, reduction: str = "per_example"
) -> torch.Tensor:
    """Cross-entropy over suffix tokens only; logits are computed only where a label counts.

    A position counts when it is in the suffix (`token_type_ids == 1`), not padding, and has a label,
    so labels at prefix or pad positions cannot leak into the loss. Computing the vocabulary
    projection on those positions alone spares the (sequence x 257k) logits of the image and prompt.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(
        input_ids=batch["input_ids"],
        pixel_values=batch["pixel_values"].to(next(base.parameters()).dtype),
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        use_cache=False,
    ).last_hidden_state
    labels = batch["labels"][:, 1:]  # position t predicts token t+1
    mask = (labels != -100) & (batch["token_type_ids"][:, 1:] == 1) & (batch["attention_mask"][:, 1:] == 1)
    logits = base.lm_head(hidden[:, :-1][mask]).float()
    cap = base.config.get_text_config().final_logit_softcapping
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    token_loss = F.cross_entropy(logits, labels[mask], reduction="none", label_smoothing=label_smoothing)
    if reduction == "per_token":
        return token_loss.mean()
    rows = mask.nonzero()[:, 0]
    per_example = torch.zeros(mask.shape[0], device=token_loss.device).index_add(0, rows, token_loss)
    counts = mask.sum(1)
    return (per_example[counts > 0] / counts[counts > 0]).mean()


class DocVLM(L.LightningModule):
    """PaliGemma 2 fine-tuned on one task (or a mixture: `docvlm.mixture`).

    Args:
        model: which checkpoint to load and how (dtype, freezing, LoRA, gradient checkpointing).
        lr: peak learning rate of AdamW (paper: 1e-4 tables, molecules, music; 5e-6 radiology).
        warmup_steps: optimizer steps of linear warm-up before the cosine decay to zero.
        weight_decay: AdamW weight decay (the paper uses none).
        label_smoothing: label smoothing of the token cross-entropy (paper: 0.1 molecules and music).
        loss_reduction: `per_example` averages each example's suffix tokens, then the batch
            (big_vision, the paper); `per_token` averages all suffix tokens of the batch
            (transformers' default, which weights long targets more).
        decoding: how validation, test and predict decode.
        task: the task (or the mixture); linked from the data module's (`data.task` or `data.mixture`) by the CLI.
    """

    def __init__(
        self,
        model: ModelSpec = ModelSpec(),
        lr: float = 1e-4,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
        loss_reduction: Literal["per_example", "per_token"] = "per_example",
        decoding: Decoding = Decoding(),
        task: Task | mixture.Mixture | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["task"])
        self.task = task
        # from a checkpoint (`load_from_checkpoint`) the dataclasses come back as dicts
        model = model_spec(model)
        self.net, self.processor = load(model)
        # a 4-bit base is rebuilt from `model.name_or_path` on loading: checkpoints keep the trained weights
        self.base_in_checkpoint = model.quantize is None
        self.strict_loading = self.base_in_checkpoint
        self.decoding = Decoding(**decoding) if isinstance(decoding, dict) else decoding
        self._outputs: list[dict[str, Any]] = []
        self.skipped_images = 0
        self._epoch_samples = 0
        self._epoch_batches = 0  # batches this process saw in the epoch (a resumed run may see none of one)
        self._first_skipped: str | None = None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return suffix_loss(self.net, batch, self.hparams.label_smoothing, self.hparams.loss_reduction)

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        self.skipped_images += len(batch["skipped"])
        self._epoch_batches += 1
        self._first_skipped = self._first_skipped or next(iter(batch["skipped"]), None)
        if "input_ids" not in batch:  # every image of the batch was unreadable and skipped
            if self.trainer.world_size == 1:
                return None  # Lightning skips the step
            # the other ranks step: join their gradient all-reduce with zero gradients, or DDP hangs
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        loss = self.loss(batch)
        size = batch["input_ids"].shape[0]
        self._epoch_samples += size
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        if self.skipped_images:
            self.log("train/skipped_images", float(self.skipped_images), batch_size=size)
        return loss

    def on_train_epoch_end(self) -> None:
        """A whole epoch without one readable image (`on_bad_image: skip` dropped them all) is an error: the
        run would otherwise end as if it had trained, and export an untrained model. An epoch of which this run
        saw no batch (resumed from a checkpoint saved at its last step) says nothing."""
        counts = torch.tensor([float(self._epoch_samples), float(self._epoch_batches)], device=self.device)
        if self.trainer.world_size > 1:  # every rank takes part, so that all stop together
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        trained, seen = (int(c) for c in counts.tolist())
        self._epoch_samples = self._epoch_batches = 0
        if seen and not trained:
            first = f"; the first: {self._first_skipped}" if self._first_skipped else ""
            raise DataError(f"data.train: no usable sample was found: every image of the epoch was unreadable and "
                            f"skipped (data.on_bad_image: skip){first}")

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> int | None:
        """-1 (Lightning ends the epoch) on every rank at once when any rank's streamed rows have run out
        (`StreamDataset(even=True)` then serves filler items): one flag all-reduced per step."""
        if self.trainer.world_size == 1 or not isinstance(getattr(self.trainer.train_dataloader, "dataset", None),
                                                          torch.utils.data.IterableDataset):
            return None
        out_of_rows = torch.tensor(int("index" in batch and bool((batch["index"] == FILLER).any())), device=self.device)
        return -1 if self.trainer.strategy.reduce(out_of_rows, reduce_op="max") else None

    def setup(self, stage: str) -> None:
        """The tiny model on the CPU runs on one intra-op thread, unless OMP_NUM_THREADS asks for more: its
        operations are so small that torch's threads spend them waiting for each other, and for the core another
        process holds on a shared machine (BENCHMARKS.md, "Demo: threads on a shared machine")."""
        if (model_spec(self.hparams.model).name_or_path == TINY and isinstance(self.trainer.accelerator, CPUAccelerator)
                and "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > 1):
            torch.set_num_threads(1)
            rank_zero_info("docvlm: 1 intra-op thread for the tiny model on the CPU (OMP_NUM_THREADS=N sets more)")

    def on_fit_start(self) -> None:
        counts = getattr(self.trainer.datamodule, "overlength_counts", {})
        rank_zero_info(
            f"docvlm: loss = {self.hparams.loss_reduction.replace('_', '-')} mean over suffix tokens, "
            f"label smoothing {self.hparams.label_smoothing}; "
            f"targets over max_target_tokens in train: {counts.get('train', 'counted as read (streamed)')}"
        )

    # ------------------------------------------------------------------------------- optimization
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = min(self.hparams.warmup_steps, total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------ decoding
    def decode(self, batch: dict[str, Any], task: Task | None = None) -> list[str]:
        """Texts for a batch, by `docvlm.decode.generate`: what `convert`, `evaluate` and `docvlm.load` run."""
        return [g.text for g in self.generations(batch, task)]

    def generations(self, batch: dict[str, Any], task: Task | None = None) -> list[Generation]:
        """`decode`'s outputs whole: with the tokens' probabilities for a task that `wants_token_scores`."""
        task = task or self.task
        max_new = self.decoding.max_new_tokens or task.max_target_tokens
        return generate(self.net, self.processor, batch, self.decoding, max_new, task.wants_token_scores)

    def _collect(self, batch: dict[str, Any], split: str, part: int = 0) -> None:
        """Decode a batch of task `part` (a mixture's validation loader of that task; 0 for one task)."""
        if "input_ids" not in batch:
            return
        name, task = mixture.tasks_of(self.task)[part]
        decoded = zip(batch["index"].tolist(), batch["id"], batch["target"], self.generations(batch, task))
        for index, id_, target, generation in decoded:
            confidences = task.confidences(generation)
            self._outputs.append({"index": index, "id": id_, "image": self._image_path(split, index, part),
                                  "target": target, "prediction": generation.text,
                                  **({"confidences": confidences} if confidences is not None else {}),
                                  **({"task": name} if name else {})})

    def _image_path(self, split: str, index: int, part: int = 0) -> str | None:
        """The sample's image file, so that a report made from the predictions file can show it."""
        datamodule = getattr(self.trainer, "datamodule", None)
        datamodule = datamodule.parts[part] if getattr(datamodule, "parts", None) else datamodule
        dataset = getattr(datamodule, "datasets", {}).get(split)
        samples = getattr(dataset, "samples", None)  # a streamed split keeps none
        image = samples[index].image if samples is not None else None
        return str(Path(image).resolve()) if isinstance(image, (str, Path)) else None

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, "val", dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def _score(self, stage: str) -> None:
        """Gather every rank's predictions, drop the duplicates a distributed sampler pads with,
        and score the whole set once on every rank (so every rank logs the same numbers)."""
        outputs, self._outputs = self._outputs, []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[list[dict]] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
            torch.distributed.all_gather_object(gathered, outputs)
            outputs = [row for rank_rows in gathered for row in rank_rows]
        if self.trainer.sanity_checking or not outputs:
            return
        tasks, metrics, scores, rows = mixture.tasks_of(self.task), {}, {}, []
        for name, task in tasks:  # a mixture's tasks each on their own rows, as `val/<task>/<metric>`
            mine = sorted({r["index"]: r for r in outputs if r.get("task") == name}.values(), key=lambda r: r["index"])
            if not mine:
                continue
            prefix = f"{stage}/{name}/" if name else f"{stage}/"
            scores[name] = task.score_with([r["prediction"] for r in mine], [r["target"] for r in mine],
                                           [r.get("confidences") for r in mine])
            metrics.update({f"{prefix}{metric}": float(value) for metric, value in scores[name].items()})
            metrics[f"{prefix}samples"] = float(len(mine))
            rows += mine
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)
        if isinstance(self.task, mixture.Mixture):  # the figure that selects checkpoints, on the progress line
            self.log(f"{stage}/{mixture.SCORE}", mixture.score(scores, tasks), prog_bar=True, rank_zero_only=False)
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "predictions"  # collective
        if self.trainer.is_global_zero:
            self._write_predictions(folder, stage, rows)

    def _write_predictions(self, folder: Path, stage: str, rows: list[dict]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage}-step{self.global_step}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        if "input_ids" not in batch:
            return []
        return [{"id": i, "prediction": p} for i, p in zip(batch["id"], self.decode(batch))]

    # --------------------------------------------------------------------------------- checkpoints
    def _trained_keys(self) -> set[str]:
        return {f"net.{name}" for name, p in self.net.named_parameters() if p.requires_grad}

    def description(self) -> dict[str, Any] | None:
        """What the model is (task, prompt, decoding) and its last validation metrics: `docvlm.json`."""
        if self.task is None:
            return None
        metrics, measured_on, found = {}, None, {}
        size = self.processor.image_processor.size["height"]
        if self._trainer is not None:
            found = {k[len("val/"):]: float(v) for k, v in self.trainer.callback_metrics.items()
                     if k.startswith("val/")}
            samples = found.pop("samples", None)
            if found:
                source = getattr(self.trainer.datamodule, "sources", {}).get("val")
                metrics, count = found, int(samples or 0)
                measured_on = {"split": "val", "samples": count, "step": self.global_step,
                               "source": source.describe(count, "validation") if source is not None else None}
        base_model = model_spec(self.hparams.model).name_or_path
        if isinstance(self.task, mixture.Mixture):
            return mixture.description(self.task, size, self.decoding, found, self.global_step, base_model)
        return describe.description(self.task, size, self.decoding, metrics, measured_on, base_model=base_model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The model's description rides along (so `convert --model X.ckpt` knows its task), hyper-parameters
        are plain data (readable with `weights_only=True`); QLoRA keeps only the trained weights (adapters),
        not the frozen 4-bit base."""
        checkpoint["docvlm"] = self.description()
        checkpoint["hyper_parameters"] = _plain(checkpoint.get("hyper_parameters", {}))
        if not self.base_in_checkpoint:
            keep = self._trained_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.base_in_checkpoint:  # loading is not strict then: check that nothing trained is missing
            missing = sorted(self._trained_keys() - checkpoint["state_dict"].keys())
            if missing:
                raise KeyError(f"the checkpoint lacks {len(missing)} trained weights of this model, e.g. {missing[0]}"
                               " (was it saved with other LoRA settings?)")

    # -------------------------------------------------------------------------------------- export
    def export(self, directory: str | Path) -> Path:
        """Save in Hugging Face format (safetensors + processor), LoRA merged: plain transformers loads it.

        Call it on every rank: under FSDP the full weights are gathered from all shards first;
        only rank zero writes.
        """
        directory = Path(directory)
        state = None
        if self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
            if hasattr(self.net, "get_base_model"):
                raise NotImplementedError("exporting LoRA under FSDP: save a checkpoint and export on one device")
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self._trainer is None or self.trainer.is_global_zero:
            model = unwrap(self.net)
            data = self.description()
            if data is not None:
                describe.set_generation_config(model, self.processor,
                                               self.decoding.max_new_tokens or self.task.max_target_tokens)
            save_pretrained(model, self.processor, directory, state)
            if data is not None:
                describe.write(directory, data)
        return directory


def _plain(value: Any) -> Any:
    """Dataclasses (a `ModelSpec` given in Python) as dicts, recursively: a checkpoint stays loadable with
    `torch.load(weights_only=True)`, which refuses arbitrary classes."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value
