"""Train/decode consistency: the tiny model overfits 8 samples through docvlm's data module and
Lightning module, then docvlm's decoder (greedy, left padding, KV cache) reproduces every target."""

import lightning as L
import pytest
import torch

import docvlm.tasks as tasks
from docvlm.data import DocDataModule
from docvlm.items import Source
from docvlm.decode import Decoding
from docvlm.model import ModelSpec
from docvlm.module import DocVLM


@pytest.mark.slow
def test_overfit_then_decode_reproduces_all_targets(tmp_path):
    torch.manual_seed(0)
    task = tasks.get("text", synthetic_size=224)
    module = DocVLM(
        model=ModelSpec(name_or_path="tiny", image_size=224, patch_size=28),
        lr=1e-2, warmup_steps=10, decoding=Decoding(max_new_tokens=40), task=task,
    )
    data = DocDataModule(task, train=Source(synthetic=8), val=Source(synthetic=8), batch_size=8, augment=None)
    trainer = L.Trainer(
        max_steps=800, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, gradient_clip_val=1.0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    assert trainer.callback_metrics["train/loss"] < 0.01

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    metrics = trainer.validate(module, data)[0]
    assert metrics["val/samples"] == 8
    assert metrics["val/exact_match"] == 1.0
    assert metrics["val/cer"] == 0.0
