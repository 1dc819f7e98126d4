"""`--regions` files: JSONL rows and COCO dataset files read into each page's regions; a broken file named
with its line, a bad box an error of its page only."""

import json

import pytest

from docvlm.pipeline.regions_file import RegionsFileError, read_regions


def jsonl(tmp_path, *rows) -> str:
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_rows_give_each_page_its_regions_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = jsonl(tmp_path, {"input": "a.png", "page": None, "regions": [
        {"label": "table", "bbox": [0.1, 0.2, 0.5, 0.6], "score": 0.9},
        {"label": "text", "bbox": [0.0, 0.7, 1.0000001, 0.8]}]},
        {"input": str(tmp_path / "b.pdf"), "page": 2, "regions": []})
    given = read_regions(path)
    page = given.lookup(tmp_path / "a.png", None)
    assert page.error is None and [(r.label, r.box, r.score) for r in page.regions] == [
        ("table", (0.1, 0.2, 0.5, 0.6), 0.9), ("text", (0.0, 0.7, 1.0, 0.8), None)]
    assert given.lookup("b.pdf", 2).regions == [] and given.lookup("b.pdf", 1) is None


@pytest.mark.parametrize("region, message", [
    ({"label": "table", "bbox": [10, 20, 300, 400]}, "outside the page"),
    ({"label": "table", "bbox": [0.5, 0.2, 0.1, 0.6]}, "empty or reversed"),
    ({"label": "table", "bbox": [0.1, 0.2, float("nan"), 0.6]}, "not finite"),
    ({"label": "", "bbox": [0.1, 0.2, 0.5, 0.6]}, "`label` must name"),
    ({"label": "table", "bbox": [0.1, 0.2, 0.5]}, "`bbox` must be [x0, y0, x1, y1]"),
    ({"label": "table", "bbox": [0.1, 0.2, 0.5, 0.6], "score": "high"}, "`score` must be a finite number"),
])
def test_a_bad_region_fails_its_page_only(tmp_path, region, message):
    path = jsonl(tmp_path, {"input": "/x/a.png", "page": None, "regions": [region]},
                 {"input": "/x/b.png", "page": None, "regions": [{"label": "text", "bbox": [0, 0, 1, 1]}]})
    given = read_regions(path)
    bad = given.lookup("/x/a.png", None)
    assert bad.error.startswith(f"{path}:1: region 1: ") and message in bad.error
    assert given.lookup("/x/b.png", None).error is None


@pytest.mark.parametrize("line, message", [
    ("{not json", ":2: not a JSON row"),
    ('{"page": 1, "regions": []}', ":2: `input` must be the page's file"),
    ('{"input": "a.pdf", "page": 0, "regions": []}', ":2: `page` must be a page number from 1"),
    ('{"input": "a.pdf", "page": 1, "regions": {}}', ":2: `regions` must be a list"),
    ('{"input": "a.pdf", "page": 1, "regions": [], "boxes": []}', ":2: unknown key 'boxes'"),
    ('{"input": "/x/a.png", "page": null, "regions": []}', ":2: /x/a.png page None is given twice (also on line 1)"),
])
def test_a_broken_file_is_named_with_its_line(tmp_path, line, message):
    path = jsonl(tmp_path, {"input": "/x/a.png", "page": None, "regions": []}, line)
    with pytest.raises(RegionsFileError) as caught:
        read_regions(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_a_coco_file_gives_fractions_of_each_image_by_file_name(tmp_path):
    coco = {"images": [{"id": 7, "file_name": "scans/a.png", "width": 200, "height": 400},
                       {"id": 8, "file_name": "b.png", "width": 0, "height": 400}],
            "annotations": [{"image_id": 7, "category_id": 1, "bbox": [20, 40, 100, 200], "score": 0.5}],
            "categories": [{"id": 1, "name": "table"}]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    given = read_regions(path)
    page = given.lookup(tmp_path / "scans" / "a.png", None)
    assert [(r.label, r.box, r.score) for r in page.regions] == [("table", (0.1, 0.1, 0.6, 0.6), 0.5)]
    assert given.lookup("/elsewhere/scans/a.png", None) is page  # an input matched by the end of its path
    assert "`width` and `height` must be positive" in given.lookup(tmp_path / "b.png", None).error


def test_a_json_file_that_is_not_coco_is_named(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"images": []}', encoding="utf-8")
    with pytest.raises(RegionsFileError, match="not a COCO dataset file"):
        read_regions(path)
