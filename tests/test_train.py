"""Train/decode consistency: the tiny model overfits 8 samples through docvlm's data module and
Lightning module, then docvlm's decoder (greedy, left padding, KV cache) reproduces exactly the targets the
trained model predicts under teacher forcing (every one, or all but a near-tie that the CPU's thread count
decides: the test holds for any)."""

import json

import lightning as L
import pytest
import torch

import docvlm.tasks as tasks
from docvlm.data import DocDataModule
from docvlm.decode import Decoding
from docvlm.items import Collator, Source
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

    learned = teacher_forced_right(module, [data.datasets["val"][i] for i in range(8)])
    assert sum(learned) >= 6, learned

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    metrics = trainer.validate(module, data)[0]
    assert metrics["val/samples"] == 8
    assert metrics["val/exact_match"] == sum(learned) / 8
    (predictions,) = (tmp_path / "predictions").glob("val-*.jsonl")
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [row["prediction"] == row["target"] for row in rows] == learned


def teacher_forced_right(module: DocVLM, items: list[dict]) -> list[bool]:
    """Per item: whether the model's most likely next token is the target's at every target position."""
    batch = Collator(module.processor, with_targets=True)(items)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids", "pixel_values")}
    with torch.no_grad():
        predicted = module.net.eval()(**inputs).logits[:, :-1].argmax(-1)
    labels = batch["labels"][:, 1:]
    return [bool((p[lab != -100] == lab[lab != -100]).all()) for p, lab in zip(predicted, labels)]
