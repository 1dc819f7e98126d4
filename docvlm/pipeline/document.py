"""A document's pages as one `DoclingDocument` (docling-core), its Markdown, and the files written for it.

Exactly one item per region, in the order the regions arrive (reading order), also when the region's content
is unusable (its problems are in the manifest row, not in the document):

- a `tables` route: a `TableItem` whose `TableData` cells keep the parsed table's grid offsets, spans and header
  cells (`<th>` or `<thead>`: `column_header`); a table that did not parse is an empty `TableData`, and so is
  one that would take the document past docling-core's bound on all its tables' cells (`max_total_table_cells`,
  5 million grid positions: beyond it docling-core refuses to read the document back);
- a `molecules` route: a `PictureItem` whose `meta.molecule` (`MoleculeMetaField`, the successor of the
  deprecated `PictureMoleculeData` annotation, which docling-core migrates into it) holds RDKit's canonical
  SMILES (`mol_smiles`: bracket labels kept) and the region's layout score as confidence (None unless within
  0..1); no molecule meta when the SMILES did not parse;
- a `music` route: a `CodeItem` holding the repaired **kern. docling-core has no kern language: the item's
  `code_language` is `unknown` and the text names its notation itself, as every Humdrum file does, with its
  first record (`**kern` over each spine); the model's raw output is the item's `orig`. Empty when unusable;
- any other region by its label (DocLayNet's classes): `title` a title, `section-header` a section header,
  `caption` a caption, `list-item` a list item (consecutive ones share a list group), `formula` a formula,
  `footnote` a footnote, `page-header` / `page-footer` page header and footer in the furniture content layer,
  `picture` a picture, anything else a text item; the text is the route's (or the PDF text layer's), empty
  without one. Without a route, `table`, `molecule` and `music` regions are pictures too.

A caption is linked (`captions`) to the nearest table, picture or code item of its page in reading order (the
one before it on a tie) and stays in the body where it stands, so the items keep the regions' order.

Provenance, as docling's standard pipeline writes it for PDFs and images alike: `page_no` from 1, `charspan`
(0, length of the text), the box in the page's own units from its bottom-left corner (`coord_origin`
BOTTOMLEFT, `t` > `b`: docling's `ReadingOrderModel` turns every layout box with `to_bottom_left_origin(page
height)` too). Units and frame are the `PageResult`'s. A PDF page is its crop box (clipped to the media box)
as pdfium displays it: points, `/Rotate` applied, origin at the crop box's corner, the size pypdfium2's
`get_size()` (docling's `DoclingParsePageBackend.get_size`). An image is in pixels as viewers show it (EXIF
orientation applied, where docling reads the stored pixels; docling divides by a dpi the file states, since
docling#4012: the fractions agree). A scan the pipeline turned upright is the upright page, its size and boxes
those of the turned image (width and height swapped by 90 and 270 degrees; its manifest row's `rotation` and
`skew` say how it was turned), where docling, which turns no page, keeps the page as given.
tests/test_pipeline_provenance.py cites docling's code and checks these against the PDFs' own geometry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from docling_core.types.doc import (
    BoundingBox,
    CodeLanguageLabel,
    ContentLayer,
    DocItemLabel,
    DoclingDocument,
    ProvenanceItem,
    Size,
    TableCell,
    TableData,
)
from docling_core.types.doc.document import MoleculeMetaField, PictureMeta
from docling_core.utils.settings import settings

from docvlm.pipeline.results import PageResult, RegionResult

PICTURES = ("picture", "table", "molecule", "music")  # labels drawn as pictures where nothing read them
_TEXT_LABELS = {"title": DocItemLabel.TITLE, "section-header": DocItemLabel.SECTION_HEADER,
                "caption": DocItemLabel.CAPTION, "formula": DocItemLabel.FORMULA, "footnote": DocItemLabel.FOOTNOTE,
                "page-header": DocItemLabel.PAGE_HEADER, "page-footer": DocItemLabel.PAGE_FOOTER}
_FURNITURE = ("page-header", "page-footer")
_FLOATING = (DocItemLabel.TABLE, DocItemLabel.PICTURE, DocItemLabel.CODE)  # what a caption may caption
_OWN_ITEMS = ("tables", "molecules", "music")  # routes whose item type does not follow the region's label


def build_document(name: str, pages: Sequence[PageResult]) -> DoclingDocument:
    """The `DoclingDocument` of a document's pages (see the module docstring); pages are numbered by their
    `page` (1 for an image). Raises ValueError when two pages have the same number."""
    doc = DoclingDocument(name=name)
    floating: dict[int, list[tuple[int, object]]] = {}  # page -> (position, item) of tables, pictures, code
    captions: list[tuple[int, int, object]] = []  # (page, position, caption item)
    position, listing = 0, None
    for number, page in enumerate(pages, 1):
        page_no = page.page or number
        if page_no in doc.pages:
            raise ValueError(f"document {name!r}: page {page_no} is given twice")
        doc.add_page(page_no=page_no, size=Size(width=page.width, height=page.height))
        for region in page.regions:
            if region.label in _FURNITURE:  # outside the body's flow: no caption's distance counts it
                _text_item(doc, page, page_no, region)
                continue
            if region.label == "list-item" and region.task not in _OWN_ITEMS:
                listing = listing or doc.add_list_group()
                text = _content(region)
                doc.add_list_item(text=text, orig=region.text or text, prov=_prov(page, page_no, region, text),
                                  parent=listing)
            else:
                listing = None
                item = _item(doc, page, page_no, region)
                if region.label == "caption" and region.task not in _OWN_ITEMS:
                    captions.append((page_no, position, item))
                elif item.label in _FLOATING:
                    floating.setdefault(page_no, []).append((position, item))
            position += 1
    for page_no, where, caption in captions:
        candidates = floating.get(page_no, [])
        if candidates:
            _, target = min(candidates, key=lambda pair: (abs(pair[0] - where), pair[0] > where))
            target.captions.append(caption.get_ref())
    return doc


def _item(doc: DoclingDocument, page: PageResult, page_no: int, region: RegionResult):
    """The one item of a region that is neither furniture nor a list item."""
    if region.task == "tables":
        table = region.value
        if table is not None and table.n_rows * table.n_cols + _table_cells(doc) > settings.max_total_table_cells:
            table = None  # docling-core would refuse to read the document back
        return doc.add_table(data=_table_data(table), prov=_prov(page, page_no, region, ""))
    if region.task == "molecules":
        picture = doc.add_picture(prov=_prov(page, page_no, region, ""))
        if region.value is not None:
            from docvlm.converters.molecules import mol_smiles

            confidence = region.score if region.score is not None and 0 <= region.score <= 1 else None
            picture.meta = PictureMeta(molecule=MoleculeMetaField(smi=mol_smiles(region.value), confidence=confidence))
        return picture
    if region.task == "music":
        text = region.value if isinstance(region.value, str) else ""
        return doc.add_code(text=text, orig=region.text or text, code_language=CodeLanguageLabel.UNKNOWN,
                            prov=_prov(page, page_no, region, text))
    if region.label == "picture" or (region.label in PICTURES and region.task is None):
        return doc.add_picture(prov=_prov(page, page_no, region, ""))
    return _text_item(doc, page, page_no, region)


def _text_item(doc: DoclingDocument, page: PageResult, page_no: int, region: RegionResult):
    """The item of a region read as text, by its label (module docstring)."""
    text = _content(region)
    prov = _prov(page, page_no, region, text)
    label = _TEXT_LABELS.get(region.label, DocItemLabel.TEXT)
    layer = ContentLayer.FURNITURE if region.label in _FURNITURE else None
    orig = region.text or text
    if label == DocItemLabel.TITLE:
        return doc.add_title(text=text, orig=orig, prov=prov)
    if label == DocItemLabel.SECTION_HEADER:
        return doc.add_heading(text=text, orig=orig, prov=prov)
    if label == DocItemLabel.FORMULA:
        return doc.add_formula(text=text, orig=orig, prov=prov)
    return doc.add_text(label=label, text=text, orig=orig, prov=prov, content_layer=layer)


def _content(region: RegionResult) -> str:
    """A text region's text: the route's parsed text, or the PDF text layer's; empty when nothing read it. Its
    lines are one paragraph, as docling makes them (a line break is a space; a hyphen that ends a line between
    letters joins the word); the item's `orig` keeps the lines."""
    if isinstance(region.value, str):
        text = region.value
    else:
        text = (region.text or "") if region.source == "text-layer" else ""
    return re.sub(r"\s*\n\s*", " ", re.sub(r"(?<=[^\W\d_])-\n(?=[^\W\d_])", "", text.strip()))


def _table_cells(doc: DoclingDocument) -> int:
    """Grid positions of the document's tables so far (docling-core bounds their sum)."""
    return sum(table.data.num_rows * table.data.num_cols for table in doc.tables)


def _table_data(table) -> TableData:
    """docling's cells of a parsed `Table` (`docvlm.converters.tables`); empty for None."""
    if table is None:
        return TableData()
    cells = []
    for cell in table.cells:
        end_row, end_col = min(cell.row + cell.rowspan, table.n_rows), min(cell.col + cell.colspan, table.n_cols)
        cells.append(TableCell(text=cell.text, column_header=cell.header, row_span=end_row - cell.row,
                               col_span=end_col - cell.col, start_row_offset_idx=cell.row, end_row_offset_idx=end_row,
                               start_col_offset_idx=cell.col, end_col_offset_idx=end_col))
    return TableData(table_cells=cells, num_rows=table.n_rows, num_cols=table.n_cols)


def _prov(page: PageResult, page_no: int, region: RegionResult, text: str) -> ProvenanceItem:
    """The region's provenance as docling writes it (see the module docstring)."""
    x0, y0, x1, y1 = page.to_units(region.box)
    box = BoundingBox(l=x0, t=y0, r=x1, b=y1).to_bottom_left_origin(page.height)
    return ProvenanceItem(page_no=page_no, bbox=box, charspan=(0, len(text)))


def markdown(doc: DoclingDocument) -> str:
    """docling-core's own Markdown export of the document (body only: page headers and footers are furniture)."""
    return doc.export_to_markdown()


def write_document(out_dir: str | Path, name: str, pages: Sequence[PageResult]) -> list[Path]:
    """`<out_dir>/<name>.docling.json` (docling-core's `save_as_json`) and `<out_dir>/<name>.md` of the pages;
    returns their paths."""
    stem = _stem(out_dir, name)
    doc = build_document(name, pages)
    json_path, md_path = Path(f"{stem}.docling.json"), Path(f"{stem}.md")
    doc.save_as_json(json_path)
    md_path.write_text(markdown(doc), encoding="utf-8")
    return [json_path, md_path]


def write_kern(out_dir: str | Path, name: str, pages: Sequence[PageResult]) -> tuple[list[Path], list[str]]:
    """`<out_dir>/<name>.krn`: the document's music regions joined into pieces (`converters.kern_join`), one
    Humdrum segment per piece; nothing without music regions. Returns the paths and the joining's problems."""
    from docvlm.converters import kern_join

    stem = _stem(out_dir, name)
    systems = [kern_join.System(region.value if isinstance(region.value, str) else None, page.page or number,
                                f"page {page.page or number}, region {index}")
               for number, page in enumerate(pages, 1)
               for index, region in enumerate(page.regions, 1) if region.task == "music"]
    pieces, problems = kern_join.join(systems)
    if not pieces:
        return [], problems
    path = Path(f"{stem}.krn")
    path.write_text(kern_join.to_file(pieces), encoding="utf-8")
    return [path], problems


def _stem(out_dir: str | Path, name: str) -> Path:
    """`out_dir / name`, `name` a plain file name: a document's files stay in `out_dir`."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"document name {name!r} is not a plain file name")
    return Path(out_dir) / name
