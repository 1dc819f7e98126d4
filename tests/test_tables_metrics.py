"""TEDS / TEDS-Struct at parity with PubTabNet's src/metric.py, and GriTS as table-transformer."""

import importlib
import json
import random
from pathlib import Path

import pytest

from docvlm.metrics import grits, teds, teds_batch, teds_struct

# Per-file TEDS of the official implementation (SOURCE.txt of the shared PubTabNet sample).
REFERENCE_TEDS = {
    "PMC2094709_004_00": 1.0, "PMC2871264_002_00": 1.0, "PMC2915972_003_00": 0.9298260149130074,
    "PMC3160368_005_00": 0.994615695248351, "PMC3568059_003_00": 0.9609420535891124,
    "PMC3707453_006_00": 0.8538903625110521, "PMC3765162_003_01": 0.9867342100509474,
    "PMC3872294_001_00": 0.9863636363636363, "PMC4196076_004_00": 0.9958653089334908,
    "PMC4219599_004_00": 0.6029978075326913, "PMC4297392_007_00": 0.8070175438596492,
    "PMC4311460_007_00": 0.6576923076923077, "PMC4357206_002_00": 0.9295181638546892,
    "PMC4445578_009_01": 0.6754965084868096, "PMC4969833_016_01": 1.0, "PMC5303243_003_00": 0.6494374120956399,
    "PMC5451934_004_00": 0.9978213507625272, "PMC5755158_010_01": 1.0, "PMC5849724_006_00": 0.9653439200120101,
    "PMC6022086_007_00": 1.0,
}


@pytest.fixture(scope="module")
def samples():
    src = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pubtabnet" / "src"
    gt = json.loads((src / "sample_gt.json").read_text(encoding="utf-8"))
    pred = json.loads((src / "sample_pred.json").read_text(encoding="utf-8"))
    return {name.removesuffix(".png"): (pred[name], gt[name]["html"]) for name in gt}


def doc(body: str) -> str:
    return f"<html><body><table>{body}</table></body></html>"


def test_teds_matches_reference_per_file_and_mean(samples):
    scores = {name: teds(p, t) for name, (p, t) in samples.items()}
    for name, expected in REFERENCE_TEDS.items():
        assert scores[name] == pytest.approx(expected, abs=1e-9), name
    assert sum(scores.values()) / 20 == pytest.approx(0.899678114795296, abs=1e-9)


def test_teds_struct_mean_matches_reference(samples):
    mean = sum(teds_struct(p, t) for p, t in samples.values()) / 20
    assert mean == pytest.approx(0.9360998660721224, abs=1e-9)


def test_batch_api_uses_workers_and_agrees(samples):
    preds, trues = zip(*samples.values())
    preds, trues = list(preds) * 2, list(trues) * 2  # 40 pairs: enough for 2 workers
    assert teds_batch(preds, trues, workers=2) == pytest.approx([teds(p, t) for p, t in zip(preds, trues)], abs=1e-12)


def test_edge_cases_of_the_reference():
    table = "<tr><td>a</td><td>b</td></tr>"
    assert teds("", doc(table)) == 0.0
    assert teds(f"<table>{table}</table>", doc(table)) == 0.0  # no <html><body>: no body/table
    assert teds(doc(table), doc(table)) == 1.0
    # th is not a cell: it is compared by tag only, its content does not count
    assert teds(doc("<tr><th>x</th></tr>"), doc("<tr><th>y</th></tr>")) == 1.0
    assert teds(doc("<tr><td>x</td></tr>"), doc("<tr><td>y</td></tr>")) == pytest.approx(0.5)
    # whitespace counts, entities are decoded
    assert teds(doc("<tr><td>a b</td></tr>"), doc("<tr><td>ab</td></tr>")) == pytest.approx(1 - (1 / 3) / 2)
    assert teds(doc("<tr><td>&amp;</td></tr>"), doc("<tr><td>&</td></tr>")) == 1.0
    # spans must match exactly; inline tags are single tokens
    assert teds(doc('<tr><td colspan="2">a</td></tr>'), doc("<tr><td>a</td></tr>")) == pytest.approx(0.5)
    assert teds(doc("<tr><td><b>a</b></td></tr>"), doc("<tr><td>a</td></tr>")) == pytest.approx(1 - (2 / 3) / 3)  # <b> counts in n_nodes
    assert teds(doc("<tr><td>x</td></tr>"), doc("<tr><td>y</td></tr>"), structure_only=True) == 1.0


def test_where_the_reference_crashes_ours_is_defined():
    assert teds(doc(""), doc("")) == 1.0  # two empty tables: ZeroDivisionError in the reference
    assert teds(doc('<tr><td colspan="2px">a</td></tr>'), doc('<tr><td colspan="2">a</td></tr>')) == 1.0
    assert teds(doc('<tr><td rowspan="x">a</td></tr>'), doc("<tr><td>a</td></tr>")) == 1.0
    assert teds("   ", doc("<tr><td>a</td></tr>")) == 0.0
    assert teds("plain text", doc("<tr><td>a</td></tr>")) == 0.0
    deep = doc("<tr><td>" + "<b>" * 5000 + "x" + "</b>" * 5000 + "</td></tr>")
    assert 0.0 <= teds(deep, doc("<tr><td>x</td></tr>")) < 1.0
    huge = doc("<tr>" + "<td>1</td>" * 300 + "</tr>")
    assert teds(huge, doc("<tr><td>1</td></tr>")) == pytest.approx(2 / 301)  # 299 deletions of 301 nodes


def _random_markup(rng: random.Random, depth: int = 0) -> str:
    out = ""
    for _ in range(rng.randint(0, 3 if depth < 3 else 0)):
        tag = rng.choice(["tr", "td", "th", "thead", "tbody", "b", "td"])
        attrs = f' colspan="{rng.randint(1, 2)}"' if tag == "td" and rng.random() < 0.3 else ""
        text = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 3)))
        out += f"<{tag}{attrs}>{text}{_random_markup(rng, depth + 1)}</{tag}>" + rng.choice(["", "x"])
    return out


def test_tree_edit_distance_equals_apted_on_random_trees():
    """Cross-check with the reference algorithm itself (apted + distance, the `bench` extra)."""
    apted = pytest.importorskip("apted")
    distance = pytest.importorskip("distance")
    from lxml import html

    from docvlm.metrics.tables_teds import _first_table, _Tree, tree_edit_distance

    class Node(apted.helpers.Tree):
        def __init__(self, label, content, children):
            self.label, self.content, self.children = label, content, children

    class Config(apted.Config):
        def rename(self, a, b):
            if a.label != b.label:
                return 1.0
            if a.content or b.content:
                return float(distance.levenshtein(a.content, b.content)) / max(len(a.content), len(b.content))
            return 0.0

    def to_apted(tree, i=0):
        return Node(tree.labels[i], tree.contents[i] or [], [to_apted(tree, k) for k in tree.children[i]])

    rng = random.Random(0)
    for _ in range(60):
        t1 = _Tree(_first_table(doc(_random_markup(rng))), False)
        t2 = _Tree(_first_table(doc(_random_markup(rng))), False)
        expected = apted.APTED(to_apted(t1), to_apted(t2), Config()).compute_edit_distance()
        assert tree_edit_distance(t1, t2) == pytest.approx(expected, abs=1e-9)
    assert html  # lxml is what both sides parse with


def test_results_do_not_depend_on_the_block_size(samples, monkeypatch):
    """Tiny blocks: rename costs one row at a time, forest distances one keyroot pair at a time."""
    module = importlib.import_module("docvlm.metrics.tables_teds")
    pairs = list(samples.values())
    default = [module.teds(p, t) for p, t in pairs]
    monkeypatch.setattr(module, "_FD_LIMIT", 64)
    assert [module.teds(p, t) for p, t in pairs] == default


def test_grits_matches_reference_values(samples):
    """Values of a line-by-line port of table-transformer's grits_from_html (fitz Rect as arithmetic)."""
    expected = {
        "PMC4297392_007_00": (0.7948717948717948, 0.7948717948717948),
        "PMC2915972_003_00": (0.9777777777777777, 0.9135672514619883),
        "PMC3160368_005_00": (1.0, 0.9941638608305274),
        "PMC3872294_001_00": (1.0, 0.9925696594427245),
    }
    for name, (top, con) in expected.items():
        pred, true = samples[name]
        scores = grits(pred, true)
        assert scores["grits_top"] == pytest.approx(top, abs=1e-12), name
        assert scores["grits_con"] == pytest.approx(con, abs=1e-12), name


def test_grits_defined_on_bad_input():
    good = "<table><tr><td>a</td><td>b</td></tr></table>"
    assert grits(good, good) == {"grits_top": 1.0, "grits_con": 1.0}
    assert grits("", good) == {"grits_top": 0.0, "grits_con": 0.0}
    assert grits("no table", "") == {"grits_top": 1.0, "grits_con": 1.0}  # two empty grids
    ragged = grits("<table><tr><td>a</td></tr><tr><td>c</td><td>d</td></tr></table>", good)
    assert 0.0 < ragged["grits_top"] < 1.0 and 0.0 < ragged["grits_con"] < 1.0
    spans = grits('<table><tr><td colspan="2">a</td></tr></table>', good)
    assert spans["grits_top"] == pytest.approx(0.5)  # IoU of [0,0,2,1] and [0,0,1,1] (and mirror) is 1/2
