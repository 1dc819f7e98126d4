"""Tables converter: PubTabNet annotations -> HTML, parsing with repairs, OTSL round trips, exports."""

import csv
import html
import io
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docvlm.converters.otsl import parse_otsl, to_otsl
from docvlm.converters.table_render import random_table, render_table
from docvlm.converters.tables import (
    Cell,
    Table,
    loc_tokens,
    parse_html,
    pubtabnet_html,
    to_csv,
    to_html,
    to_html_document,
    to_json,
    to_markdown,
)


@pytest.fixture(scope="module")
def annotations(data_dir):
    path = data_dir / "pubtabnet" / "examples"
    rows = [json.loads(line) for line in (path / "PubTabNet_Examples.jsonl").read_text(encoding="utf-8").splitlines()]
    return path, rows


def _cells(table: Table):
    return [(c.row, c.col, c.rowspan, c.colspan, c.html, c.header) for c in table.cells]


def test_pubtabnet_annotations_to_html_and_back(annotations):
    _, rows = annotations
    for row in rows:
        structure, cells = row["html"]["structure"]["tokens"], row["html"]["cells"]
        target = pubtabnet_html(structure, cells)
        table, problems = parse_html(target)
        assert problems == [], row["filename"]
        assert to_html(table) == target  # canonical form is PubTabNet's own
        assert sum(1 for t in structure if t in ("<td>", "<td")) == len(table.cells)
        otsl_table, otsl_problems = parse_otsl(to_otsl(table))
        assert otsl_problems == [] and to_html(otsl_table) == target
    first = pubtabnet_html(rows[0]["html"]["structure"]["tokens"], rows[0]["html"]["cells"])
    assert first.startswith("<table><thead><tr><td><b>Variable</b></td>")
    assert "<td> &gt;69</td>" in first  # single-character tokens are escaped, whitespace kept


def test_coords_are_loc_tokens_of_the_padded_square(annotations):
    _, rows = annotations
    row = rows[0]
    target = pubtabnet_html(row["html"]["structure"]["tokens"], row["html"]["cells"], (400, 200))
    table, problems = parse_html(target)
    assert not problems
    boxed = [c for c in table.cells if c.loc is not None]
    assert len(boxed) == sum(1 for c in row["html"]["cells"] if c["tokens"])  # every non-empty cell, only those
    assert loc_tokens((0, 0, 400, 200), (400, 200)) == "<loc0256><loc0000><loc0768><loc1023>"  # ymin xmin ymax xmax
    # the coords do not change what TEDS compares
    from docvlm.metrics import teds

    plain = pubtabnet_html(row["html"]["structure"]["tokens"], row["html"]["cells"])
    assert teds(f"<html><body>{target}</body></html>", f"<html><body>{plain}</body></html>") == 1.0


text_runs = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=6)


@st.composite
def tables(draw):
    table = random_table(random.Random(draw(st.integers(0, 2**32))), max_rows=6, max_cols=5)
    import html as h

    for cell in table.cells:  # arbitrary text (escaped), sometimes inside inline tags
        text = h.escape(draw(text_runs), quote=False)
        tag = draw(st.sampled_from(["", "b", "i", "sup"]))
        if draw(st.booleans()):
            cell.html = f"<{tag}>{text}</{tag}>" if tag and text else text
    return table


@settings(max_examples=150, deadline=None)
@given(tables())
def test_round_trip_table_html_parse(table):
    parsed, problems = parse_html(to_html(table))
    assert problems == []
    assert (parsed.n_rows, parsed.n_cols) == (table.n_rows, table.n_cols)
    assert _cells(parsed) == _cells(table)


@settings(max_examples=150, deadline=None)
@given(tables())
def test_round_trip_otsl(table):
    html = to_html(table)
    otsl = to_otsl(parse_html(html)[0])
    back, problems = parse_otsl(otsl)
    assert problems == []
    assert to_html(back) == html


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty prediction"),
        ("just some words", "no table"),
        ("<p>no table here</p>", "no table"),
        ("<table><tr><td>a<td>b</tr>", "opened"),
        ("<table><tr><td>a</td></tr><tr><td>b</td><td>c</td></tr></table>", "padded with empty cells"),
        ('<table><tr><td rowspan="5">a</td></tr></table>', "runs past the last row"),
        ('<table><tr><td rowspan="2">a</td><td>b</td></tr><tr><td colspan="3">c</td></tr></table>', "padded"),
        ('<table><tr><td colspan="x">a</td></tr></table>', "not an integer"),
        ("<table><tr>stray<td>a</td></tr></table>", "stray text"),
        ("<table><tr><td>a</td></tr></table> and more", "outside the table"),
        ("<tr><td>a</td></tr>", "no <table>"),
    ],
)
def test_malformed_html_is_repaired_and_listed(text, fragment):
    table, problems = parse_html(text)
    assert any(fragment in p for p in problems), problems
    if table is not None:  # whatever was recovered is a fully covered grid
        assert all(cell is not None for row in table.grid() for cell in row)


def test_spans_into_other_cells_are_cut():
    table, problems = parse_html('<table><tr><td rowspan="2">a</td><td>b</td></tr>'
                                 '<tr><td colspan="2">c</td></tr></table>')
    assert any("padded" in p for p in problems) or not problems
    assert all(cell is not None for row in table.grid() for cell in row)
    assert sum(c.rowspan * c.colspan for c in table.cells) == table.n_rows * table.n_cols


def test_enormous_and_deep_markup_does_not_crash():
    big = "<table>" + "<tr>" + "<td>x</td>" * 50 + "</tr>" * 1 + "</table>"
    table, _ = parse_html(big * 1)
    assert (table.n_rows, table.n_cols) == (1, 50)
    deep = "<table><tr><td>" + "<b>" * 3000 + "x" + "</b>" * 3000 + "</td></tr></table>"
    table, problems = parse_html(deep)
    assert table is None or table.n_rows == 1


def test_otsl_repairs():
    table, problems = parse_otsl("<fcel>a<fcel>b<nl><fcel>c<nl>")
    assert (table.n_rows, table.n_cols) == (2, 2) and any("padded" in p for p in problems)
    table, problems = parse_otsl("<lcel>x<ucel><nl>")
    assert any("cannot merge" in p for p in problems) and len(table.cells) == 2
    assert parse_otsl("no tokens")[0] is None


def test_exports():
    table = Table(2, 2, [Cell(0, 0, 1, 2, "<b>Head</b> &amp; co", header=True), Cell(1, 0, html="1|2"), Cell(1, 1)])
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows == [["Head & co", ""], ["1|2", ""]]
    assert to_markdown(table).splitlines()[2] == "| 1\\|2 |  |"
    data = json.loads(to_json(table))
    assert data["header_rows"] == 1 and data["cells"][0]["colspan"] == 2 and data["cells"][0]["text"] == "Head & co"
    document = to_html_document(table)
    from lxml import etree

    etree.fromstring(document.split("\n", 1)[1].encode(), etree.HTMLParser(recover=False))  # well-formed HTML
    assert '<thead><tr><td colspan="2"><b>Head</b> &amp; co</td></tr></thead>' in document


def test_synthetic_tables_render_with_boxes_inside_the_image():
    for seed in range(5):
        rng = random.Random(seed)
        table = random_table(rng, 8, 5)
        image = render_table(table, rng)
        assert sum(c.rowspan * c.colspan for c in table.cells) == table.n_rows * table.n_cols
        for cell in table.cells:
            assert (cell.box is None) == (not cell.html)
            if cell.box:
                x0, y0, x1, y1 = cell.box
                assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        pixels = image.convert("L").getextrema()
        assert pixels[0] < 100 and pixels[1] == 255  # ink on white


def test_exports_never_carry_markup_from_the_model(tmp_path):
    """Model output is untrusted: scripts, handlers and unknown tags never reach an exported file."""
    from docvlm.tasks import get

    hostile = (
        '<table><tr><td><script>alert(1)</script><img src=x onerror=alert(2)>'
        '<b onclick="alert(3)">bold</b> x&lt;y <a href="javascript:alert(4)">link</a></td></tr></table>'
    )
    task = get("tables")
    parsed = task.parse(hostile)
    cell = parsed.value.cells[0]
    assert cell.html == "<b>bold</b> x&lt;y link"
    assert any("<script> in a cell: removed" in p for p in parsed.problems)
    assert any("<img> in a cell" in p for p in parsed.problems)
    for path in task.export(parsed, tmp_path / "t"):
        text = path.read_text()
        assert "alert" not in text and "onerror" not in text and "onclick" not in text and "javascript:" not in text


def test_the_csv_export_neutralises_formulas_but_keeps_plain_numbers(tmp_path):
    """OWASP's CSV injection rule on model output, through the tables task's export (what `docvlm convert`
    writes per page): cells starting with = + - @ tab or CR get a leading `'`; plain numbers and a lone `-`
    stay as they are; the HTML, Markdown and JSON exports keep the text unchanged."""
    import docvlm.tasks

    formulas = ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
                "\tx", "\rx", "=", "+", "--", "-1e5"]
    numbers = ["-5.3", "+2", "-", "-1,234.56", "12%", "-.5", "0", "plain text"]
    cells = "".join(f"<td>{html.escape(c).replace(chr(13), '&#13;')}</td>" for c in formulas + numbers)  # CR kept
    task = docvlm.tasks.get("tables")
    paths = task.export(task.parse(f"<table><tr>{cells}</tr></table>"), tmp_path / "page")
    written = {p.suffix: p for p in paths}
    with written[".csv"].open(newline="", encoding="utf-8") as f:
        (row,) = list(csv.reader(f))
    assert row == ["'" + c.replace("\r", "\n") for c in formulas] + numbers  # a CR would end the row
    assert json.loads(written[".json"].read_text())["cells"][0]["text"] == formulas[0]
def test_coords_write_y_before_x_in_the_package_codec():
    """The cells' coords use the layout task's codec: PaliGemma's <ymin><xmin><ymax><xmax>, nearest of 1024 bins."""
    from docvlm.converters import locations

    # a 400 x 200 image padded to a 400 px square: 100 px of white above it
    assert loc_tokens((10, 20, 110, 60), (400, 200)) == "<loc0307><loc0026><loc0410><loc0282>"
    table, problems = parse_html('<table><tr><td coords="<loc0307><loc0026><loc0410><loc0282>">a</td></tr></table>')
    assert not problems and table.cells[0].loc == (307, 26, 410, 282)
    x0, y0, x1, y1 = locations.decode(table.cells[0].loc)
    assert (x0 * 400, y0 * 400 - 100, x1 * 400, y1 * 400 - 100) == pytest.approx((10, 20, 110, 60), abs=400 / 2048)
