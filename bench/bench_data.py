"""Data pipeline throughput on one core: load a PubTabNet PNG, pad to a white square, resize to 896,
augment (albumentations), normalise through the processor: what one data-loader worker delivers.

    python bench/bench_data.py [--rounds 5]

A GPU training PaliGemma 2 3B at 896 px consumes about 20 samples/s; with 4 workers the pipeline
must give at least 5 images/s per core. The collation step (processor: rescale, normalise, tokenise)
is included, as it runs in the workers too.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from docvlm.images import Augment  # noqa: E402
from docvlm.items import Collator, TaskDataset  # noqa: E402
from docvlm.model import build_tiny_tokenizer  # noqa: E402
from docvlm.tasks.base import Sample  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "pubtabnet" / "examples"


def processor_896():
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(size={"height": 896, "width": 896}, image_mean=[0.5] * 3,
                                              image_std=[0.5] * 3)
    image_processor.image_seq_length = 4096
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer())


def throughput(dataset: TaskDataset, collate: Collator, rounds: int) -> float:
    start = time.perf_counter()
    n = 0
    for _ in range(rounds):
        for i in range(len(dataset)):
            collate([dataset[i]])
            n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import docvlm.tasks as tasks

    task = tasks.get("tables")
    images = sorted(EXAMPLES.glob("*.png"))
    samples = [Sample(id=p.stem, image=p, target="<table></table>") for p in images]
    processor = processor_896()
    collate = Collator(processor, with_targets=True)
    sizes = [__import__("PIL.Image", fromlist=["Image"]).open(p).size for p in images]
    print(f"{len(images)} PubTabNet PNGs, mean size {sum(w for w, _ in sizes) / len(sizes):.0f}x"
          f"{sum(h for _, h in sizes) / len(sizes):.0f} px -> 896x896, one core")
    plain = throughput(TaskDataset(samples, task, 896, None), collate, args.rounds)
    augmented = throughput(TaskDataset(samples, task, 896, Augment(p=1.0)), collate, args.rounds)
    print(f"load + pad + resize + normalise            : {plain:6.1f} images/s/core")
    print(f"load + pad + resize + augment (p=1) + norm : {augmented:6.1f} images/s/core "
          f"(target >= 5; 4 workers -> {4 * augmented:.0f} images/s vs ~20 consumed by a GPU)")


if __name__ == "__main__":
    main()
