"""OTSL (Lysak et al., 2023): a table as one token per grid position, a compact alternative to HTML.

`<fcel>` starts a body cell with content, `<ecel>` an empty body cell, `<ched>` a header cell (content
may be empty, as in DocTags, so that header rows survive the round trip); `<lcel>` continues the cell to
the left, `<ucel>` the cell above, `<xcel>` both; `<nl>` ends a row. A cell's inner HTML follows its
token. HTML -> OTSL -> HTML is exact for tables whose grid is fully covered (every table `to_html` writes).
"""

from __future__ import annotations

import re

from docvlm.converters.tables import Cell, Table

TOKENS = ("<fcel>", "<ecel>", "<ched>", "<lcel>", "<ucel>", "<xcel>", "<nl>")
_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in TOKENS) + ")")


def to_otsl(table: Table) -> str:
    grid = table.grid()
    out = []
    for r, row in enumerate(grid):
        for c, cell in enumerate(row):
            if cell is None:
                out.append("<ecel>")
            elif (cell.row, cell.col) == (r, c):
                out.append(("<ched>" if cell.header else "<fcel>" if cell.html else "<ecel>") + cell.html)
            elif cell.row == r:
                out.append("<lcel>")
            elif cell.col == c:
                out.append("<ucel>")
            else:
                out.append("<xcel>")
        out.append("<nl>")
    return "".join(out)


def parse_otsl(text: str) -> tuple[Table | None, list[str]]:
    """OTSL -> (table, problems). Never raises; merge tokens with nothing to merge into become cells."""
    if not text or not text.strip():
        return None, ["empty prediction"]
    problems: list[str] = []
    parts = _SPLIT.split(text)
    if parts[0].strip():
        problems.append(f"text before the first OTSL token dropped: {parts[0].strip()[:40]!r}")
    rows: list[list[tuple[str, str]]] = [[]]
    for token, content in zip(parts[1::2], parts[2::2]):
        if token == "<nl>":
            if content.strip():
                problems.append(f"text after <nl> dropped: {content.strip()[:40]!r}")
            rows.append([])
        else:
            rows[-1].append((token, content))
    if not rows[-1]:
        rows.pop()
    elif len(rows) > 1 or text.rstrip().endswith(">"):
        problems.append("last row has no <nl>")
    if not rows:
        return None, problems + ["no OTSL tokens in the output"]
    n_cols = max(len(r) for r in rows)
    owner: dict[tuple[int, int], Cell] = {}
    cells: list[Cell] = []
    for r, row in enumerate(rows):
        if len(row) < n_cols:
            problems.append(f"row {r + 1} has {len(row)} of {n_cols} positions; padded with <ecel>")
            row = row + [("<ecel>", "")] * (n_cols - len(row))
        for c, (token, content) in enumerate(row):
            left, up = owner.get((r, c - 1)), owner.get((r - 1, c))
            merged = up if left is not None and left is up else None
            target = {"<lcel>": left, "<ucel>": up, "<xcel>": merged}.get(token)
            if token in ("<lcel>", "<ucel>", "<xcel>") and target is not None and _extend(target, r, c, owner):
                owner[(r, c)] = target
                continue
            if token in ("<lcel>", "<ucel>", "<xcel>"):
                problems.append(f"row {r + 1}, column {c + 1}: {token} cannot merge there; read as a cell")
            elif content and token == "<ecel>":
                problems.append(f"row {r + 1}, column {c + 1}: <ecel> with content; kept as a cell with content")
            cell = Cell(r, c, html=content, header=token == "<ched>")
            cells.append(cell)
            owner[(r, c)] = cell
    for cell in cells:  # a wide cell whose last row was not completed by <xcel> tokens loses that row
        last = cell.row + cell.rowspan - 1
        if cell.rowspan > 1 and any(owner.get((last, c)) is not cell for c in range(cell.col, cell.col + cell.colspan)):
            problems.append(f"row {last + 1}, column {cell.col + 1}: spanning cell not continued by <xcel>; cut")
            cell.rowspan -= 1
            for c in range(cell.col, cell.col + cell.colspan):
                if owner.get((last, c)) is cell:
                    owner[(last, c)] = Cell(last, c)
                    cells.append(owner[(last, c)])
    cells.sort(key=lambda cell: (cell.row, cell.col))
    return Table(len(rows), n_cols, cells), problems


def _extend(cell: Cell, r: int, c: int, owner: dict) -> bool:
    """Grow `cell` to cover (r, c) when the merge token continues it; returns whether it did."""
    if r == cell.row and cell.rowspan == 1 and c == cell.col + cell.colspan:  # <lcel>
        cell.colspan += 1
        return True
    if c == cell.col and r == cell.row + cell.rowspan:  # <ucel> opening one more row of the cell
        cell.rowspan += 1
        return True
    last_row = cell.row + cell.rowspan - 1
    return r == last_row and cell.col < c < cell.col + cell.colspan and owner.get((r, c - 1)) is cell  # <xcel>
