"""Report metrics on 10k report pairs: pycocoevalcap's scorers (the reference) vs docvlm's, side by side,
and the CheXpert-style labeler's throughput.

    python bench/bench_radiology.py [--n 10000]

Needs `pycocoevalcap` for the reference columns (skipped with a note otherwise). The reports are the
synthetic task's templated reports (~40 words), each prediction paired with another case's report.
"""

from __future__ import annotations

import argparse
import random
import time

from docvlm.converters import reports
from docvlm.converters.radiograph_render import random_case, report_text
from docvlm.metrics.chexpert import chexpert_scores
from docvlm.metrics.nlg import bleu, cider, rouge_l
from docvlm.metrics.ptb import tokenize


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        report = reports.parse_report(report_text(random_case(rng), rng))
        texts.append(f"{report.findings} {report.impression}")
    return texts


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    n = parser.parse_args().n
    hyps, refs = corpus(n, 0), corpus(n, 1)
    (hyps_t, refs_t), t_tok = timed(lambda: ([tokenize(h) for h in hyps], [tokenize(r) for r in refs]))
    print(f"{n} report pairs, {sum(len(h.split()) for h in hyps_t) / n:.1f} words per prediction")
    print(f"tokenize (both sides)      ours {t_tok:7.2f} s")
    ours = {
        "BLEU-1..4": lambda: bleu(hyps_t, refs_t),
        "ROUGE-L": lambda: rouge_l(hyps_t, refs_t),
        "CIDEr-D": lambda: cider(hyps_t, refs_t),
    }
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        reference = {}
        print("(pycocoevalcap not installed: reference columns skipped)")
    else:
        gts = {i: [r] for i, r in enumerate(refs_t)}
        res = {i: [h] for i, h in enumerate(hyps_t)}
        reference = {
            "BLEU-1..4": lambda: Bleu(4).compute_score(gts, res, verbose=0)[0],
            "ROUGE-L": lambda: float(Rouge().compute_score(gts, res)[0]),
            "CIDEr-D": lambda: float(Cider().compute_score(gts, res)[0]),
        }
    for name, fn in ours.items():
        value, t = timed(fn)
        line = f"{name:<26} ours {t:7.2f} s"
        if name in reference:
            ref_value, t_ref = timed(reference[name])
            a = value if isinstance(value, list) else [value]
            b = ref_value if isinstance(ref_value, list) else [ref_value]
            diff = max(abs(x - y) for x, y in zip(a, b))
            line += f"   pycocoevalcap {t_ref:7.2f} s   speed-up {t_ref / t:5.1f}x   max |diff| {diff:.1e}"
        print(line)
    _, t_label = timed(lambda: chexpert_scores(hyps, refs))
    print(f"CheXpert labels + F1 (2n reports) ours {t_label:7.2f} s   ({2 * n / t_label:,.0f} reports/s)")


if __name__ == "__main__":
    main()
