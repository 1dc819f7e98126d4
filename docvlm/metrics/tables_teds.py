"""TEDS and TEDS-Struct with the exact semantics of PubTabNet's `src/metric.py`, computed fast.

The reference parses both documents with lxml's HTML parser (comments removed), takes the first
`body/table` of each (0.0 when either has none, or when either input is empty), turns it into a tree
whose `td` nodes are leaves carrying `colspan`, `rowspan` and their content as a list of characters
(inline tags as single tokens such as `<b>` and `</b>`; `th` is an ordinary inner node, not a cell), and
computes the tree edit distance with insert/delete cost 1 and rename cost 1 when tag or spans differ,
else (for `td`) the Levenshtein distance of the contents divided by the longer one. The score is
`1 - distance / max(n1, n2)` with `n = len(table.xpath('.//*'))`.

The reference spends nearly all of its time in pure-Python Levenshtein calls inside APTED. Here the
rename costs of a pair of tables come from a few `rapidfuzz.process.cdist` calls (tokens mapped to
single code points, so that string Levenshtein equals token-list Levenshtein), and the tree edit distance
is Zhang-Shasha's algorithm vectorised with numpy: keyroot pairs of equal heights are independent, so
each such group runs as one batch, row by row, with the unit-cost insertions folded in by a running
minimum. Trees are mirrored when that makes fewer and smaller keyroots (a table with a `thead` then
keeps its big `tbody` off the keyroot list). The optimum is the same as APTED's; only the order of float
additions differs (differences of ~1e-15). Memory is one float64 n1 x n2 matrix (8 bytes per node pair,
rename costs overwritten by tree distances) plus blocks of bounded size.

Where the reference raises, this module returns a defined value:
- both tables empty (`n = 0`, a ZeroDivisionError in the reference): 1.0;
- a `colspan`/`rowspan` that `int()` rejects: its leading digits as HTML reads them ("2px" -> 2), else 1;
- input lxml cannot parse at all (e.g. only whitespace): 0.0.

One limit the reference does not have: a pair of tables with more than `MAX_NODE_PAIRS` (predicted x true)
nodes is not scored (0.0; `teds_problem` says so, and `docvlm evaluate` lists it on the row). Model output is
untrusted, the work and the memory grow with that product (100,000 cells in a row against a table of 1,000
took 69 s and 1 GB), and real pairs stay far below (two tables of 2,000 cells make 4 million).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from lxml import etree, html
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from docvlm.metrics.common import same_length

__all__ = ["teds", "teds_batch", "teds_struct"]  # what `docvlm.metrics` offers by name
_PI_TAG = "<?>"  # stands for the tag of processing instructions (lxml gives them a function as tag)
_FD_LIMIT = 1 << 20  # elements of one batched forest-distance array or block of rename costs (8 MiB)
MAX_NODE_PAIRS = 10_000_000  # predicted x true nodes past which a pair is not scored (80 MB and seconds of work)


def teds(pred: str, true: str, structure_only: bool = False) -> float:
    """TEDS between two HTML documents (`structure_only=True`: TEDS-Struct), in the reference's terms."""
    if not pred or not true:
        return 0.0
    pred_table, true_table = _first_table(pred), _first_table(true)
    if pred_table is None or true_table is None:
        return 0.0
    n_pred, n_true = len(pred_table.xpath(".//*")), len(true_table.xpath(".//*"))
    if _too_many_pairs(n_pred, n_true):
        return 0.0
    n_nodes = max(n_pred, n_true)
    if n_nodes == 0:
        return 1.0
    distance = tree_edit_distance(_Tree(pred_table, structure_only), _Tree(true_table, structure_only))
    return 1.0 - distance / n_nodes


def teds_problem(pred: str, true: str) -> str | None:
    """Why TEDS of this pair is not computed (more than `MAX_NODE_PAIRS` node pairs), or None when it is."""
    pred_table, true_table = _first_table(pred or " "), _first_table(true or " ")
    if pred_table is None or true_table is None:
        return None
    n_pred, n_true = len(pred_table.xpath(".//*")), len(true_table.xpath(".//*"))
    if _too_many_pairs(n_pred, n_true):
        return (f"TEDS not computed: {n_true} true x {n_pred} predicted nodes is more than {MAX_NODE_PAIRS} "
                "pairs; scored 0")
    return None


def _too_many_pairs(n_pred: int, n_true: int) -> bool:
    return (n_pred + 1) * (n_true + 1) > MAX_NODE_PAIRS  # + the tables themselves


def teds_struct(pred: str, true: str) -> float:
    """TEDS-Struct: TEDS with every cell's content ignored."""
    return teds(pred, true, structure_only=True)


def teds_batch(
    preds: Sequence[str], trues: Sequence[str], structure_only: bool = False, workers: int | None = None
) -> list[float]:
    """TEDS of each pair, spread over `workers` processes (default: all cores)."""
    same_length(preds, trues)
    workers = min(workers or os.cpu_count() or 1, len(preds))
    if workers <= 1:
        return [teds(p, t, structure_only) for p, t in zip(preds, trues)]
    with ProcessPoolExecutor(workers) as pool:
        chunk = max(1, len(preds) // (4 * workers))
        return list(pool.map(teds, preds, trues, [structure_only] * len(preds), chunksize=chunk))


def _first_table(text: str):
    parser = html.HTMLParser(remove_comments=True, encoding="utf-8")
    try:
        root = html.fromstring(text, parser=parser)
    except (etree.LxmlError, ValueError, TypeError):  # e.g. "Document is empty"
        return None
    tables = root.xpath("body/table")
    return tables[0] if tables else None


def _tag(node) -> str:
    return node.tag if isinstance(node.tag, str) else _PI_TAG


def span(node, name: str) -> int:
    """A cell's `colspan` or `rowspan` as the reference reads it: `int(value)`, else the leading digits
    (where the reference raises), else 1. GriTS reads spans the same way."""
    value = node.attrib.get(name, "1")
    try:
        return int(value)
    except ValueError:
        digits = re.match(r"\s*\+?(\d+)", value)
        return int(digits.group(1)) if digits else 1


def _cell_tokens(td) -> list[str]:
    """The reference's `tokenize(td)[1:-1]`, without recursion."""
    tokens = list(td.text or "")
    stack: list = list(reversed(td))
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):  # closing a child element
            node = item[1]
            if _tag(node) != "unk":
                tokens.append(f"</{_tag(node)}>")
            if _tag(node) != "td" and node.tail:
                tokens.extend(node.tail)
            continue
        tokens.append(f"<{_tag(item)}>")
        tokens.extend(item.text or "")
        stack.append(("close", item))
        stack.extend(reversed(item))
    return tokens


class _Tree:
    """The reference's `load_html_tree`, as flat preorder lists: labels, cell contents, children."""

    def __init__(self, table, structure_only: bool):
        self.labels: list[tuple] = []
        self.contents: list[list[str] | None] = []
        self.children: list[list[int]] = []
        stack = [(table, -1)]
        while stack:
            node, parent = stack.pop()
            index = len(self.labels)
            self.children.append([])
            if parent >= 0:
                self.children[parent].append(index)
            tag = _tag(node)
            if tag == "td":
                self.labels.append(("td", span(node, "colspan"), span(node, "rowspan")))
                self.contents.append([] if structure_only else _cell_tokens(node))
            else:
                self.labels.append((tag,))
                self.contents.append(None)
                stack.extend((child, index) for child in reversed(node))

    def __len__(self) -> int:
        return len(self.labels)


def _postorder(children: list[list[int]], mirror: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Postorder of preorder ids, leftmost-leaf (postorder index) and height of each postorder node."""
    order: list[int] = []
    stack = [(0, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        stack.append((node, True))
        kids = children[node]
        stack.extend((k, False) for k in (kids if mirror else reversed(kids)))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    lml = np.empty(len(order), dtype=np.int64)
    height = np.zeros(len(order), dtype=np.int64)
    for post, node in enumerate(order):
        kids = children[node]
        if not kids:
            lml[post] = post
        else:
            first = kids[-1] if mirror else kids[0]
            lml[post] = lml[position[first]]
            height[post] = 1 + max(height[position[k]] for k in kids)
    return np.asarray(order, dtype=np.int64), lml, height


def _keyroots(lml: np.ndarray) -> np.ndarray:
    """For each leftmost leaf, the highest node having it (Zhang-Shasha's keyroots), ascending."""
    last = np.full(len(lml), -1, dtype=np.int64)
    last[lml] = np.arange(len(lml))  # later (higher) nodes overwrite earlier ones
    return np.sort(last[last >= 0])


def _rename_costs(t1: _Tree, t2: _Tree, o1: np.ndarray, o2: np.ndarray) -> np.ndarray:
    """Rename cost of every pair of nodes in postorder `o1` x `o2`, as the reference's `CustomConfig.rename`.

    Cell contents go through `cdist` a block of rows at a time, so that no temporary of the full
    matrix's size exists beside it.
    """
    label_ids: dict[tuple, int] = {}
    l1 = np.array([label_ids.setdefault(t1.labels[i], len(label_ids)) for i in o1])
    l2 = np.array([label_ids.setdefault(t2.labels[j], len(label_ids)) for j in o2])
    costs = np.empty((len(o1), len(o2)))
    np.not_equal(l1[:, None], l2[None, :], out=costs)
    cells1 = np.array([p for p, i in enumerate(o1) if t1.contents[i] is not None], dtype=np.int64)
    cells2 = np.array([p for p, j in enumerate(o2) if t2.contents[j] is not None], dtype=np.int64)
    if len(cells1) and len(cells2):
        token_ids: dict[str, int] = {}

        def as_text(tokens: list[str]) -> str:  # one code point per token, skipping the surrogates
            ids = (token_ids.setdefault(t, len(token_ids)) for t in tokens)
            return "".join(chr(k if k < 0xD800 else k + 0x800) for k in ids)

        text1 = [as_text(t1.contents[o1[p]]) for p in cells1]
        text2 = [as_text(t2.contents[o2[p]]) for p in cells2]
        len1 = np.array([len(t) for t in text1], dtype=np.float64)
        len2 = np.array([len(t) for t in text2], dtype=np.float64)
        step = max(1, _FD_LIMIT // len(cells2))
        for r0 in range(0, len(cells1), step):
            rows = slice(r0, r0 + step)
            dist = cdist(text1[rows], text2, scorer=Levenshtein.distance, dtype=np.int32, workers=1)
            content = np.maximum(len1[rows, None], len2[None, :])
            np.divide(dist, content, out=content, where=content > 0)  # both empty: stays 0, as the reference
            content[l1[cells1[rows], None] != l2[None, cells2]] = 1.0  # different spans
            costs[np.ix_(cells1[rows], cells2)] = content
    return costs


def tree_edit_distance(t1: _Tree, t2: _Tree) -> float:
    """Tree edit distance under the reference's costs (Zhang-Shasha, batched over keyroot pairs).

    One n1 x n2 matrix serves as both Zhang-Shasha's rename costs and its tree distances: the
    rename cost of (i, j) is read only by the keyroot pair that writes their tree distance (the one
    with i and j on its leftmost paths), in the same row, and the tree distance is read only by
    keyroot pairs of greater height, which come later.
    """
    best = None
    for mirror in (False, True):
        o1, lml1, h1 = _postorder(t1.children, mirror)
        o2, lml2, h2 = _postorder(t2.children, mirror)
        k1, k2 = _keyroots(lml1), _keyroots(lml2)
        cost = int((k1 - lml1[k1] + 1).sum()) * int((k2 - lml2[k2] + 1).sum())
        if best is None or cost < best[0]:
            best = (cost, o1, lml1, h1, k1, o2, lml2, h2, k2)
    _, o1, lml1, h1, k1, o2, lml2, h2, k2 = best
    dist = _rename_costs(t1, t2, o1, o2)
    for height1 in np.unique(h1[k1]):
        group1 = k1[h1[k1] == height1]
        for height2 in np.unique(h2[k2]):
            group2 = k2[h2[k2] == height2]
            if (group1 - lml1[group1]).max() <= (group2 - lml2[group2]).max():
                _keyroot_batch(group1, group2, lml1, lml2, dist)
            else:  # iterate over the shorter side: the problem is symmetric
                _keyroot_batch(group2, group1, lml2, lml1, dist.T)
    return float(dist[-1, -1])


def _keyroot_batch(ka, kb, lmla, lmlb, dist) -> None:
    """Zhang-Shasha's forest distances for every keyroot pair of `ka` x `kb` at once, row by row.

    Row x of the forest distance of keyroots (a, b) covers the first x nodes of a's subtree in
    postorder; the insertion chain along a row, r[y] = min(c[y], r[y-1] + 1), is r = y + cummin(c - y).
    Tree distances `dist[i, j]` replace rename costs for i, j on the leftmost paths, as in the original.
    """
    starts_b = lmlb[kb]
    sizes_b = kb - starts_b + 1
    width = int(sizes_b.max())
    y = np.arange(width)
    valid_b = y[None, :] < sizes_b[:, None]
    nodes_b = np.where(valid_b, starts_b[:, None] + y[None, :], kb[:, None])
    lml_b = lmlb[nodes_b]
    on_path_b = (lml_b == starts_b[:, None]) & valid_b
    col_b = lml_b - starts_b[:, None]
    steps = np.arange(width + 1, dtype=np.float64)

    height = int((ka - lmla[ka] + 1).max())
    per_b = (height + 1) * (width + 1)
    chunk_b = max(1, _FD_LIMIT // per_b)
    for b0 in range(0, len(kb), chunk_b):
        sl_b = slice(b0, b0 + chunk_b)
        nb = len(kb[sl_b])
        chunk_a = max(1, _FD_LIMIT // (per_b * nb))
        for a0 in range(0, len(ka), chunk_a):
            _keyroot_block(ka[a0 : a0 + chunk_a], lmla, dist, nodes_b[sl_b], on_path_b[sl_b], col_b[sl_b], steps)


def _keyroot_block(ka, lmla, dist, nodes_b, on_path_b, col_b, steps) -> None:
    """One block of `_keyroot_batch`, keeping only the forest-distance rows that are read back.

    Besides the previous row, row x is read only where a subtree starts after it (x = lml(v) - start
    for an inner node v): for a table, one row per table row instead of one per cell.
    """
    starts_a = lmla[ka]
    sizes_a = ka - starts_a + 1
    na, nb, width = len(ka), len(nodes_b), nodes_b.shape[1]
    nodes = np.concatenate([np.arange(s, k + 1) for s, k in zip(starts_a, ka)])
    inner = lmla[nodes] != nodes
    kept = np.unique((lmla[nodes] - np.repeat(starts_a, sizes_a))[inner])
    slot = np.full(int(sizes_a.max()) + 1, -1)  # -1: the last slot, which holds the previous row
    slot[kept] = np.arange(len(kept))
    fd = np.empty((na, nb, len(kept) + 1, width + 1))
    fd[...] = steps
    row = fd[:, :, -1, :]
    ia = np.arange(na)[:, None, None]
    ib = np.arange(nb)[None, :, None]
    for x in range(1, len(slot)):
        nodes_a = np.minimum(starts_a + x - 1, ka)
        lml_a = lmla[nodes_a]
        on_path_a = lml_a == starts_a
        both = on_path_a[:, None, None] & on_path_b[None]
        na_idx = nodes_a[:, None, None]
        far = fd[ia, ib, slot[lml_a - starts_a][:, None, None], col_b[None]]
        best = np.where(both, row[:, :, :-1], far)
        best += dist[na_idx, nodes_b[None]]
        np.minimum(best, row[:, :, 1:] + 1.0, out=best)
        row[:, :, 0] = x
        np.subtract(best, steps[1:], out=row[:, :, 1:])
        np.minimum.accumulate(row, axis=2, out=row)
        row += steps
        if slot[x] >= 0:
            fd[:, :, slot[x], :] = row
        write = both & (x <= sizes_a)[:, None, None]
        if write.any():
            ii, jj, yy = np.nonzero(write)
            dist[nodes_a[ii], nodes_b[jj, yy]] = row[ii, jj, yy + 1]
