"""GriTS: the reference (table-transformer src/grits.py, `grits_from_html`, with PyMuPDF) vs docvlm, side by side.

Run: python bench/bench_grits.py --reference /path/to/table-transformer/src/grits.py
The reference is imported from your copy of table-transformer's repository (commit ef21069 is the one
measured in BENCHMARKS.md), not shipped here; it needs PyMuPDF (`pip install pymupdf`). On PyMuPDF 2, whose
`Rect` takes no numpy array, its `iou` is wrapped at import to pass its two boxes as lists (GriTS-Top's grid
is a numpy array); the values are the same. Its XML parser does not read the samples' HTML, so it is given
the first table of lxml's HTML parse written as XML, which is how docvlm reads HTML; the generated large
tables are XML already and both read the same string. Prints per-pair and total times, the ratio and the
largest difference over GriTS-Top, GriTS-Con and their precisions and recalls, then the same for two
large tables (20 x 10, 50 x 20). Without `--reference` only docvlm's figures are printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import warnings
from pathlib import Path

from bench_teds import timed  # this folder is on the path when the script runs
from lxml import etree, html

from docvlm.metrics.tables_grits import _factored_2dmss, _grids, html_to_cells

SRC = Path(__file__).resolve().parents[1] / "tests" / "data" / "pubtabnet" / "src"
KEYS = ("grits_top", "grits_precision_top", "grits_recall_top", "grits_con", "grits_precision_con", "grits_recall_con")


def ours(pred: str, true: str) -> dict[str, float]:
    """docvlm's `grits` with the precisions and recalls it computes along the way."""
    true_cells, pred_cells = html_to_cells(true), html_to_cells(pred)
    out = {}
    for kind in ("top", "con"):
        scores = _factored_2dmss(*_grids(true_cells, pred_cells, kind))
        out[f"grits_{kind}"], out[f"grits_precision_{kind}"], out[f"grits_recall_{kind}"] = scores
    return out


def load_reference(path: Path):
    """table-transformer's `grits` module from `path`, its `iou` given lists (see the module docstring)."""
    spec = importlib.util.spec_from_file_location("table_transformer_grits", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PyMuPDF warns that `fitz` is its old name
        spec.loader.exec_module(module)
    iou = module.iou
    module.iou = lambda bbox1, bbox2: iou(list(bbox1), list(bbox2))
    return module


def scorer(module):
    """`(pred_xml, true_xml) -> the reference's six values`."""
    def reference(pred_xml: str, true_xml: str) -> dict[str, float]:
        metrics = module.grits_from_html(true_xml, pred_xml)
        return {key: metrics[key] for key in KEYS}

    return reference


def as_xml(text: str) -> str:
    return etree.tostring(html.fromstring(text).xpath("//table")[0], encoding="unicode")


def big_table(rows: int, cols: int, seed: int) -> str:
    """Numbers in the cells, under a header row of one- and two-column cells (spans for GriTS-Top)."""
    rng = random.Random(seed)
    widths = []
    while sum(widths) < cols:
        widths.append(min(rng.choice((1, 2)), cols - sum(widths)))
    head = "".join(f'<td colspan="{width}">h{c}</td>' for c, width in enumerate(widths))
    body = "".join(
        "<tr>" + "".join(f"<td>{rng.randint(0, 10**rng.randint(1, 6))}</td>" for _ in range(cols)) + "</tr>"
        for _ in range(rows - 1)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def main(reference_path: Path | None) -> None:
    gt = json.loads((SRC / "sample_gt.json").read_text(encoding="utf-8"))
    pred = json.loads((SRC / "sample_pred.json").read_text(encoding="utf-8"))
    reference = scorer(load_reference(reference_path)) if reference_path else None
    ref_total = ours_total = ours_all = 0.0
    scored = 0
    worst = 0.0
    print(f"{'pair':<22}{'cells':>7}{'reference':>12}{'docvlm':>10}{'ratio':>8}")
    for name in gt:
        p, t = pred[name], gt[name]["html"]
        t_ours, s_ours = timed(ours, p, t, repeat=3)
        ours_all += t_ours
        cells = len(html_to_cells(t))
        if reference is None:
            print(f"{name[:-4]:<22}{cells:>7}{'':>12}{t_ours * 1000:>8.1f}ms")
            continue
        try:
            t_ref, s_ref = timed(reference, as_xml(p), as_xml(t))
        except ValueError as error:  # grid positions no cell covers
            print(f"{name[:-4]:<22}{cells:>7}{'crashes':>12}{t_ours * 1000:>8.1f}ms   ({str(error)[:40]}...)")
            continue
        scored += 1
        ref_total += t_ref
        ours_total += t_ours
        worst = max(worst, max(abs(s_ref[key] - s_ours[key]) for key in KEYS))
        print(f"{name[:-4]:<22}{cells:>7}{t_ref * 1000:>10.1f}ms{t_ours * 1000:>8.1f}ms{t_ref / t_ours:>7.1f}x")
    if reference is None:
        print("no --reference: the reference was not run")
    else:
        print(f"the {scored} pairs the reference scores: reference {ref_total:.2f} s, docvlm {ours_total:.3f} s, "
              f"ratio {ref_total / ours_total:.1f}x; largest |difference| {worst:.1e}")
    print(f"docvlm on all {len(gt)} pairs: {ours_all:.3f} s")

    for rows, cols in ((20, 10), (50, 20)):
        a, b = big_table(rows, cols, 0), big_table(rows, cols, 1)
        t_ours, s_ours = timed(ours, b, a)
        scores = f"Top {s_ours['grits_top']:.4f}, Con {s_ours['grits_con']:.4f}"
        if reference is None:
            print(f"{rows} x {cols} vs another: docvlm {t_ours:.2f} s; {scores}")
            continue
        t_ref, s_ref = timed(reference, b, a)
        difference = max(abs(s_ref[key] - s_ours[key]) for key in KEYS)
        print(f"{rows} x {cols} vs another: reference {t_ref:.1f} s, docvlm {t_ours:.2f} s, "
              f"ratio {t_ref / t_ours:.0f}x; {scores}, largest |difference| {difference:.1e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="GriTS: table-transformer's reference vs docvlm")
    parser.add_argument("--reference", type=Path, help="table-transformer's src/grits.py")
    main(parser.parse_args().reference)
