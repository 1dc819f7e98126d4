"""Callbacks the CLI adds to every run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
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
