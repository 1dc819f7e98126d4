"""Music metrics vs SMT's pure-Python reference, side by side, and synthetic score rendering throughput.

    python bench/bench_music.py [--pages 4] [--renders 20]

Full-page transcriptions are built by chaining the 5 GrandStaff samples (thousands of characters each,
like SMT's full-page GrandStaff); predictions chain the CNNT predictions the same way. The reference is
SMT's `eval_functions.compute_poliphony_metrics` with its `utils.levenshtein`, restated here with the
same behaviour (textbook pure-Python Levenshtein, O(n*m)); both must give the same numbers.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from docvlm.metrics.music import music_metrics

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "grandstaff"


def smt_levenshtein(a, b):
    n, m = len(a), len(b)
    if n > m:
        a, b = b, a
        n, m = m, n
    current = range(n + 1)
    for i in range(1, m + 1):
        previous, current = current, [i] + [0] * n
        for j in range(1, n + 1):
            add, delete = previous[j] + 1, current[j - 1] + 1
            change = previous[j - 1]
            if a[j - 1] != b[i - 1]:
                change = change + 1
            current[j] = min(add, delete, change)
    return current[n]


def smt_parse(krn, ler_parsing=False, cer_parsing=False):
    if cer_parsing:
        return list(krn)
    if ler_parsing:
        return krn.split("\n")
    return krn.replace("\n", " <b> ").replace("\t", " <t> ").split(" ")


def smt_metrics(hyps, gts):
    def metric(**kw):
        dist = sum(smt_levenshtein(smt_parse(h, **kw), smt_parse(g, **kw)) for h, g in zip(hyps, gts))
        return 100.0 * dist / sum(len(smt_parse(g, **kw)) for g in gts)

    return {"cer": metric(cer_parsing=True), "ser": metric(), "ler": metric(ler_parsing=True)}


def pages(n: int) -> tuple[list[str], list[str]]:
    gt = [(DATA / "gt" / f"{i}.krn").read_text() for i in range(5)]
    hyp = [(DATA / "hyp_cnnt" / f"{i}.krn").read_text() for i in range(5)]
    rng = random.Random(0)
    refs, preds = [], []
    for _ in range(n):
        order = rng.sample(range(5), 5) * 2
        refs.append("".join(gt[i] for i in order))
        preds.append("".join(hyp[i] for i in order))
    return preds, refs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--renders", type=int, default=20)
    args = parser.parse_args()

    preds, refs = pages(args.pages)
    chars = sum(map(len, refs)) / len(refs)
    t = time.perf_counter()
    ref = smt_metrics(preds, refs)
    t_ref = time.perf_counter() - t
    repeats = 20
    t = time.perf_counter()
    for _ in range(repeats):
        ours = music_metrics(preds, refs)
    t_ours = (time.perf_counter() - t) / repeats
    assert all(abs(ours[k] - ref[k]) < 1e-9 for k in ref), (ours, ref)
    print(f"metrics on {args.pages} pages of {chars:.0f} characters: CER {ours['cer']:.4f} SER {ours['ser']:.4f} "
          f"LER {ours['ler']:.4f}")
    print(f"  SMT pure Python: {t_ref:.3f} s   docvlm (rapidfuzz): {t_ours * 1000:.2f} ms   "
          f"ratio {t_ref / t_ours:.0f}x")

    from docvlm.converters.kern_render import render
    from docvlm.converters.kern_synth import random_kern

    render(random_kern(random.Random(-1)))  # warm up verovio's fonts
    t = time.perf_counter()
    texts = [random_kern(random.Random(i)) for i in range(args.renders)]
    t_kern = time.perf_counter() - t
    t = time.perf_counter()
    sizes = [render(text).size for text in texts]
    t_render = time.perf_counter() - t
    print(f"synthetic scores: kern writing {args.renders / t_kern:.0f}/s, verovio+cairosvg rendering "
          f"{args.renders / t_render:.1f} images/s on one core (mean size {sum(w for w, _ in sizes) / len(sizes):.0f}"
          f"x{sum(h for _, h in sizes) / len(sizes):.0f} px)")


if __name__ == "__main__":
    main()
