"""TEDS: PubTabNet's reference (src/metric.py: apted + Distance + lxml) vs docvlm, side by side.

Run: python bench/bench_teds.py --reference /path/to/PubTabNet/src/metric.py   (needs the `bench` extra).
The reference is imported from your copy of PubTabNet's repository, not shipped here. Prints per-pair and
total times, the speed-ups, the batch API on all cores, and the time and peak memory of large tables (ours
only: the reference would take hours there), each in a fresh subprocess so that its peak RSS is its own.
Without `--reference` only docvlm's figures are printed.

Two shims make the reference importable as it is: its `from parallel import parallel_process` (a helper
used only with n_jobs > 1) gets an empty module when `parallel.py` is not next to it, and where a version
passes the lxml parser as the second positional argument of `html.fromstring` (lxml 5+ reads that as
`base_url`), it is handed over by keyword.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

from lxml import html

from docvlm.metrics.tables_teds import teds, teds_batch

SRC = Path(__file__).resolve().parents[1] / "tests" / "data" / "pubtabnet" / "src"


def load_reference(path: Path):
    """PubTabNet's `metric` module from `path`, with the two shims of the module docstring."""
    sys.path.insert(0, str(path.parent))
    try:
        importlib.import_module("parallel")
    except ImportError:
        sys.modules["parallel"] = types.SimpleNamespace(parallel_process=None)
    spec = importlib.util.spec_from_file_location("pubtabnet_metric", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.html = types.SimpleNamespace(
        HTMLParser=html.HTMLParser,
        fromstring=lambda text, parser=None: html.fromstring(text, parser=parser),
    )
    return module


def timed(fn, *args, repeat: int = 1) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def big_table(rows: int, cols: int, seed: int) -> str:
    rng = random.Random(seed)
    body = "".join(
        "<tr>" + "".join(f"<td>{rng.randint(0, 10**rng.randint(1, 6))}</td>" for _ in range(cols)) + "</tr>"
        for _ in range(rows)
    )
    head = "<td>h</td>" * cols
    return f"<html><body><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>"


def main(reference_path: Path | None) -> None:
    gt = json.loads((SRC / "sample_gt.json").read_text(encoding="utf-8"))
    pred = json.loads((SRC / "sample_pred.json").read_text(encoding="utf-8"))
    names = list(gt)
    reference = load_reference(reference_path).TEDS() if reference_path else None
    ref_total = ours_total = 0.0
    worst = 0.0
    for name in names:
        t_ours, s_ours = timed(teds, pred[name], gt[name]["html"], False, repeat=3)
        ours_total += t_ours
        if reference is None:
            continue
        t_ref, s_ref = timed(reference.evaluate, pred[name], gt[name]["html"])
        ref_total += t_ref
        worst = max(worst, abs(s_ref - s_ours))
        if name.startswith("PMC4219599_004_00"):
            print(f"largest pair PMC4219599_004_00: reference {t_ref:.3f} s, ours {t_ours * 1000:.1f} ms, "
                  f"speed-up {t_ref / t_ours:.0f}x")
    if reference is None:
        print(f"20 pairs, one core: ours {ours_total:.3f} s (no --reference: the reference was not run)")
    else:
        print(f"20 pairs, one core: reference {ref_total:.2f} s, ours {ours_total:.3f} s, "
              f"speed-up {ref_total / ours_total:.0f}x; largest |difference| {worst:.1e}")

    preds, trues = [pred[n] for n in names] * 10, [gt[n]["html"] for n in names] * 10
    t1, serial = timed(teds_batch, preds, trues, False, 1)
    cores = os.cpu_count() or 1
    tn, parallel = timed(teds_batch, preds, trues, False, cores)
    assert serial == parallel
    print(f"batch API, 200 pairs: 1 worker {t1:.2f} s, {cores} workers {tn:.2f} s, speed-up {t1 / tn:.2f}x")

    for rows, cols in ((50, 20), (100, 50), (200, 50)):
        out = subprocess.run([sys.executable, __file__, str(rows), str(cols)], capture_output=True, text=True,
                             check=True)
        print(out.stdout, end="")


def large(rows: int, cols: int) -> None:
    """One large case, run alone in this process: time, score, and peak RSS over the process's start."""
    a, b = big_table(rows, cols, 0), big_table(rows, cols, 1)
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t, score = timed(teds, a, b)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{rows} x {cols} table vs another: {t:.2f} s, TEDS {score:.6f}, "
          f"peak RSS {peak:.0f} MiB ({start_rss:.0f} MiB before the call)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].isdigit():
        large(int(sys.argv[1]), int(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description="TEDS: PubTabNet's reference vs docvlm")
        parser.add_argument("--reference", type=Path, help="PubTabNet's src/metric.py")
        main(parser.parse_args().reference)
