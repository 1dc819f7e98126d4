"""Callbacks the CLI adds to every run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class ExportHF(L.Callback):
    """At the end of `fit`, save the model in Hugging Face format (safetensors + processor).

    Args:
        dirpath: where to write; default `<log_dir>/hf`. `null` with `enabled: false` skips export.
        enabled: export at all.
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True):
        self.dirpath = dirpath
        self.enabled = enabled

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        # every rank takes part (`log_dir` is collective under DDP, FSDP gathers shards); rank zero writes
        directory = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "hf")
        pl_module.export(directory)
        rank_zero_info(f"docvlm: exported the model in Hugging Face format to {directory}")


class PredictionsJSONL(BasePredictionWriter):
    """`docvlm predict` writes `{id, prediction}` rows to `<dirpath>/predict-rank<N>.jsonl` as it goes,
    so an interrupted run keeps every finished batch.

    Args:
        dirpath: where to write; default `<log_dir>/predictions`.
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(write_interval="batch")
        self.dirpath = dirpath
        self._path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / f"predict-rank{trainer.global_rank}.jsonl"
        self._path.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        with self._path.open("a", encoding="utf-8") as f:
            for row in prediction:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
