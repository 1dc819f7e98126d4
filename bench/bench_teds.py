"""TEDS: the reference (PubTabNet src/metric.py: apted 1.0.3 + Distance 0.1.3 + lxml) vs docvlm, side by side.

Run: python bench/bench_teds.py   (needs the `bench` extra). Prints per-pair and total times, the
speed-ups, the batch API on all cores, and the time and peak memory of large tables (ours only: the
reference would take hours there), each in a fresh subprocess so that its peak RSS is its own. The reference is copied from the repository with one change: lxml 5+
takes the second positional argument of `html.fromstring` as `base_url`, so the parser is passed
by keyword (the reference as written raises a TypeError on current lxml).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import distance
from apted import APTED, Config
from apted.helpers import Tree
from lxml import html

from docvlm.metrics.tables_teds import teds, teds_batch

SRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pubtabnet" / "src"


class TableTree(Tree):
    def __init__(self, tag, colspan=None, rowspan=None, content=None, *children):
        self.tag = tag; self.colspan = colspan; self.rowspan = rowspan; self.content = content
        self.children = list(children)

class CustomConfig(Config):
    @staticmethod
    def maximum(*sequences):
        return max(map(len, sequences))
    def normalized_distance(self, *sequences):
        return float(distance.levenshtein(*sequences)) / self.maximum(*sequences)
    def rename(self, node1, node2):
        if (node1.tag != node2.tag) or (node1.colspan != node2.colspan) or (node1.rowspan != node2.rowspan):
            return 1.
        if node1.tag == 'td':
            if node1.content or node2.content:
                return self.normalized_distance(node1.content, node2.content)
        return 0.

class ReferenceTEDS:
    def __init__(self, structure_only=False):
        self.structure_only = structure_only; self.__tokens__ = []
    def tokenize(self, node):
        self.__tokens__.append('<%s>' % node.tag)
        if node.text is not None:
            self.__tokens__ += list(node.text)
        for n in node.getchildren():
            self.tokenize(n)
        if node.tag != 'unk':
            self.__tokens__.append('</%s>' % node.tag)
        if node.tag != 'td' and node.tail is not None:
            self.__tokens__ += list(node.tail)
    def load_html_tree(self, node, parent=None):
        if node.tag == 'td':
            if self.structure_only:
                cell = []
            else:
                self.__tokens__ = []
                self.tokenize(node)
                cell = self.__tokens__[1:-1].copy()
            new_node = TableTree(node.tag, int(node.attrib.get('colspan', '1')), int(node.attrib.get('rowspan', '1')), cell, *deque())
        else:
            new_node = TableTree(node.tag, None, None, None, *deque())
        if parent is not None:
            parent.children.append(new_node)
        if node.tag != 'td':
            for n in node.getchildren():
                self.load_html_tree(n, new_node)
        if parent is None:
            return new_node
    def evaluate(self, pred, true):  # parser passed by keyword, see the module docstring
        if (not pred) or (not true):
            return 0.0
        parser = html.HTMLParser(remove_comments=True, encoding='utf-8')
        pred = html.fromstring(pred, parser=parser)
        true = html.fromstring(true, parser=parser)
        if pred.xpath('body/table') and true.xpath('body/table'):
            pred = pred.xpath('body/table')[0]
            true = true.xpath('body/table')[0]
            n_nodes = max(len(pred.xpath(".//*")), len(true.xpath(".//*")))
            tree_pred = self.load_html_tree(pred)
            tree_true = self.load_html_tree(true)
            d = APTED(tree_pred, tree_true, CustomConfig()).compute_edit_distance()
            return 1.0 - (float(d) / n_nodes)
        return 0.0


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
    return f"<html><body><table><thead><tr>{'<td>h</td>' * cols}</tr></thead><tbody>{body}</tbody></table></body></html>"


def main() -> None:
    gt = json.loads((SRC / "sample_gt.json").read_text(encoding="utf-8"))
    pred = json.loads((SRC / "sample_pred.json").read_text(encoding="utf-8"))
    names = list(gt)
    reference = ReferenceTEDS()
    ref_total = ours_total = 0.0
    worst = 0.0
    for name in names:
        t_ref, s_ref = timed(reference.evaluate, pred[name], gt[name]["html"])
        t_ours, s_ours = timed(teds, pred[name], gt[name]["html"], False, repeat=3)
        ref_total += t_ref
        ours_total += t_ours
        worst = max(worst, abs(s_ref - s_ours))
        if name.startswith("PMC4219599_004_00"):
            print(f"largest pair PMC4219599_004_00: reference {t_ref:.3f} s, ours {t_ours * 1000:.1f} ms, "
                  f"speed-up {t_ref / t_ours:.0f}x")
    print(f"20 pairs, one core: reference {ref_total:.2f} s, ours {ours_total:.3f} s, speed-up {ref_total / ours_total:.0f}x; "
          f"largest |difference| {worst:.1e}")

    preds, trues = [pred[n] for n in names] * 10, [gt[n]["html"] for n in names] * 10
    t1, serial = timed(teds_batch, preds, trues, False, 1)
    cores = os.cpu_count() or 1
    tn, parallel = timed(teds_batch, preds, trues, False, cores)
    assert serial == parallel
    print(f"batch API, 200 pairs: 1 worker {t1:.2f} s, {cores} workers {tn:.2f} s, speed-up {t1 / tn:.2f}x")

    for rows, cols in ((50, 20), (100, 50), (200, 50)):
        out = subprocess.run([sys.executable, __file__, str(rows), str(cols)], capture_output=True, text=True, check=True)
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
    if len(sys.argv) == 3:
        large(int(sys.argv[1]), int(sys.argv[2]))
    else:
        main()
