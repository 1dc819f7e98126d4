"""A demo recipe (default configs/demo.yaml) over seeds and thread counts: does it always learn to read?

    python bench/bench_demo.py                 # seeds 0-4 x 1 and 2 threads: 10 runs, one after another
    python bench/bench_demo.py --quick         # seeds 0-1 x 1 and 2 threads: 4 runs
    python bench/bench_demo.py --seeds 0 3 --threads 2
    python bench/bench_demo.py --policies --loads 0 1 2 --steps 150   # thread policies beside busy processes

Each run is a subprocess `docvlm fit --config configs/demo.yaml --seed_everything N --model.model.seed N`
(data order and the tiny model's random weights both change with the seed) with OMP_NUM_THREADS
(and so torch's intra-op threads) set to the thread count, in a temporary run folder. The table gives
each run's val/cer and val/exact_match (on the 64 validation strings) and its wall time; the last column says
whether it meets `--max-cer` (0.1, the aim; the exit status is 1 when a run misses it).

`--policies` measures instead how fast the demo trains under each way of choosing torch's intra-op threads
(`POLICIES`: the cores, one, the cores found idle, the cores with OpenMP's passive wait, and what docvlm
does when nothing is set), beside 0, 1, 2... processes that keep a core busy (`--loads`), on top of whatever
else runs on the machine (the load average is printed with each row). Each run trains `--steps` steps
without validation, for at most `--limit-s` seconds; the rate is docvlm's progress line's (training time
only, start-up excluded).
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
RATE = re.compile(r"([0-9.]+) (steps/s|s/step)")
CORES = len(os.sched_getaffinity(0))


def idle_cores(seconds: float = 0.5) -> float:
    """How many cores were idle over the last `seconds` (Linux /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values[:8])  # idle + iowait, all but guest time

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (os.cpu_count() or 1) * (idle1 - idle0) / max(1, total1 - total0)


POLICIES = {  # name -> the environment of the run (None: unset, as a user who sets nothing)
    f"{CORES} threads": lambda: {"OMP_NUM_THREADS": str(CORES)},
    "1 thread": lambda: {"OMP_NUM_THREADS": "1"},
    "idle cores": lambda: {"OMP_NUM_THREADS": str(max(1, min(CORES, round(idle_cores()))))},
    f"{CORES} threads, passive wait": lambda: {"OMP_NUM_THREADS": str(CORES), "OMP_WAIT_POLICY": "PASSIVE"},
    "docvlm's choice": lambda: {"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None},
}


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


def train_rate(config: str, env: dict, steps: int, limit_s: float, root: Path) -> tuple[float | None, str]:
    """Steps per second of training and the intra-op threads the run used. The rate is docvlm's progress line's
    (every 10 steps); a run still going after `limit_s` seconds is stopped and its last line counts, so that a
    policy that thrashes costs minutes, not the hour its 150 steps would take."""
    env = {k: v for k, v in {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", **env}.items()
           if v is not None}
    command = [str(Path(sys.executable).parent / "docvlm"), "fit", "--config", str(REPO / config),
               f"--trainer.max_steps={steps}", "--validate_at_end.enabled=false", "--export.enabled=false",
               "--curves.enabled=false", "--progress.every_n_steps=10", f"--trainer.default_root_dir={root}"]
    try:
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=limit_s)
        printed = (done.stdout + done.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as stopped:
        printed = ((stopped.stdout or b"") + (stopped.stderr or b"")).decode(errors="replace")
    rates = RATE.findall(printed)
    if not rates:
        print(printed[-3000:], file=sys.stderr)
        return None, "-"
    value, unit = rates[-1]
    threads = re.findall(r"(\d+) intra-op threads?", printed)
    return float(value) if unit == "steps/s" else 1 / float(value), threads[-1] if threads else env.get(
        "OMP_NUM_THREADS", str(CORES))


def measure_policies(config: str, loads: list[int], steps: int, limit_s: float) -> None:
    """The table of `--policies`: each policy beside each number of busy processes."""
    print(f"{CORES} cores; {steps} steps per run (or {limit_s:.0f} s); load = the 1-minute average before the run",
          flush=True)
    print(f"{'busy':>4} {'policy':<26} {'threads':>7} {'load':>5} {'steps/s':>8}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as folder:
        for load in loads:
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
            try:
                time.sleep(2)
                for name, policy in POLICIES.items():
                    before = os.getloadavg()[0]
                    rate, threads = train_rate(config, policy(), steps, limit_s, Path(folder) / f"{load}-{len(name)}")
                    shown = "failed" if rate is None else f"{rate:.2f}"
                    print(f"{load:>4} {name:<26} {threads:>7} {before:>5.1f} {shown:>8}", flush=True)
            finally:
                for process in busy:
                    process.kill()
                    process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml", help="the recipe (default: the demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="seeds 0 and 1 only")
    parser.add_argument("--max-cer", type=float, default=0.1)
    parser.add_argument("--policies", action="store_true", help="thread policies' training rate beside busy processes")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2], help="with --policies: busy processes")
    parser.add_argument("--steps", type=int, default=150, help="with --policies: training steps per run")
    parser.add_argument("--limit-s", type=float, default=120, help="with --policies: seconds a run may take")
    parser.add_argument("extra", nargs="*", help="more `docvlm fit` arguments, after --")
    args = parser.parse_args()
    if args.policies:
        measure_policies(args.config, args.loads, args.steps, args.limit_s)
        return
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
