"""A demo recipe (default configs/demo.yaml) over seeds and thread counts: does it always learn to read?

    python bench/bench_demo.py                 # seeds 0-4 x 1 and 2 threads: 10 runs, one after another
    python bench/bench_demo.py --quick         # seeds 0-1 x 1 and 2 threads: 4 runs
    python bench/bench_demo.py --seeds 0 3 --threads 2

Each run is a subprocess `docvlm fit --config configs/demo.yaml --seed_everything N --model.model.seed N`
(data order and the tiny model's random weights both change with the seed) with OMP_NUM_THREADS
(and so torch's intra-op threads) set to the thread count, in a temporary run folder. The table gives
each run's val/cer and val/exact_match (on the 64 validation strings) and its wall time; the last column says
whether it meets `--max-cer` (0.1, the aim; the exit status is 1 when a run misses it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = re.compile(r"val/cer ([0-9.]+)\s+val/exact_match ([0-9.]+)")


def run(config: str, seed: int, threads: int, root: Path, extra: list[str]) -> tuple[float | None, float | None, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    docvlm = Path(sys.executable).parent / "docvlm"
    command = [str(docvlm), "fit", "--config", str(REPO / config), f"--seed_everything={seed}",
               f"--model.model.seed={seed}",
               f"--trainer.default_root_dir={root / f'seed{seed}-threads{threads}'}",
               "--trainer.enable_progress_bar=false", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = METRICS.findall(done.stdout + done.stderr)
    if done.returncode or not found:
        print((done.stdout + done.stderr)[-3000:], file=sys.stderr)
        return None, None, wall
    cer, exact = found[-1]
    return float(cer), float(exact), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml", help="the recipe (default: the demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="seeds 0 and 1 only")
    parser.add_argument("--max-cer", type=float, default=0.1)
    parser.add_argument("extra", nargs="*", help="more `docvlm fit` arguments, after --")
    args = parser.parse_args()
    seeds = args.seeds[:2] if args.quick else args.seeds
    print(f"{'seed':>4} {'threads':>7} {'val/cer':>8} {'exact':>6} {'wall s':>7}  ok", flush=True)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as folder:
        for seed in seeds:
            for threads in args.threads:
                cer, exact, wall = run(args.config, seed, threads, Path(folder), args.extra)
                ok = cer is not None and cer < args.max_cer
                failures += not ok
                shown = ("failed", "-") if cer is None else (f"{cer:.4f}", f"{exact:.3f}")
                print(f"{seed:>4} {threads:>7} {shown[0]:>8} {shown[1]:>6} {wall:>7.0f}  {'yes' if ok else 'NO'}",
                      flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
