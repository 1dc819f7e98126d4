"""`docvlm evaluate --pipeline`: page truth round-trips through COCO, the truth's own regions give each class the
metrics of its crops scored alone, the reports and predictions are written with model output inert, and bad
truth is one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lxml import html as lxml_html
from PIL import Image

import docvlm
import docvlm.inference
from docvlm.evaluate import main
from docvlm.pipeline.page_report import write_reports
from docvlm.pipeline.results import PageResult, RegionResult
from docvlm.pipeline.scoring import score_page
from docvlm.pipeline.truth import TruthError, content_task, read_coco_truth, synthetic_pages, write_coco
from docvlm.tasks.tables import TablesTask
from docvlm.tasks.text import TextTask

TOKENS = "6"  # new tokens per region: the tiny model's output is noise, its length is what costs
ROUTES = "routes:\n  table: {model: tiny, task: tables}\n  text: {model: tiny, task: text}\n"


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "pipeline.yaml"
    path.write_text(ROUTES, encoding="utf-8")
    return path


def test_composed_truth_round_trips_through_coco(tmp_path):
    pages = list(synthetic_pages(3, seed=2, width=320))
    assert [page.input for _, page in pages] == ["synthetic-2-0.png", "synthetic-2-1.png", "synthetic-2-2.png"]
    for image, page in pages:
        assert (page.width, page.height, page.unit) == (*image.size, "px") and page.regions
        assert all(region.text and region.task == content_task(region.label) for region in page.regions)
    path = write_coco(tmp_path / "truth", pages)

    back = read_coco_truth(path)
    assert [page for _, page in back] == [page for _, page in pages]  # boxes, labels, contents, tasks, order
    for (image, _), (file, _) in zip(pages, back):
        assert np.array_equal(np.asarray(Image.open(file)), np.asarray(image))

    from pycocotools.coco import COCO  # the file is COCO as pycocotools reads it, contents in attributes

    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == sum(len(p.regions) for _, p in pages)
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    assert first["attributes"]["content"] == pages[0][1].regions[0].text


def test_a_plain_coco_layout_file_is_truth_without_contents(tmp_path):
    path = write_coco(tmp_path, synthetic_pages(1, seed=2, width=320))
    data = json.loads(path.read_text(encoding="utf-8"))
    for annotation in data["annotations"]:
        del annotation["attributes"]
    path.write_text(json.dumps(data), encoding="utf-8")
    [(_, page)] = read_coco_truth(path)
    assert page.regions and all(region.text is None and region.task is None for region in page.regions)


def compose(samples: list[tuple[str, object, str]]) -> tuple[Image.Image, list[RegionResult]]:
    """A page holding `(label, image, content)` crops stacked at their own size (no scaling), and its truth."""
    crops = [(label, image.convert("RGB"), content) for label, image, content in samples]
    width = max(crop.width for _, crop, _ in crops) + 20
    height = sum(crop.height for _, crop, _ in crops) + 10 * (len(crops) + 1)
    page, regions, y = Image.new("RGB", (width, height), "white"), [], 10
    for label, crop, content in crops:
        page.paste(crop, (10, y))
        box = (10 / width, y / height, (10 + crop.width) / width, (y + crop.height) / height)
        regions.append(RegionResult(label, box, task=content_task(label), text=content))
        y += crop.height + 10
    return page, regions


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """Two pages of synthetic table and text crops pasted unscaled, their COCO truth, and the crops by label."""
    tables = [("table", s.image, s.target) for s in TablesTask(synthetic_max_rows=3, synthetic_max_cols=3)
              .synthesize(3, seed=5)]
    texts = [("text", s.image, s.target) for s in TextTask().synthesize(3, seed=5)]
    layouts = [[tables[0], texts[0], tables[1]], [texts[1], tables[2], texts[2]]]
    pages = []
    for n, layout in enumerate(layouts):
        image, regions = compose(layout)
        pages.append((image, PageResult(f"page{n}.png", None, *image.size, regions=regions)))
    path = write_coco(tmp_path_factory.mktemp("data"), pages)
    by_label = {"table": [r for layout in layouts for r in layout if r[0] == "table"],
                "text": [r for layout in layouts for r in layout if r[0] == "text"]}
    return path, pages, by_label


@pytest.fixture(scope="module")
def truth_run(composed, pipeline_file, tmp_path_factory):
    """`evaluate --pipeline --truth-regions --margin 0` on the composed pages; the images each model call got."""
    path, _, _ = composed
    out = tmp_path_factory.mktemp("out")
    seen, real = [], docvlm.inference.Model.__call__

    def recording(self, images, *args, **kwargs):
        seen.append((self.task.name, [image.copy() for image in images]))
        return real(self, images, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(docvlm.inference.Model, "__call__", recording)
        code = main(["--pipeline", str(pipeline_file), "--data", str(path), "--truth-regions", "--margin", "0",
                     "--max-new-tokens", TOKENS, "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out, seen


def test_truth_regions_give_each_class_the_metrics_of_its_crops_scored_alone(composed, truth_run):
    _, _, by_label = composed
    out, seen = truth_run
    metrics = json.loads((out / "report.json").read_text(encoding="utf-8"))["metrics"]
    # the truth's own regions: the layout and its reading order are perfect
    assert (metrics["layout/f1"], metrics["layout/map"], metrics["reading_order/ned"]) == (1.0, 1.0, 0.0)
    # the route models read exactly the composed crops, pixel for pixel
    crops = {task: images for task, images in seen}
    for label, task in (("table", "tables"), ("text", "text")):
        assert [np.asarray(c).tolist() for c in crops[task]] == [
            np.asarray(image.convert("RGB")).tolist() for _, image, _ in by_label[label]]
    # and each class scores as its crops decoded and scored alone
    for label, task in (("table", "tables"), ("text", "text")):
        model = docvlm.load("tiny", task=task, device="cpu")
        texts = [p.text for p in model([image.convert("RGB") for _, image, _ in by_label[label]],
                                       max_new_tokens=int(TOKENS))]
        alone = model.task.score(texts, [content for _, _, content in by_label[label]])
        assert alone and {f"{label}/{k}": pytest.approx(float(v)) for k, v in alone.items()} == {
            k: v for k, v in metrics.items() if k.startswith(f"{label}/")}


def test_the_command_writes_reports_and_every_page_s_predictions(composed, truth_run):
    _, pages, _ = composed
    out, _ = truth_run
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["input"] for row in rows] == ["page0.png", "page1.png"]
    for row, (_, truth) in zip(rows, pages):
        assert [(r["label"], tuple(r["box"])) for r in row["regions"]] == [(r.label, r.box) for r in truth.regions]
        assert all(r["source"] == "model" and isinstance(r["text"], str) for r in row["regions"])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 2 and [p["input"] for p in report["pages"]] == ["page0.png", "page1.png"]
    assert "| layout/f1 | 1.0000 |" in (out / "report.md").read_text(encoding="utf-8")
    page = lxml_html.fromstring((out / "report.html").read_bytes())
    assert len(page.xpath("//section[@class='page']")) == 2
    assert all(src.startswith("data:image/png;base64,") for src in page.xpath("//img/@src"))
    # each page's regions side by side: its three true contents, each beside what its route read
    assert len(page.xpath("//table[@class='regions']//tr[@class='matched']")) == 6
    shown = {pre.text_content() for pre in page.xpath("//pre")}
    assert {r.text for _, truth in pages for r in truth.regions} <= shown


HOSTILE = [
    "<script>document.title='pwned'</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
    "</pre></td></table><script>document.title='pwned'</script>",
    "<table><tr><td><iframe src='https://example.com'></iframe></td></tr></table>",
]


def test_hostile_output_labels_and_names_stay_inert(tmp_path):
    truth = PageResult("<script>alert(1)</script>.png", None, 40, 40, regions=[
        RegionResult("text", (0.1, 0.1, 0.9, 0.4), task="text", text=HOSTILE[0]),
        RegionResult("table", (0.1, 0.5, 0.9, 0.9), task="tables", text=HOSTILE[3])])
    predicted = PageResult(truth.input, None, 40, 40, regions=[
        RegionResult("text", (0.1, 0.1, 0.9, 0.4), text=HOSTILE[1], problems=[HOSTILE[2]]),
        RegionResult("<img src=x onerror=alert(3)>", (0.5, 0.5, 0.6, 0.6), text=HOSTILE[2])],
        problems=[HOSTILE[0]])
    image = tmp_path / "page.png"
    Image.new("RGB", (40, 40), "white").save(image)
    options = {"command": "docvlm evaluate --pipeline <script>x</script>", "about": {"model": HOSTILE[1]}}
    scored = ({"layout/f1": 0.5}, [score_page(predicted.regions, truth.regions)])
    paths = write_reports(tmp_path / "out", options, scored, [(image, truth)], [predicted],
                          {"text": TextTask(), "table": TablesTask()})
    page = lxml_html.fromstring(paths[2].read_bytes())
    elements = [e for e in page.iter() if isinstance(e.tag, str)]
    assert not [e for e in elements if e.tag in ("script", "iframe", "object", "embed", "base", "form", "link")]
    assert not [(e.tag, a) for e in elements for a in e.attrib if a.lower().startswith("on")]
    assert all(src.startswith("data:") for src in page.xpath("//@src"))
    assert [len(page.xpath(f"//tr[@class='{kind}']")) for kind in ("matched", "missed", "spurious")] == [1, 1, 1]
    assert {pre.text_content() for pre in page.xpath("//pre")} == {HOSTILE[0], HOSTILE[3], HOSTILE[1], HOSTILE[2]}
    text = page.text_content()
    assert "<img src=x onerror=alert(3)>" in text and "<script>alert(1)</script>.png" in text
    assert "<img src=x onerror=alert(3)>" not in paths[1].read_text(encoding="utf-8")  # labels escaped in report.md


def bad_truth(tmp_path: Path, kind: str) -> Path:
    path = write_coco(tmp_path / "data", synthetic_pages(1, seed=2, width=320))
    data = json.loads(path.read_text(encoding="utf-8"))
    if kind == "missing":
        return tmp_path / "nothing.json"
    if kind == "not json":
        path.write_text("{not json", encoding="utf-8")
    elif kind == "content not text":
        data["annotations"][0]["attributes"]["content"] = 5
        path.write_text(json.dumps(data), encoding="utf-8")
    elif kind == "box outside":
        data["annotations"][0]["bbox"] = [0, 0, 9999, 10]
        path.write_text(json.dumps(data), encoding="utf-8")
    elif kind == "jsonl":
        path = path.rename(path.with_suffix(".jsonl"))
    return path


@pytest.mark.parametrize("kind", ["missing", "not json", "content not text", "box outside", "jsonl"])
def test_bad_truth_is_one_line_naming_the_file(tmp_path, kind, pipeline_file, capsys):
    path = bad_truth(tmp_path, kind)
    with pytest.raises(TruthError, match=str(path).replace(".", r"\.")):
        read_coco_truth(path)
    code = main(["--pipeline", str(pipeline_file), "--data", str(path), "--truth-regions", "--out",
                 str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(path) in err and "Traceback" not in err


def test_regions_from_a_file_and_a_page_it_does_not_give(composed, pipeline_file, tmp_path):
    path, pages, _ = composed
    regions = tmp_path / "regions.jsonl"  # another detector's regions for the first page only
    row = {"input": str(path.parent / "page0.png"), "page": None,
           "regions": [{"label": r.label, "bbox": list(r.box), "score": 0.9} for r in pages[0][1].regions]}
    regions.write_text(json.dumps(row) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--pipeline", str(pipeline_file), "--data", str(path), "--regions", str(regions), "--margin", "0",
                 "--max-new-tokens", TOKENS, "--out", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [len(row["regions"]) for row in rows] == [3, 0]
    assert rows[0]["error"] is None and {r["score"] for r in rows[0]["regions"]} == {0.9}
    assert str(regions) in rows[1]["error"] and "page1.png" in rows[1]["error"]  # that page fails, named
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [(p["layout_f1"], p["missed"], p["error"] is None) for p in report["pages"]] == [(1.0, [], True),
                                                                                    (0.0, [0, 1, 2], False)]
    assert report["metrics"]["layout/f1"] == pytest.approx(2 / 3)  # three regions found of six, none spurious
    page = lxml_html.fromstring((out / "report.html").read_bytes())
    first = page.xpath("//section[@class='page']")[0]  # the failed page first, its regions listed as missed
    assert "page1.png" in first.xpath(".//h3")[0].text_content()
    assert len(first.xpath(".//tr[@class='missed']")) == 3


def test_composed_pages_are_written_and_read_by_the_layout_model(tmp_path):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("layout: tiny\n" + ROUTES, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--pipeline", str(pipeline), "--synthetic-pages", "2", "--synthetic-width", "224",
                 "--max-new-tokens", TOKENS, "--out", str(out), "--device", "cpu"]) == 0
    written = read_coco_truth(out / "pages" / "truth.json")  # to evaluate again, or to convert with --regions
    assert [page for _, page in written] == [page for _, page in synthetic_pages(2, seed=1, width=224)]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 2 and {"layout/f1", "layout/map", "reading_order/ned"} <= set(report["metrics"])
    assert "composed pages (seed 1" in report["options"]["about"]["data"]


@pytest.mark.parametrize("extra, message", [
    ([], "names no layout model: give --truth-regions or --regions"),
    (["--truth-regions", "--model", "tiny"], "leave out --model"),
    (["--truth-regions", "--regions", "r.jsonl"], "pick one"),
    (["--truth-regions", "--synthetic-kinds", "table,poem"], "poem not among"),
    (["--truth-regions", "--pipeline", "missing.yaml"], "missing.yaml: no such pipeline file"),
])
def test_usage_errors_exit_2_in_one_line_before_any_output(extra, message, pipeline_file, tmp_path, capsys):
    try:
        code = main(["--pipeline", str(pipeline_file), "--synthetic-pages", "1", "--out", str(tmp_path / "out"),
                     *extra])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_the_pipelines_help_without_a_file(capsys, tmp_path):
    assert main(["--pipeline", "--help"]) == 0  # argparse alone would take --help for the pipeline file
    assert "--synthetic-pages" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())
