"""Pages per second of `docvlm convert` on the tiny model against a plain per-image `transformers` loop.

    python bench/bench_convert.py [--pages 48] [--max-new-tokens 32] [--batches 1 8] [--rounds 1] [--before]
                                  [--threads N] [--no-devices] [--mixed-pages 256]

In one process, on the same pages, the same weights (the tiny PaliGemma 2 at 896 px / patch 56, 256 image
tokens) and the same output length (the random model never stops early):
- baseline: for each image, `PaliGemmaProcessor` + `model.generate` + decode, one at a time;
- docvlm: `convert_with(docvlm.load(...), ...)` (what `docvlm convert` runs: loader workers, batched decoding,
  export workers, manifest) at batch 1 and batch 8.
Then `docvlm convert` as a command with 1 process and with `--devices 2 --accelerator cpu` (wall time of the
whole command, start-up included, and pages/s). Prints the figures and the ratios.

Two parts of convert measured on their own, old and new way side by side:
- pixel values of one 896 px page: `PaliGemmaProcessor`'s image processor vs `docvlm.pixels.PixelTable`;
- length buckets on a mixed corpus (pages of 1 to 40 lines): the random model never stops early, so what is
  counted is the decoding work if each page's output were its text (one token per character with the tiny
  tokenizer): rows x steps of batched greedy decoding, in input order vs `docvlm.batching.by_length`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def make_pages(folder: Path, n: int) -> list[Path]:
    from PIL import Image, ImageDraw

    paths = []
    for i in range(n):
        image = Image.new("RGB", (640, 160), "white")
        ImageDraw.Draw(image).text((20, 50), f"line {i}: the quick brown fox {i * 7}", fill="black", font_size=28)
        paths.append(folder / f"page{i:03d}.png")
        image.save(paths[-1])
    return paths


def baseline(paths: list[Path], max_new_tokens: int) -> float:
    """Seconds for the plain loop: processor + generate per image (pixels fitted as docvlm does)."""
    import torch
    from PIL import Image

    from docvlm.model import build_tiny
    from docvlm.tasks import get

    model, processor = build_tiny()
    model.eval()
    prompt = "<image>" + get("text").prefix
    start = time.perf_counter()
    for path in paths:
        image = Image.open(path).convert("RGB").resize((896, 896), Image.Resampling.BICUBIC)
        inputs = processor(text=prompt, images=image, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return time.perf_counter() - start


def ours(paths: list[Path], max_new_tokens: int, batch_size: int, out: Path, before: bool = False) -> float:
    """Seconds of `convert`; `before`: with the processor's pixel values and in input order, as before
    `docvlm.pixels` and `docvlm.batching`."""
    from unittest import mock

    import docvlm
    from docvlm.convert import convert_with
    from docvlm.pixels import PixelTable

    model = docvlm.load("tiny", task="text")
    with mock.patch.object(PixelTable, "build", return_value=None) if before else contextlib.nullcontext():
        start = time.perf_counter()
        code = convert_with(model, paths, out, batch_size=batch_size, max_new_tokens=max_new_tokens,
                            length_buckets=not before)
        assert code == 0, code
        return time.perf_counter() - start


def pixel_ms(repeats: int = 10) -> tuple[float, float]:
    """Milliseconds per 896 px page: the processor's pixel values, then the table's (checked equal)."""
    import torch

    from docvlm.model import build_tiny
    from docvlm.pixels import PixelTable

    _, processor = build_tiny()
    image = make_page(40, 0).resize((896, 896))
    table = PixelTable.build(processor.image_processor)
    assert torch.equal(table([image]), processor.image_processor(images=[image], return_tensors="pt")["pixel_values"])
    times = {"processor": [], "table": []}
    for _ in range(repeats):  # interleaved, so that a change in the machine's load hits both alike
        start = time.perf_counter()
        processor.image_processor(images=[image], return_tensors="pt")
        times["processor"].append(time.perf_counter() - start)
        start = time.perf_counter()
        table([image])
        times["table"].append(time.perf_counter() - start)
    return 1000 * min(times["processor"]), 1000 * min(times["table"])


LINE = "the quick brown fox jumps over the lazy dog"


def make_page(lines: int, seed: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (800, 1000), "white")
    draw = ImageDraw.Draw(image)
    for i in range(lines):
        draw.text((30, 20 + 24 * i), f"{seed}.{i} {LINE}", fill="black", font_size=20)
    return image


def bucket_work(n: int, batch_size: int) -> tuple[float, float, float, float]:
    """(ideal, input order, length buckets) decoding slots per page, and the rank correlation of the detail
    measure with the output length, on `n` pages of 1 to 40 lines in a random order."""
    import random

    import numpy as np

    from docvlm.batching import by_length, detail, window_batches
    from docvlm.images import fit

    rng = random.Random(0)
    items = []
    for index in range(n):
        lines = rng.randint(1, 40)
        text = "\n".join(f"{index}.{i} {LINE}" for i in range(lines))
        image = fit(make_page(lines, index), 896, "pad")
        items.append({"index": index, "length": detail(image), "tokens": len(text) + 1})  # + <eos>
    groups = [items[i:i + batch_size] for i in range(0, n, batch_size)]

    def slots(batches) -> float:
        return sum(len(b) * max(item["tokens"] for item in b) for b in batches) / n

    bucketed = slots(by_length(groups, batch_size, window_batches(batch_size, 896)))
    ranks = [np.argsort(np.argsort([item[key] for item in items])) for key in ("length", "tokens")]
    return (sum(item["tokens"] for item in items) / n, slots(groups), bucketed,
            float(np.corrcoef(*ranks)[0, 1]))


def command(folder: Path, out: Path, max_new_tokens: int, *extra: str) -> float:
    docvlm = Path(sys.executable).parent / "docvlm"
    start = time.perf_counter()
    subprocess.run([str(docvlm), "convert", "--model", "tiny", "--task", "text", "--max-new-tokens",
                    str(max_new_tokens), str(folder), "--out", str(out), *extra], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="docvlm's batch sizes (default 1 8)")
    parser.add_argument("--no-devices", action="store_true", help="skip the 1 vs 2 process comparison")
    parser.add_argument("--threads", type=int, help="torch threads of this process, for both sides (default torch's)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the plain loop and docvlm runs (default 1)")
    parser.add_argument("--before", action="store_true",
                        help="also run each batch size as convert did before (processor pixels, input order)")
    parser.add_argument("--mixed-pages", type=int, default=256, help="pages of the mixed corpus (default 256)")
    args = parser.parse_args()
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    processor_ms, table_ms = pixel_ms()
    print(f"pixel values of one 896 px page: processor {processor_ms:.1f} ms, table {table_ms:.1f} ms "
          f"({processor_ms / table_ms:.1f}x)")
    for batch in args.batches:
        if batch > 1:
            ideal, plain, bucketed, rho = bucket_work(args.mixed_pages, batch)
            print(f"mixed corpus, batch {batch:<2d}, decoding slots per page: ideal {ideal:.0f}, "
                  f"input order {plain:.0f}, length buckets {bucketed:.0f} ({plain / bucketed:.2f}x fewer; "
                  f"detail vs length rank correlation {rho:.2f})")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pages").mkdir()
        paths = make_pages(tmp / "pages", args.pages)
        n = len(paths)
        for round_ in range(args.rounds):  # each round against its own plain loop: the load may change
            base = baseline(paths, args.max_new_tokens)
            print(f"round {round_ + 1}: plain transformers loop, per image          : {n / base:6.2f} pages/s")
            for batch in args.batches:
                for before in (True, False) if args.before else (False,):
                    seconds = ours(paths, args.max_new_tokens, batch, tmp / f"out-{round_}-{batch}-{before}", before)
                    label = f"batch {batch:<2d}{' (before)' if before else '         '}"
                    print(f"round {round_ + 1}: docvlm convert API, {label}: {n / seconds:6.2f} pages/s  "
                          f"({base / seconds:.2f}x the plain loop)")
        if not args.no_devices:
            one = command(tmp / "pages", tmp / "cmd-1", args.max_new_tokens)
            two = command(tmp / "pages", tmp / "cmd-2", args.max_new_tokens, "--devices", "2", "--accelerator", "cpu")
            print(f"docvlm convert command, 1 process  : {n / one:6.2f} pages/s ({one:.1f} s with start-up)")
            print(f"docvlm convert command, --devices 2: {n / two:6.2f} pages/s ({two:.1f} s with start-up; "
                  f"{one / two:.2f}x one process)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
