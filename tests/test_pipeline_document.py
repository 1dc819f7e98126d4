"""`docvlm.pipeline.document`: composed pages -> a DoclingDocument that docling-core validates, one item per region
at its box on its page in reading order, tables, molecules and **kern in the items, boxes as docling writes them."""

from __future__ import annotations

import pytest
from docling_core.types.doc import (
    CodeItem,
    CodeLanguageLabel,
    ContentLayer,
    CoordOrigin,
    DocItemLabel,
    DoclingDocument,
    PictureItem,
    TableItem,
)

import docvlm.tasks
from docvlm.converters.molecules import canonical_smiles
from docvlm.pipeline.document import build_document, markdown, write_document
from docvlm.pipeline.results import PageResult, RegionResult
from page_results import composed

ALL_LAYERS = set(ContentLayer)
LABELS = {"table": DocItemLabel.TABLE, "molecule": DocItemLabel.PICTURE, "music": DocItemLabel.CODE,
          "text": DocItemLabel.TEXT, "title": DocItemLabel.TITLE, "section-header": DocItemLabel.SECTION_HEADER,
          "caption": DocItemLabel.CAPTION, "page-header": DocItemLabel.PAGE_HEADER,
          "page-footer": DocItemLabel.PAGE_FOOTER, "list-item": DocItemLabel.LIST_ITEM,
          "formula": DocItemLabel.FORMULA, "footnote": DocItemLabel.FOOTNOTE, "picture": DocItemLabel.PICTURE}


@pytest.fixture(scope="module")
def two_pages():
    """Page 1: header, table, caption, music, caption, molecule, music; page 2: title, molecule, caption,
    table, music, caption, table, footer."""
    first, second = composed(19, page=1, min_regions=6)[1], composed(20, page=2, min_regions=6)[1]
    assert {r.label for r in first.regions + second.regions} >= {"table", "molecule", "music", "caption"}
    return [first, second]


def items(doc: DoclingDocument) -> list:
    """The document's items in body order, every content layer, no groups."""
    return [item for item, _ in doc.iterate_items(with_groups=False, included_content_layers=ALL_LAYERS)]


def test_the_document_validates_and_round_trips(two_pages, tmp_path):
    doc = build_document("paper", two_pages)
    paths = write_document(tmp_path, "paper", two_pages)
    assert paths == [tmp_path / "paper.docling.json", tmp_path / "paper.md"]
    loaded = DoclingDocument.load_from_json(paths[0])
    assert loaded == DoclingDocument.model_validate_json(doc.model_dump_json()) == doc
    assert paths[1].read_text(encoding="utf-8") == markdown(doc) == loaded.export_to_markdown()
    assert {n: (p.size.width, p.size.height) for n, p in loaded.pages.items()} == {
        1: (two_pages[0].width, two_pages[0].height), 2: (two_pages[1].width, two_pages[1].height)}


def test_one_item_per_region_at_its_box_on_its_page_in_reading_order(two_pages):
    regions = [(page.page, page, r) for page in two_pages for r in page.regions]
    found = items(build_document("paper", two_pages))
    assert len(found) == len(regions)
    for item, (page_no, page, region) in zip(found, regions):
        assert item.label == LABELS[region.label]
        (prov,) = item.prov
        assert prov.page_no == page_no
        assert prov.bbox.coord_origin == CoordOrigin.BOTTOMLEFT  # as docling writes images too
        assert prov.bbox.to_top_left_origin(page.height).as_tuple() == pytest.approx(page.to_units(region.box))
        layer = ContentLayer.FURNITURE if region.label in ("page-header", "page-footer") else ContentLayer.BODY
        assert item.content_layer == layer
        if region.task == "text":
            assert item.text == region.value == region.text
            assert prov.charspan == (0, len(region.value))


def test_tables_molecules_and_kern_are_in_their_items(two_pages):
    doc = build_document("paper", two_pages)
    regions = [r for page in two_pages for r in page.regions]
    text = markdown(doc)
    for item, region in zip(items(doc), regions):
        if region.label == "table":
            assert isinstance(item, TableItem)
            table = region.value
            assert (item.data.num_rows, item.data.num_cols) == (table.n_rows, table.n_cols)
            cells = {(c.start_row_offset_idx, c.start_col_offset_idx): c for c in item.data.table_cells}
            for cell in table.cells:
                mine = cells[(cell.row, cell.col)]
                assert (mine.text, mine.row_span, mine.col_span, mine.column_header) == (
                    cell.text, cell.rowspan, cell.colspan, cell.header)
                assert mine.end_row_offset_idx - mine.start_row_offset_idx == cell.rowspan
                assert " ".join(cell.text.split()) in text  # the Markdown holds each cell's text
            assert any(c.column_header for c in item.data.table_cells) == (table.header_rows > 0)
        elif region.label == "molecule":
            assert isinstance(item, PictureItem)
            assert item.meta.molecule.smi == canonical_smiles(region.text)
            assert item.meta.molecule.confidence == region.score
            assert item.meta.molecule.smi in text
        elif region.label == "music":
            assert isinstance(item, CodeItem) and item.code_language == CodeLanguageLabel.UNKNOWN
            assert item.text == region.value and item.text.startswith("**kern\t**kern\n")
            assert item.orig == region.text


def test_captions_link_to_the_nearest_block_of_their_page(two_pages):
    doc = build_document("paper", two_pages)
    found = items(doc)
    floating = [(i, it) for i, it in enumerate(found) if isinstance(it, (TableItem, PictureItem, CodeItem))]
    linked = 0
    for i, item in enumerate(found):
        if item.label != DocItemLabel.CAPTION:
            continue
        same_page = [(j, it) for j, it in floating if it.prov[0].page_no == item.prov[0].page_no]
        nearest = min(same_page, key=lambda pair: (abs(pair[0] - i), pair[0] > i))[1]
        owners = [it for _, it in floating if item.get_ref() in it.captions]
        assert owners == [nearest]
        linked += 1
    assert linked == 4
    assert found[2].label == DocItemLabel.CAPTION and found[2].get_ref() in found[1].captions  # the table's, below it


def test_a_pdf_page_has_its_boxes_in_points_from_the_bottom_left_as_docling_writes_them():
    _, page = composed(19, page=3, unit="pt", size=(595.0, 842.0), min_regions=6)
    doc = build_document("paper", [page])
    assert (doc.pages[3].size.width, doc.pages[3].size.height) == (595.0, 842.0)
    for item, region in zip(items(doc), page.regions):
        box = item.prov[0].bbox
        x0, y0, x1, y1 = region.box
        assert box.coord_origin == CoordOrigin.BOTTOMLEFT
        assert (box.l, box.t, box.r, box.b) == pytest.approx((x0 * 595, 842 - y0 * 842, x1 * 595, 842 - y1 * 842))
        assert box.to_top_left_origin(842).as_tuple() == pytest.approx(page.to_units(region.box))


def test_unusable_contents_and_unrouted_regions_still_give_one_item_each():
    broken = [("table", "tables", "no table here"), ("molecule", "molecules", "C1CC(("),
              ("music", "music", "hello"), ("text", "text", "")]
    unrouted = ["table", "molecule", "music", "picture", "text", "formula", "footnote", "list-item", "list-item",
                "title", "stamp"]
    regions = []
    for n, (label, task, text) in enumerate(broken):
        parsed = docvlm.tasks.get(task).parse(text)
        assert task == "text" or parsed.value is None
        regions.append(RegionResult(label, (0.1, n / 20, 0.5, n / 20 + 0.04), 0.3, task, text, parsed.value, "model",
                                    parsed.problems))
    regions += [RegionResult(label, (0.1, 0.3 + n / 20, 0.9, 0.33 + n / 20)) for n, label in enumerate(unrouted)]
    page = PageResult("scan.png", None, 1000, 1400, regions=regions)
    doc = DoclingDocument.model_validate_json(build_document("scan", [page]).model_dump_json())
    found = items(doc)
    assert [item.label for item in found] == [
        DocItemLabel.TABLE, DocItemLabel.PICTURE, DocItemLabel.CODE, DocItemLabel.TEXT,
        DocItemLabel.PICTURE, DocItemLabel.PICTURE, DocItemLabel.PICTURE, DocItemLabel.PICTURE,
        DocItemLabel.TEXT, DocItemLabel.FORMULA, DocItemLabel.FOOTNOTE, DocItemLabel.LIST_ITEM,
        DocItemLabel.LIST_ITEM, DocItemLabel.TITLE, DocItemLabel.TEXT]
    assert found[0].data.num_rows == 0 and not found[0].data.table_cells
    assert found[1].meta is None and found[2].text == ""
    assert all(getattr(item, "text", "") == "" for item in found[3:])
    assert found[11].parent == found[12].parent and found[11].parent.cref.startswith("#/groups/")
    assert [item.prov[0].page_no for item in found] == [1] * len(regions)
    markdown(doc)  # exports without raising


def test_text_layer_text_and_error_pages():
    """A PDF text layer's text fills its item; a page that failed keeps its place and size, without items."""
    layer = RegionResult("text", (0.1, 0.1, 0.9, 0.2), None, None, "from the PDF", None, "text-layer")
    failed = PageResult("doc.pdf", 1, 612, 792, "pt", error="page 1: cannot render")
    doc = build_document("doc", [failed, PageResult("doc.pdf", 2, 612, 792, "pt", regions=[layer])])
    assert sorted(doc.pages) == [1, 2]
    (item,) = items(doc)
    assert (item.text, item.prov[0].page_no, item.prov[0].charspan) == ("from the PDF", 2, (0, 12))


def test_a_page_given_twice_is_an_error():
    page = PageResult("doc.pdf", 1, 612, 792, "pt")
    with pytest.raises(ValueError, match="document 'doc': page 1 is given twice"):
        build_document("doc", [page, page])


def test_tables_past_doclings_bound_on_all_cells_are_left_empty_so_the_document_reads_back(monkeypatch):
    from docling_core.utils.settings import settings

    html = "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr><tr><td>e</td><td>f</td></tr></table>"
    table = docvlm.tasks.get("tables").parse(html).value
    regions = [RegionResult("table", (0.1, 0.1 * n, 0.9, 0.1 * n + 0.05), 0.9, "tables", html, table, "model")
               for n in range(3)]
    monkeypatch.setattr(settings, "max_total_table_cells", 13)
    doc = build_document("big", [PageResult("a.png", None, 100, 100, regions=regions)])
    assert [(t.data.num_rows, t.data.num_cols) for t in doc.tables] == [(3, 2), (3, 2), (0, 0)]
    assert DoclingDocument.model_validate_json(doc.model_dump_json()) == doc


@pytest.mark.parametrize("name", ["", ".", "..", "../up", "a/b", "a\\b", "nul\0"])
def test_a_document_name_that_is_not_a_plain_file_name_is_refused(name, tmp_path):
    page = PageResult("a.png", None, 10, 10)
    with pytest.raises(ValueError, match="is not a plain file name"):
        write_document(tmp_path / "out", name, [page])
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_molecule_smiles_keep_their_bracket_labels_and_only_valid_confidences():
    smiles = ["c1ccccc1[Ph]", "[R1]CC(=O)[R2]", "OCC"]
    regions = [RegionResult("molecule", (0.1, 0.2 * n, 0.5, 0.2 * n + 0.1), score, "molecules", s,
                            docvlm.tasks.get("molecules").parse(s).value)
               for n, (s, score) in enumerate(zip(smiles, (0.25, None, 97.0)))]
    doc = build_document("m", [PageResult("a.png", None, 100, 100, regions=regions)])
    assert [(p.meta.molecule.smi, p.meta.molecule.confidence) for p in doc.pictures] == [
        ("[Ph]c1ccccc1", 0.25), ("[R1]CC([R2])=O", None), ("CCO", None)]
    assert [p.meta.molecule.smi for p in doc.pictures] == [canonical_smiles(s) for s in smiles]


def test_a_text_regions_lines_are_one_paragraph_as_docling_makes_them():
    lines = "Salicylic acid was acety-\nlated with\r\n acetic anhy-\ndride at 3-\n4 degrees."
    page = PageResult("doc.pdf", 1, 595.0, 842.0, unit="pt",
                      regions=[RegionResult("text", (0.1, 0.1, 0.9, 0.2), text=lines, source="text-layer")])
    (item,) = items(build_document("doc", [page]))
    assert item.text == "Salicylic acid was acetylated with acetic anhydride at 3- 4 degrees."
    assert item.orig == lines  # the lines as read
    assert "  \n" not in markdown(build_document("doc", [page]))  # no hard line breaks in the Markdown
