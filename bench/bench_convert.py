"""Pages per second of `docvlm convert` on the tiny model against a plain per-image `transformers` loop.

    python bench/bench_convert.py [--pages 48] [--max-new-tokens 32] [--no-devices]

In one process, on the same pages, the same weights (the tiny PaliGemma 2 at 896 px / patch 56, 256 image
tokens) and the same output length (the random model never stops early):
- baseline: for each image, `PaliGemmaProcessor` + `model.generate` + decode, one at a time;
- docvlm: `docvlm.load(...).convert(...)` (what `docvlm convert` runs: loader workers, batched decoding,
  export workers, manifest) at batch 1 and batch 8.
Then `docvlm convert` as a command with 1 process and with `--devices 2 --accelerator cpu` (wall time of the
whole command, start-up included, and pages/s). Prints the figures and the ratios.
"""

from __future__ import annotations

import argparse
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


def ours(paths: list[Path], max_new_tokens: int, batch_size: int, out: Path) -> float:
    import docvlm

    model = docvlm.load("tiny", task="text")
    start = time.perf_counter()
    code = model.convert([str(p) for p in paths], out, batch_size=batch_size, max_new_tokens=max_new_tokens)
    assert code == 0, code
    return time.perf_counter() - start


def command(folder: Path, out: Path, max_new_tokens: int, *extra: str) -> float:
    docvlm = Path(sys.executable).parent / "docvlm"
    start = time.perf_counter()
    subprocess.run([str(docvlm), "convert", "--model", "tiny", "--task", "text", "--max-new-tokens", str(max_new_tokens),
                    str(folder), "--out", str(out), *extra], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="docvlm's batch sizes (default 1 8)")
    parser.add_argument("--no-devices", action="store_true", help="skip the 1 vs 2 process comparison")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pages").mkdir()
        paths = make_pages(tmp / "pages", args.pages)
        n = len(paths)
        base = baseline(paths, args.max_new_tokens)
        print(f"plain transformers loop, per image : {n / base:6.2f} pages/s")
        results = {}
        for batch in args.batches:
            seconds = ours(paths, args.max_new_tokens, batch, tmp / f"out-b{batch}")
            results[batch] = seconds
            print(f"docvlm convert API, batch {batch:<2d}      : {n / seconds:6.2f} pages/s  "
                  f"({base / seconds:.2f}x the plain loop)")
        if not args.no_devices:
            one = command(tmp / "pages", tmp / "cmd-1", args.max_new_tokens)
            two = command(tmp / "pages", tmp / "cmd-2", args.max_new_tokens, "--devices", "2", "--accelerator", "cpu")
            print(f"docvlm convert command, 1 process  : {n / one:6.2f} pages/s ({one:.1f} s with start-up)")
            print(f"docvlm convert command, --devices 2: {n / two:6.2f} pages/s ({two:.1f} s with start-up; "
                  f"{one / two:.2f}x one process)")


if __name__ == "__main__":
    main()
