"""Training step of the tiny PaliGemma 2 at 896 px / patch 56: docvlm (Lightning module + data module)
vs the same forward, backward and AdamW step written directly against transformers, in one process.

    python bench/bench_train_step.py [--steps 60] [--batch 2]

Both sides start from the same weights, collate the same synthetic text images through
`PaliGemmaProcessor` on every step, clip gradients to 1 and step AdamW. The baseline uses the model's
own loss (`labels=`); docvlm computes the vocabulary projection on suffix positions only.
Time per step is measured between the ends of consecutive steps, after `--warmup` steps.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402

import docvlm.tasks as tasks  # noqa: E402
from docvlm.data import DocDataModule  # noqa: E402
from docvlm.images import fit  # noqa: E402
from docvlm.items import Source  # noqa: E402
from docvlm.model import ModelSpec, build_tiny  # noqa: E402
from docvlm.module import DocVLM  # noqa: E402


class StepTimer(L.Callback):
    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, *args):
        self.ends.append(time.perf_counter())


def docvlm_steps(task, steps: int, batch: int) -> list[float]:
    module = DocVLM(model=ModelSpec(name_or_path="tiny", image_size=896, patch_size=56), lr=1e-4, task=task)
    data = DocDataModule(task, train=Source(synthetic=batch * steps), batch_size=batch, augment=None)
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0,
        callbacks=[timer],
    )
    trainer.fit(module, data)
    return timer.ends


def transformers_steps(task, steps: int, batch: int) -> list[float]:
    model, processor = build_tiny(image_size=896, patch_size=56)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    samples = list(task.synthesize(batch * steps, seed=0))
    ends = []
    for step in range(steps):
        chunk = samples[step * batch : (step + 1) * batch]
        inputs = processor(
            text=["<image>" + task.prefix] * batch,
            images=[fit(s.image, 896, task.image_mode) for s in chunk],
            suffix=[s.target for s in chunk],
            padding="longest",
            return_tensors="pt",
        )
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        ends.append(time.perf_counter())
    return ends


def per_step(ends: list[float], warmup: int) -> float:
    ends = ends[warmup:]
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core figures)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = tasks.get("text", synthetic_size=448)
    # alternate the two, twice, so that drift of the machine's load hits both alike
    ours, theirs = [], []
    for _ in range(2):
        theirs.append(per_step(transformers_steps(task, args.steps, args.batch), args.warmup))
        ours.append(per_step(docvlm_steps(task, args.steps, args.batch), args.warmup))
    ours_s, theirs_s = min(ours), min(theirs)
    print(f"tiny PaliGemma 2, 896 px / patch 56 (256 image tokens), batch {args.batch}, {args.threads} thread(s)")
    print(f"transformers loop : {theirs_s * 1000:8.1f} ms/step  (runs: {', '.join(f'{t*1000:.1f}' for t in theirs)})")
    print(f"docvlm (Lightning): {ours_s * 1000:8.1f} ms/step  (runs: {', '.join(f'{t*1000:.1f}' for t in ours)})")
    print(f"overhead of docvlm: {100 * (ours_s / theirs_s - 1):+.1f}%  (ratio {ours_s / theirs_s:.3f})")


if __name__ == "__main__":
    main()
