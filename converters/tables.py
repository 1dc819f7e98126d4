"""Tables: PubTabNet/FinTabNet annotations -> target HTML, model output -> `Table`, and exports.

The target is PubTabNet's HTML: `<table>`, `<thead>`/`<tbody>`, `<tr>`, `<td>` (header cells are `td` in
`thead`, as in the dataset), cell content as inner HTML (text escaped, inline tags such as `<b>`,
`<i>`, `<sup>` kept). With `coords`, each non-empty cell with a box carries
`coords="<locYmin><locXmin><locYmax><locXmax>"`: PaliGemma's order and bins (`docvlm.converters.locations`, the
package's one codec), over the image padded to a white square, centred, as `docvlm.images.pad_to_square` does.

`parse_html` never raises: it repairs what it can (unclosed tags, ragged rows, spans running past the
grid or into other cells, stray text, bad span values) and lists every repair. A table of more than
`MAX_TABLE_POSITIONS` grid positions (covered by its cells, or in all) is not read: model output is
untrusted, and a looping model's `colspan="1000000"` must not take minutes and gigabytes to place.
"""

from __future__ import annotations

import csv
import html as htmlmod
import io
import json
import re
from dataclasses import asdict, dataclass, field

from lxml import etree
from lxml import html as lxml_html

from docvlm.converters import capped, locations

_STRUCTURE_TAGS = ("table", "thead", "tbody", "tr", "td", "th")
MAX_TABLE_POSITIONS = 100_000  # grid positions of a table read from model output (real ones have thousands)


@dataclass
class Cell:
    """One cell: its top-left grid position, spans, inner HTML and, optionally, its box in pixels."""

    row: int
    col: int
    rowspan: int = 1
    colspan: int = 1
    html: str = ""
    header: bool = False
    box: tuple[float, float, float, float] | None = None  # pixels of the source image (annotations)
    loc: tuple[int, int, int, int] | None = None  # bins of the padded square as written: ymin, xmin, ymax, xmax

    @property
    def text(self) -> str:
        """Plain text of the cell (inline tags removed, entities decoded)."""
        return htmlmod.unescape(re.sub(r"<[^>]*>", "", self.html))


@dataclass
class Table:
    """A grid of `n_rows` x `n_cols` positions covered by `cells` (row-major order of their top-left)."""

    n_rows: int
    n_cols: int
    cells: list[Cell] = field(default_factory=list)

    @property
    def header_rows(self) -> int:
        """Leading rows whose cells are all header cells."""
        count = 0
        for r in range(self.n_rows):
            starting = [c for c in self.cells if c.row == r]
            if not starting or not all(c.header for c in starting):
                break
            count += 1
        return count

    def grid(self) -> list[list[Cell | None]]:
        """The cell covering each position (None where no cell does)."""
        out: list[list[Cell | None]] = [[None] * self.n_cols for _ in range(self.n_rows)]
        for cell in self.cells:
            for r in range(cell.row, min(cell.row + cell.rowspan, self.n_rows)):
                for c in range(cell.col, min(cell.col + cell.colspan, self.n_cols)):
                    out[r][c] = cell
        return out


def escape_token(token: str) -> str:
    """A PubTabNet cell token as HTML: single characters escaped, inline tags (`<b>`) kept."""
    return htmlmod.escape(token, quote=False) if len(token) == 1 else token


def loc_tokens(box, image_size: tuple[int, int]) -> str:
    """Four `<locNNNN>` tokens (`locations.encode`) for a pixel box of an image of `image_size`, padded to a
    centred square."""
    width, height = image_size
    side = max(width, height)
    dx, dy = (side - width) // 2, (side - height) // 2
    x0, y0, x1, y1 = box
    return locations.encode_pixels((x0 + dx, y0 + dy, x1 + dx, y1 + dy), side, side)


def pubtabnet_html(structure: list[str], cells: list[dict], image_size: tuple[int, int] | None = None) -> str:
    """Target HTML of a PubTabNet/FinTabNet annotation (`html.structure.tokens`, `html.cells`).

    With `image_size`, non-empty cells that have a `bbox` get a `coords` attribute of loc tokens.
    """
    out, index = [], 0
    for token in structure:
        if token in ("<td>", ">") and (token == "<td>" or (out and out[-1].startswith(("<td", " ")))):
            if index >= len(cells):
                raise ValueError(f"structure has more cells than the {len(cells)} annotated")
            cell = cells[index]
            index += 1
            tokens = cell.get("tokens", [])
            opening = "<td" if token == "<td>" else ""
            if image_size is not None and tokens and cell.get("bbox"):
                opening += f' coords="{loc_tokens(cell["bbox"], image_size)}"'
            out.append(f"{opening}>" + "".join(escape_token(t) for t in tokens))
        else:
            out.append(token)
    if index != len(cells):
        raise ValueError(f"structure has {index} cells but {len(cells)} are annotated")
    return "<table>" + "".join(out) + "</table>"


def to_html(table: Table, image_size: tuple[int, int] | None = None) -> str:
    """The canonical target HTML of a table (header rows in `thead`, the rest in `tbody`).

    Cells carry `coords` when they have `loc` bins, or a pixel `box` and `image_size` is given.
    """
    rows: list[list[str]] = [[] for _ in range(table.n_rows)]
    for cell in sorted(table.cells, key=lambda c: (c.row, c.col)):
        attrs = ""
        if cell.loc is not None:
            attrs += ' coords="' + "".join(locations.token(b) for b in cell.loc) + '"'
        elif cell.box is not None and image_size is not None and cell.html:
            attrs += f' coords="{loc_tokens(cell.box, image_size)}"'
        if cell.colspan > 1:
            attrs += f' colspan="{cell.colspan}"'
        if cell.rowspan > 1:
            attrs += f' rowspan="{cell.rowspan}"'
        rows[cell.row].append(f"<td{attrs}>{cell.html}</td>")
    head = table.header_rows
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows[head:])
    thead = "<thead>" + "".join(f"<tr>{''.join(r)}</tr>" for r in rows[:head]) + "</thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def to_html_document(table: Table, title: str = "table") -> str:
    """A complete, valid HTML5 document showing the table."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{htmlmod.escape(title)}</title>"
        "<style>table{border-collapse:collapse}td{border:1px solid #888;padding:2px 6px}"
        "thead td{font-weight:bold}</style></head>\n<body>\n"
        f"{to_html(table)}\n</body></html>\n"
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula
_PLAIN_NUMBER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+|(?=\.\d))(\.\d+)?%?|-")  # -5.3, +2, -1,234.5, -.5, 12%, -


def csv_safe(text: str) -> str:
    """`text` with a `'` before it when a spreadsheet would run it as a formula (OWASP's CSV injection rule:
    it starts with = + - @ tab or carriage return), unless it is a plain number or a lone `-`, which fill
    financial tables. Model output is untrusted: `=HYPERLINK(...)` must stay text."""
    if text.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def to_csv(table: Table) -> str:
    """Plain-text grid as CSV; a spanning cell's text sits at its top-left position, the rest empty. Cells a
    spreadsheet would run as formulas are neutralised (`csv_safe`); a carriage return in a cell becomes a
    line feed, which the writer quotes (a bare CR it leaves unquoted, and readers take it for a row's end)."""
    grid = [[""] * table.n_cols for _ in range(table.n_rows)]
    for cell in table.cells:
        grid[cell.row][cell.col] = csv_safe(cell.text).replace("\r\n", "\n").replace("\r", "\n")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(grid)
    return buffer.getvalue()


def to_markdown(table: Table) -> str:
    """GitHub Markdown table (first row as header, spans flattened as in `to_csv`)."""
    grid = [[""] * table.n_cols for _ in range(table.n_rows)]
    for cell in table.cells:
        grid[cell.row][cell.col] = " ".join(cell.text.split()).replace("|", "\\|")
    if not grid or table.n_cols == 0:
        return ""
    lines = ["| " + " | ".join(grid[0]) + " |", "|" + "---|" * table.n_cols]
    lines += ["| " + " | ".join(row) + " |" for row in grid[1:]]
    return "\n".join(lines) + "\n"


def to_json(table: Table) -> str:
    return json.dumps(
        {
            "n_rows": table.n_rows,
            "n_cols": table.n_cols,
            "header_rows": table.header_rows,
            "cells": [dict(asdict(c), text=c.text) for c in table.cells],
        },
        ensure_ascii=False,
        indent=1,
    )


def parse_html(text: str) -> tuple[Table | None, list[str]]:
    """Model output -> (table, problems). Never raises; `None` when no table can be recovered."""
    problems: list[str] = []
    if not text or not text.strip():
        return None, ["empty prediction"]
    _check_balance(text, problems)
    try:
        root = lxml_html.fragment_fromstring(text, create_parent="div")
    except (etree.ParserError, ValueError, TypeError) as e:
        return None, problems + [f"unparseable HTML ({e})"]
    tables = root.xpath(".//table")
    if not tables:
        if root.xpath(".//tr"):
            problems.append("no <table> element; rows read as a table")
            table_el = root
        else:
            return None, problems + ["no table in the output"]
    else:
        table_el = tables[0]
        if len(tables) > 1:
            problems.append(f"{len(tables)} tables; only the first is kept")
    _report_stray_text(root, table_el, problems)
    rows = []  # (is_header_section, tr element)
    for tr in table_el.iter("tr"):
        section = next((a.tag for a in tr.iterancestors() if a.tag in ("thead", "tbody", "tfoot", "table")), "table")
        rows.append((section == "thead", tr))
    covered = _covered_positions(rows)
    if covered > MAX_TABLE_POSITIONS:
        too_large = f"table cells cover {covered} grid positions, more than {MAX_TABLE_POSITIONS}: not read"
        return None, [*capped(problems), too_large]
    cells, occupied = _place(rows, problems)
    n_cols = max((c for _, c in occupied), default=-1) + 1
    if len(rows) * n_cols > MAX_TABLE_POSITIONS:
        too_large = f"table of {len(rows)} x {n_cols} grid positions, more than {MAX_TABLE_POSITIONS}: not read"
        return None, [*capped(problems), too_large]
    return _padded(cells, occupied, len(rows), n_cols, problems), capped(problems)


def _covered_positions(rows) -> int:
    """Grid positions the cells would cover at most (rowspans cut at the last row): bounds placing them."""
    covered = 0
    for r, (_, tr) in enumerate(rows):
        for node in tr:
            if node.tag in ("td", "th"):
                covered += _span(node, "colspan", [], "") * min(_span(node, "rowspan", [], ""), len(rows) - r)
    return covered


def _check_balance(text: str, problems: list[str]) -> None:
    for tag in _STRUCTURE_TAGS:
        opened = len(re.findall(rf"<{tag}[\s>/]", text, flags=re.I))
        closed = len(re.findall(rf"</{tag}\s*>", text, flags=re.I))
        if opened != closed:
            problems.append(f"<{tag}>: {opened} opened, {closed} closed (repaired by the HTML parser)")


def _report_stray_text(root, table_el, problems: list[str]) -> None:
    for node in table_el.iter():
        if any(a.tag in ("td", "th") for a in node.iterancestors()):
            continue  # cell content
        pieces = [] if node.tag in ("td", "th") else [node.text]
        if node is not table_el:
            pieces.append(node.tail)
        for piece in pieces:
            if piece and piece.strip():
                problems.append(f"stray text outside cells dropped: {piece.strip()[:40]!r}")
    if table_el is not root:
        outside = root.text_content().replace(table_el.text_content(), "", 1)
        if outside.strip():
            problems.append(f"text outside the table dropped: {outside.strip()[:40]!r}")


def _span(node, name: str, problems: list[str], where: str) -> int:
    value = node.get(name)
    if value is None:
        return 1
    try:
        span = int(value)
    except ValueError:
        problems.append(f"{where}: {name}={value!r} is not an integer; read as 1")
        return 1
    if span < 1:
        problems.append(f"{where}: {name}={span} below 1; read as 1")
        return 1
    return span


# PubTabNet's inline tags; anything else in a cell is model output we must not pass on as markup
INLINE_TAGS = frozenset({"b", "i", "sup", "sub", "strike", "underline", "overline", "strong", "em", "u"})
_DROPPED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template", "noscript"})


def _inner_html(cell, problems: list[str] | None = None) -> str:
    """A cell's content as safe HTML: text escaped, inline tags kept without attributes, any other
    element reduced to its escaped text (scripts and styles dropped whole), each removal listed."""
    problems = [] if problems is None else problems
    parts = [htmlmod.escape(cell.text, quote=False)] if cell.text else []
    for child in cell:
        if not isinstance(child.tag, str):  # comments, processing instructions: dropped
            problems.append("comment in a cell: removed")
        elif child.tag in INLINE_TAGS:
            if child.attrib:
                problems.append(f"<{child.tag}> in a cell: attributes removed")
            parts.append(f"<{child.tag}>{_inner_html(child, problems)}</{child.tag}>")
        elif child.tag in _DROPPED_WITH_CONTENT:
            problems.append(f"<{child.tag}> in a cell: removed with its content")
        else:
            problems.append(f"<{child.tag}> in a cell: tag removed, text kept")
            parts.append(_inner_html(child, problems))
        if child.tail:
            parts.append(htmlmod.escape(child.tail, quote=False))
    return "".join(parts)


def _place(rows, problems: list[str]) -> tuple[list[Cell], set[tuple[int, int]]]:
    """Place cells on the grid like a browser: each cell takes the first free position of its row."""
    occupied: set[tuple[int, int]] = set()
    cells: list[Cell] = []
    for r, (in_thead, tr) in enumerate(rows):
        c = 0
        for node in tr:
            if node.tag not in ("td", "th"):
                continue
            where = f"row {r + 1}"
            while (r, c) in occupied:
                c += 1
            colspan = _span(node, "colspan", problems, where)
            rowspan = _span(node, "rowspan", problems, where)
            free = 0
            while free < colspan and (r, c + free) not in occupied:
                free += 1
            if free < colspan:
                problems.append(f"{where}, column {c + 1}: colspan {colspan} runs into a spanning cell; cut to {free}")
                colspan = free
            if rowspan > len(rows) - r:
                problems.append(f"{where}, column {c + 1}: rowspan {rowspan} runs past the last row; "
                                f"cut to {len(rows) - r}")
                rowspan = len(rows) - r
            header = in_thead or node.tag == "th"
            cells.append(Cell(r, c, rowspan, colspan, _inner_html(node, problems), header,
                              loc=_coords(node.get("coords"))))
            occupied.update((r + i, c + j) for i in range(rowspan) for j in range(colspan))
            c += colspan
    return cells, occupied


def _padded(cells: list[Cell], occupied: set[tuple[int, int]], n_rows: int, n_cols: int, problems: list[str]) -> Table:
    """The table with every position no cell covers filled by an empty cell, each such row listed."""
    header_rows = {cell.row for cell in cells if cell.header}
    for r in range(n_rows):
        missing = [c for c in range(n_cols) if (r, c) not in occupied]
        if missing:
            problems.append(f"row {r + 1} covers {n_cols - len(missing)} of {n_cols} columns; padded with empty cells")
            cells.extend(Cell(r, c, header=r in header_rows) for c in missing)
    cells.sort(key=lambda cell: (cell.row, cell.col))
    return Table(n_rows, n_cols, cells)


def _coords(value: str | None) -> tuple[int, int, int, int] | None:
    """The four loc bins of a `coords` attribute (None unless exactly four)."""
    bins = tuple(int(b) for b in locations.LOC.findall(value or ""))
    return bins if len(bins) == 4 else None  # type: ignore[return-value]
