"""GriTS-Top and GriTS-Con as in microsoft/table-transformer (`src/grits.py`, `grits_from_html`).

Each table becomes a grid (one entry per row x column position, a spanning cell repeated over the
positions it covers): its relative span box `[col0 - j, row0 - i, col1 - j, row1 - i]` for Top, its text
`' '.join(cell.itertext())` for Con. The "factored 2D most similar substructures" aligns the rows of both
grids (each pair of rows scored by a 1-D alignment of their entries) and, independently, the columns,
then sums the rewards over the aligned positions: F-score = 2 * sum / (|true grid| + |pred grid|).
Rewards: IoU of the span boxes with the enclosing box as "union" (PyMuPDF's `include_rect`, as the
reference) and `difflib.SequenceMatcher` block length ratio for texts.

The dynamic programmes are the reference's, with its tie-breaking (diagonal, then up, then left), so the
alignments and sums are identical; the 1-D alignments of all row pairs run at once with numpy (the
skip moves cost nothing, so a row is a running maximum) and rewards are computed once per distinct value.
Text rewards are the reference's values too, found with less work: pairs with no character in common
are 0 without a look at the order, and below 200 characters (where SequenceMatcher has no autojunk) its
blocks are found by its own recursion, without its bookkeeping (see `_matched_characters`).

Where the reference fails, this module defines: the HTML is read by lxml's HTML parser (the reference's
XML parser rejects entities and unclosed tags) and the first `table` anywhere is used; grid positions no
cell covers are empty 1x1 cells (the reference puts `0.0` there and crashes); spans below 1 or not
integers are read as in `docvlm.metrics.tables_teds`, then at least 1; no table or no cells is an empty grid
(score 1.0 against another empty grid, else 0.0); cells before the first `tr` (`<table><td>x</td>...`) form a
row of their own, the first `tr` then starts the next row (the reference gives them row -1: it crashes when
no `tr` follows, and otherwise writes them into the grid's last row, over what is there). Cells after a
closed `tr` join the row last started, as in the reference. A cell's text is the reference's: its XML parser
keeps no comments or processing instructions, so the text on both sides of one is one piece (`_itertext`).

Where the reference runs but reads the HTML otherwise, docvlm differs on purpose (recorded in
`tests/data/grits_differences.json`):
- upper-case tags (`<TD>`) are cells, as in HTML and in TEDS's parser; the reference's XML parser is
  case-sensitive and drops them;
- `<table xmlns="...">` is read as a table; in the reference its tags become `{namespace}td` and it finds no cell;
- of two tables in one output only the first is scored, as by TEDS and the tables converter; the reference
  merges the rows of every table in the document into one grid;
- lxml's HTML parser stops at 256 nested elements (libxml2's guard against hostile nesting, the parser of
  TEDS's reference too): text nested deeper, and the rest of the table after it, is not read; the
  reference's expat reads on.

Limits (model output is untrusted: a looping model writes 200,000 cells or `colspan="1000000"`, and the
reference's work grows with the product of both grids): GriTS is not computed, and both scores are 0.0,
when a table's cells cover more than `MAX_GRID_POSITIONS` positions or its grid is larger (checked from the
spans before any cell is placed), when the two grids make more than `MAX_GRID_PAIRS` position pairs, or
their cell texts more than `MAX_TEXT_PAIRS` character pairs (difflib's worst case). `grits_problem` says
which, and `docvlm evaluate` lists it on the row. Real tables (up to about 1,000 cells in 4,096 tokens)
stay far below them and are scored exactly as the reference scores them.
"""

from __future__ import annotations

from difflib import SequenceMatcher

import numpy as np
from lxml import etree, html

from docvlm.metrics.tables_teds import span

__all__ = ["grits", "grits_con", "grits_top"]  # what `docvlm.metrics` offers by name

MAX_GRID_POSITIONS = 100_000  # grid positions of one table (or positions its cells cover) past which it is not scored
MAX_GRID_PAIRS = 1_000_000  # true x predicted grid positions past which a pair is not scored (the work grows so)
MAX_TEXT_PAIRS = 4_000_000_000  # characters of the true cells x of the predicted ones (difflib's work grows so)


class GridTooLarge(ValueError):
    """A table, or a pair of tables, past the limits above: GriTS is not computed for it."""


def grits(pred: str, true: str) -> dict[str, float]:
    """GriTS-Top and GriTS-Con F-scores of a predicted table against the true one, in [0, 1]; 0.0 for a pair
    past the limits (`grits_problem` says which)."""
    try:
        true_cells, pred_cells = _bounded_cells(true, pred)
    except GridTooLarge:
        return {"grits_top": 0.0, "grits_con": 0.0}
    return {
        "grits_top": _factored_2dmss(*_grids(true_cells, pred_cells, "top"))[0],
        "grits_con": _factored_2dmss(*_grids(true_cells, pred_cells, "con"))[0],
    }


def grits_top(pred: str, true: str) -> float:
    return grits(pred, true)["grits_top"]


def grits_con(pred: str, true: str) -> float:
    return grits(pred, true)["grits_con"]


def grits_problem(pred: str, true: str) -> str | None:
    """Why GriTS of this pair is not computed (a table past the limits), or None when it is."""
    try:
        _bounded_cells(true, pred)
    except GridTooLarge as err:
        return str(err)
    return None


def _bounded_cells(true: str, pred: str):
    """Both tables' cells, or `GridTooLarge` before any work grows past the limits."""
    true_cells, pred_cells = html_to_cells(true, "true table"), html_to_cells(pred, "predicted table")
    if _grid_size(true_cells) * _grid_size(pred_cells) > MAX_GRID_PAIRS:
        raise GridTooLarge(f"GriTS not computed: {_grid_size(true_cells)} true x {_grid_size(pred_cells)} predicted "
                           f"grid positions is more than {MAX_GRID_PAIRS} pairs; scored 0")
    true_chars, pred_chars = (sum(len(text) for _, _, text in cells) for cells in (true_cells, pred_cells))
    if true_chars * pred_chars > MAX_TEXT_PAIRS:
        raise GridTooLarge(f"GriTS not computed: {true_chars} true x {pred_chars} predicted characters of cell text "
                           f"is more than {MAX_TEXT_PAIRS} pairs; scored 0")
    return true_cells, pred_cells


def _grid_size(cells) -> int:
    if not cells:
        return 0
    return (max(r[-1] for r, _, _ in cells) + 1) * (max(c[-1] for _, c, _ in cells) + 1)


def html_to_cells(text: str, name: str = "table") -> list[tuple[list[int], list[int], str]]:
    """Cells `(row_nums, column_nums, text)` of the first table, placed as the reference's `html_to_cells`.

    A table whose cells would cover more than `MAX_GRID_POSITIONS` raises `GridTooLarge` (`name` says which
    table) before they are placed, and so does one whose grid (uncovered positions included) is larger."""
    table = _first_table(text)
    if table is None:
        return []
    nodes = [node for node in table.iter() if node.tag in ("tr", "td", "th")]
    spans = {node: (max(1, span(node, "colspan")), max(1, span(node, "rowspan"))) for node in nodes if node.tag != "tr"}
    covered = sum(colspan * rowspan for colspan, rowspan in spans.values())
    if covered > MAX_GRID_POSITIONS:
        raise GridTooLarge(f"GriTS not computed: the {name}'s cells cover {covered} grid positions, more than "
                           f"{MAX_GRID_POSITIONS}; scored 0")
    cells = _place(nodes, spans)
    if _grid_size(cells) > MAX_GRID_POSITIONS:
        raise GridTooLarge(f"GriTS not computed: the {name} has {_grid_size(cells)} grid positions, more than "
                           f"{MAX_GRID_POSITIONS}; scored 0")
    return cells


def _first_table(text: str):
    """The first `table` element anywhere in lxml's HTML parse, or None."""
    if not text or not text.strip():
        return None
    try:
        root = html.fromstring(text)
    except (etree.LxmlError, ValueError, TypeError):  # e.g. 'Document is empty'
        return None
    tables = [root] if root.tag == "table" else root.xpath("//table")
    return tables[0] if tables else None


def _place(nodes, spans) -> list[tuple[list[int], list[int], str]]:
    """Each cell on the first free column of its row, as the reference's `html_to_cells`."""
    cells = []
    occupied: dict[int, set[int]] = {}
    row = -1
    for node in nodes:
        if node.tag == "tr":
            row += 1
            continue
        row = max(row, 0)  # cells before the first `tr` open a row of their own
        colspan, rowspan = spans[node]
        taken = occupied.setdefault(row, set())
        column = 0
        while column in taken:
            column += 1
        rows, columns = list(range(row, row + rowspan)), list(range(column, column + colspan))
        for r in rows:
            occupied.setdefault(r, set()).update(columns)
        cells.append((rows, columns, " ".join(_itertext(node))))
    return cells


def _itertext(node):
    """The texts `ElementTree`'s `itertext` gives for the reference's parse of `node`: its XML parser keeps no
    comments or processing instructions, so the text on both sides of one is a single piece (`a<!--c-->b`
    is `ab`, where lxml's `itertext` gives `a`, `b`, joined as `a b`)."""
    text, children = node.text or "", []
    for child in node:
        if isinstance(child.tag, str):
            children.append([child, child.tail or ""])
        elif children:
            children[-1][1] += child.tail or ""
        else:
            text += child.tail or ""
    if text:
        yield text
    for child, tail in children:
        yield from _itertext(child)
        if tail:
            yield tail


def _grids(true_cells, pred_cells, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each grid as indices into its own table of distinct values, and the reward of every (true value,
    predicted value) pair: memory grows with the product of the two tables, not with the square of both."""
    (true_grid, true_values), (pred_grid, pred_values) = _grid(true_cells, kind), _grid(pred_cells, kind)
    if kind == "top":
        a = np.array(true_values, dtype=np.float64).reshape(-1, 4)[:, None, :]
        b = np.array(pred_values, dtype=np.float64).reshape(-1, 4)[None, :, :]
        inter = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None) * np.clip(
            np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None
        )
        hull = (np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])) * (
            np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
        )
        rewards = np.divide(inter, hull, out=np.zeros_like(hull), where=hull > 0)
    else:
        rewards = _text_rewards(true_values, pred_values)
    return true_grid, pred_grid, rewards


def _grid(cells, kind: str) -> tuple[np.ndarray, list]:
    """The grid of indices into the list of its distinct values (span boxes for Top, texts for Con)."""
    if not cells:
        return np.zeros((1, 0), dtype=np.int64), []  # the reference's `[[]]`
    values: dict = {}
    n_rows = max(max(r) for r, _, _ in cells) + 1
    n_cols = max(max(c) for _, c, _ in cells) + 1
    empty = (0, 0, 1, 1) if kind == "top" else ""
    out = np.full((n_rows, n_cols), values.setdefault(empty, len(values)), dtype=np.int64)
    for rows, columns, text in cells:
        for r in rows:
            for c in columns:
                if kind == "top":
                    value = (columns[0] - c, rows[0] - r, columns[-1] + 1 - c, rows[-1] + 1 - r)
                else:
                    value = text
                out[r, c] = values.setdefault(value, len(values))
    return out, list(values)


def _text_rewards(true_texts: list[str], pred_texts: list[str]) -> np.ndarray:
    """The reference's `lcs_similarity` of each (true text, pred text) pair, bit-identical.

    Texts with no character in common have no matching block (0) and are not compared; two empty texts
    are 1 (the reference's convention).
    """
    rewards = np.zeros((len(true_texts), len(pred_texts)))
    true_chars = [set(a) for a in true_texts]
    for j, b in enumerate(pred_texts):
        matched, pred_chars = _matched_characters(b), set(b)
        for i, a in enumerate(true_texts):
            if not pred_chars.isdisjoint(true_chars[i]):
                rewards[i, j] = 2 * matched(a) / (len(a) + len(b))
    if "" in true_texts and "" in pred_texts:
        rewards[true_texts.index(""), pred_texts.index("")] = 1
    return rewards


def _matched_characters(b: str):
    """`a -> sum of the sizes of SequenceMatcher(None, a, b).get_matching_blocks()`, b analysed once.

    Below 200 characters SequenceMatcher has no junk (autojunk starts there), and its blocks are the
    longest match (earliest in a, then in b), then the same on each side, recursively: that is done
    here directly, without its bookkeeping. From 200 characters on, SequenceMatcher itself runs.
    """
    if len(b) >= 200:
        matcher = SequenceMatcher(None, "", b)

        def with_autojunk(a: str) -> int:
            matcher.set_seq1(a)
            return sum(block.size for block in matcher.get_matching_blocks())

        return with_autojunk
    b2j: dict[str, list[int]] = {}
    for position, char in enumerate(b):
        b2j.setdefault(char, []).append(position)

    def without_junk(a: str) -> int:
        total = 0
        queue = [(0, len(a), 0, len(b))]
        while queue:  # SequenceMatcher.get_matching_blocks and find_longest_match, junk-free
            alo, ahi, blo, bhi = queue.pop()
            besti = bestj = bestsize = 0
            j2len: dict[int, int] = {}
            for i in range(alo, ahi):
                newj2len = {}
                for j in b2j.get(a[i], ()):
                    if j < blo:
                        continue
                    if j >= bhi:
                        break
                    k = newj2len[j] = j2len.get(j - 1, 0) + 1
                    if k > bestsize:
                        besti, bestj, bestsize = i - k + 1, j - k + 1, k
                j2len = newj2len
            if bestsize:
                total += bestsize
                if alo < besti and blo < bestj:
                    queue.append((alo, besti, blo, bestj))
                if besti + bestsize < ahi and bestj + bestsize < bhi:
                    queue.append((besti + bestsize, ahi, bestj + bestsize, bhi))
        return total

    return without_junk


def _align_rows(true_grid: np.ndarray, pred_grid: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """`align_1d` score of every (true row, pred row) pair, all pairs at once, bit-identical."""
    n_true, n_cols_true = true_grid.shape
    n_pred, n_cols_pred = pred_grid.shape
    scores = np.zeros((n_true, n_pred, n_cols_pred + 1))
    for c in range(n_cols_true):
        reward = rewards[true_grid[:, c][:, None, None], pred_grid[None, :, :]]
        moved = np.maximum(scores[:, :, :-1] + reward, scores[:, :, 1:])
        scores[:, :, 1:] = np.maximum.accumulate(moved, axis=2)  # scores[..., 0] stays 0
    return scores[:, :, -1]


def _align_outer(pair_scores: np.ndarray) -> tuple[list[int], list[int], float]:
    """The reference's `align_2d_outer` given the inner scores: DP, pointers, traceback."""
    n1, n2 = pair_scores.shape
    scores = np.zeros((n1 + 1, n2 + 1))
    pointers = np.zeros((n1 + 1, n2 + 1))
    pointers[1:, 0] = -1
    pointers[0, 1:] = 1
    s = scores.tolist()
    p = pointers.tolist()
    reward = pair_scores.tolist()
    for i in range(1, n1 + 1):
        for j in range(1, n2 + 1):
            diag = s[i - 1][j - 1] + reward[i - 1][j - 1]
            up, left = s[i - 1][j], s[i][j - 1]
            best = max(diag, up, left)
            s[i][j] = best
            p[i][j] = 0 if diag == best else (-1 if up == best else 1)
    aligned1, aligned2 = [], []
    i, j = n1, n2
    while not (i == 0 and j == 0):
        if p[i][j] == -1:
            i -= 1
        elif p[i][j] == 1:
            j -= 1
        else:
            i, j = i - 1, j - 1
            aligned1.append(i)
            aligned2.append(j)
    return aligned1[::-1], aligned2[::-1], s[n1][n2]


def _factored_2dmss(true_grid: np.ndarray, pred_grid: np.ndarray, rewards: np.ndarray) -> tuple[float, float, float]:
    """F-score, precision and recall of the reference's `factored_2dmss`."""
    true_rows, pred_rows, _ = _align_outer(_align_rows(true_grid, pred_grid, rewards))
    true_cols, pred_cols, _ = _align_outer(_align_rows(true_grid.T, pred_grid.T, rewards))
    total = 0
    for tr, pr in zip(true_rows, pred_rows):
        for tc, pc in zip(true_cols, pred_cols):
            total += float(rewards[true_grid[tr, tc], pred_grid[pr, pc]])
    n_true, n_pred = true_grid.size, pred_grid.size
    precision = total / n_pred if n_pred > 0 else 1
    recall = total / n_true if n_true > 0 else 1
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0
    return float(fscore), float(precision), float(recall)
