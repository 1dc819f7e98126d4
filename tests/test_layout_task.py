"""The layout task: PaliGemma detection text in reading order, parse problems instead of exceptions, the COCO,
VOC and `datasets` readers, export, and augmentation that moves the boxes with the pixels."""

import json
import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw

import docvlm.tasks
from docvlm.converters import locations
from docvlm.converters.layout import Region, parse, to_text
from docvlm.converters.reading_order import reading_order
from docvlm.images import Augment

HALF_BIN = 0.5 / locations.BINS


@pytest.fixture(scope="module")
def task():
    return docvlm.tasks.get("layout")


def test_prompt_names_the_classes_and_the_target_is_detection_text(task):
    assert task.prefix == ("detect caption ; footnote ; formula ; list-item ; page-footer ; page-header ; picture ; "
                           "section-header ; table ; text ; title ; molecule ; music")
    assert docvlm.tasks.get("layout", classes=["table", "molecule"]).prefix == "detect table ; molecule"
    region = Region("table", (0.25, 0.5, 0.75, 1.0))
    assert to_text([region, Region("text", (0, 0, 0.5, 0.125))]) == \
        "<loc0512><loc0256><loc1023><loc0768> table ; <loc0000><loc0000><loc0128><loc0512> text"
    with pytest.raises(ValueError, match="classes"):
        docvlm.tasks.get("layout", classes=["a;b"])


def test_synthetic_targets_hold_the_pages_regions_in_reading_order(task):
    for sample in task.synthesize(3, seed=4):
        parsed = task.parse(sample.target)
        truth = sample.meta["regions"]
        assert parsed.ok and [r.label for r in parsed.value] == [r.label for r in truth]
        for got, want in zip(parsed.value, truth):
            assert got.box == pytest.approx(want.box, abs=HALF_BIN + 1e-12) and want.content
        assert reading_order([r.box for r in truth]) == list(range(len(truth)))
        assert sample.image().size == (896, round(896 * 297 / 210))


@pytest.mark.parametrize("text, problem, kept", [
    ("<loc0100><loc0100><loc0200> table", "3 location tokens", 0),
    ("<loc0100><loc0100><loc0200><loc0200><loc0300> table", "5 location tokens", 0),
    ("<loc0100><loc0100><loc1500><loc0200> table", "beyond 1023", 0),
    ("<loc0300><loc0100><loc0200><loc0200> table", "reversed box", 1),
    ("<loc0100><loc0100><loc0200><loc0200> sofa", "not one of the classes", 1),
    ("<loc0100><loc0100><loc0200><loc0200><seg001><seg002> table", "segmentation tokens", 1),
    ("hello <loc0100><loc0100><loc0200><loc0200> table", "text outside any region", 1),
])
def test_parse_lists_problems_instead_of_raising(task, text, problem, kept):
    parsed = task.parse(text)
    assert any(problem in p for p in parsed.problems), parsed.problems
    assert len(parsed.value) == kept and not parsed.ok
    if "reversed" in problem:
        assert parsed.value[0].box == pytest.approx((100 / 1024, 200 / 1024, 200 / 1024, 300 / 1024))


def test_parse_reads_clean_text_and_empty_pages(task):
    assert task.parse("").ok and task.parse("").value == []
    text = "<loc0010><loc0020><loc0500><loc0990> table ; <loc0600><loc0020><loc0700><loc0400> section-header"
    parsed = task.parse(text)
    assert parsed.ok and [r.label for r in parsed.value] == ["table", "section-header"]
    assert parsed.value[0].box == (20 / 1024, 10 / 1024, 990 / 1024, 500 / 1024)


def _boxes_of(task, target):
    return [(r.label, r.box) for r in task.parse(target).value]


def test_coco_reader_takes_doclaynet_pages_in_reading_order(task, data_dir):
    samples = task.read(data_dir / "layout" / "doclaynet", "val")
    coco = json.loads((data_dir / "layout/doclaynet/COCO/val.json").read_text())
    names = {c["id"]: c["name"].lower() for c in coco["categories"]}
    assert [s.id for s in samples] == ["1", "2"] and all(s.image.is_file() for s in samples)
    for sample, image in zip(samples, coco["images"]):
        want = {(names[a["category_id"]], a["bbox"][0] / image["width"], a["bbox"][1] / image["height"])
                for a in coco["annotations"] if a["image_id"] == image["id"]}
        got = _boxes_of(task, sample.target)
        assert task.parse(sample.target).ok and len(got) == len(want)
        for label, box in got:  # each annotated box, to half a bin
            assert any(label == w[0] and abs(box[0] - w[1]) <= HALF_BIN and abs(box[1] - w[2]) <= HALF_BIN
                       for w in want), (label, box)
        assert reading_order([b for _, b in got]) == list(range(len(got)))
    labels = [label for label, _ in _boxes_of(task, samples[0].target)]
    assert labels[:2] == ["page-header", "title"] and labels[-1] == "page-footer"


def test_coco_reader_maps_classes_and_counts_what_it_drops(data_dir, caplog):
    task = docvlm.tasks.get("layout", classes=["table", "text", "figure"], class_map={"Picture": "figure"})
    with caplog.at_level(logging.WARNING):
        samples = task.read(data_dir / "layout/doclaynet/COCO/val.json", "val")
    assert [sorted({label for label, _ in _boxes_of(task, s.target)}) for s in samples] == \
        [["figure", "table", "text"], ["text"]]
    assert samples[0].meta["dropped"] == {"Page-header": 1, "Title": 1, "Section-header": 1, "Caption": 1,
                                          "Page-footer": 1}
    assert "8 regions of categories that are not classes were dropped from 2 pages" in caplog.text


def test_voc_reader_takes_pubtables_detection_xml(data_dir):
    plain = docvlm.tasks.get("layout").read(data_dir / "layout/pubtables", "val")
    assert len(plain) == 1 and plain[0].image.name == "PMC2740958_4.jpg" and plain[0].image.is_file()
    assert [label for label, _ in _boxes_of(docvlm.tasks.get("layout"), plain[0].target)] == ["table"]
    assert plain[0].meta["dropped"] == {"table rotated": 1}
    (label, box), = _boxes_of(docvlm.tasks.get("layout"), plain[0].target)
    assert box == pytest.approx((85.5 / 850, 120.25 / 1100, 765 / 850, 410.75 / 1100), abs=HALF_BIN)
    mapped = docvlm.tasks.get("layout", class_map={"table rotated": "table"})
    assert len(_boxes_of(mapped, mapped.read(data_dir / "layout/pubtables", "val")[0].target)) == 2


def test_readers_name_the_file_of_a_bad_annotation(task, tmp_path):
    from docvlm.tasks.manifest import ManifestError

    (tmp_path / "val.json").write_text('{"images": [{"id": 1, "file_name": "a.png", "width": 0, "height": 10}], '
                                       '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], '
                                       '"categories": [{"id": 1, "name": "Table"}]}')
    with pytest.raises(ManifestError, match="val.json"):
        task.read(tmp_path, "val")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "p.xml").write_text("<annotation><size>")
    with pytest.raises(ManifestError, match="p.xml"):
        task.read(tmp_path / "x")


@pytest.mark.parametrize("columnar", [False, True])
def test_datasets_rows_with_coco_style_objects(columnar):
    task = docvlm.tasks.get("layout", categories=["Caption", "Table", "Text"])
    objects = [{"bbox": [10, 20, 100, 50], "category": 1}, {"bbox": [10, 100, 180, 40], "category": "Text"},
               {"bbox": [0, 0, 5, 5], "category": 0}]
    if columnar:  # datasets' Sequence of a dict arrives as a dict of lists
        objects = {key: [o[key] for o in objects] for key in objects[0]}
    image = Image.new("RGB", (200, 400), "white")
    record = {"image": lambda: image, "objects": objects, "id": 7}
    sample = task.sample_from_record(record, {"image": "image", "target": "target", "id": "id"}, "hub:train[0]")
    assert sample.id == "7"
    assert _boxes_of(task, sample.target) == [
        ("caption", pytest.approx((0, 0, 5 / 200, 5 / 400), abs=HALF_BIN)),
        ("table", pytest.approx((10 / 200, 20 / 400, 110 / 200, 70 / 400), abs=HALF_BIN)),
        ("text", pytest.approx((10 / 200, 100 / 400, 190 / 200, 140 / 400), abs=HALF_BIN))]


def test_export_writes_regions_in_pixels_and_draws_them(task, tmp_path):
    text = "<loc0256><loc0128><loc0512><loc0640> table ; <loc0600><loc0100><loc0700><loc0900> text"
    page = Image.new("RGB", (400, 800), "white")
    json_path, png_path = task.export(task.parse(text), tmp_path / "p.1", image=page)
    document = json.loads(json_path.read_text())
    assert [r["label"] for r in document["regions"]] == ["table", "text"] and document["size"] == [400, 800]
    assert document["regions"][0]["bbox_px"] == [50.0, 200.0, 250.0, 400.0]
    drawn = np.asarray(Image.open(png_path))
    assert drawn.shape == (800, 400, 3) and (drawn[300, 50] != 255).any() and (drawn[300, 150] == 255).all()
    blank = task.export(task.parse(text), tmp_path / "q")  # what `convert` gets today: no page at hand
    assert json.loads(blank[0].read_text())["regions"][0]["bbox"] == [0.125, 0.25, 0.625, 0.5]


RECTANGLES = [("table", (60, 50, 200, 150)), ("text", (250, 60, 390, 110)), ("molecule", (80, 220, 230, 380)),
              ("music", (280, 200, 380, 390))]


def _ink_box(ink: np.ndarray, box, margin: int = 20):
    x0, y0, x1, y1 = box
    window = ink[max(0, y0 - margin): y1 + margin, max(0, x0 - margin): x1 + margin]
    ys, xs = np.nonzero(window)
    return (xs.min() + max(0, x0 - margin), ys.min() + max(0, y0 - margin),
            xs.max() + 1 + max(0, x0 - margin), ys.max() + 1 + max(0, y0 - margin))


@pytest.mark.parametrize("seed", range(8))
def test_augmentation_moves_each_box_with_its_region_and_keeps_it_tight(seed):
    """Filled rectangles through every transform the task applies (each at p=1): each is still inside its
    box and touches its four edges, to the blur's pixel and half a bin."""
    task = docvlm.tasks.get("layout")
    size = 448
    page = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(page)
    for _, (x0, y0, x1, y1) in RECTANGLES:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=(20, 20, 20))
    target = to_text(Region(label, tuple(v / size for v in box)) for label, box in RECTANGLES)
    pipeline = task.augmentation(Augment(p=1.0, rotate=5.0, scale=0.1))
    assert "GaussianBlur" in [type(t).__name__ for t in pipeline.transforms]
    pipeline.set_random_seed(seed)
    image, moved = task.augment_pair(pipeline, page, target)
    regions = parse(moved, task.classes)[0]
    assert [r.label for r in regions] == [label for label, _ in RECTANGLES] and image.size == (size, size)
    ink = (np.asarray(image) < 128).all(axis=2)
    covered = np.zeros_like(ink)
    tolerance = 1.5 + size * HALF_BIN
    for region in regions:
        box = tuple(round(v * size) for v in region.box)
        assert _ink_box(ink, box) == pytest.approx(box, abs=tolerance), (region.label, box)
        covered[max(0, box[1] - 2): box[3] + 2, max(0, box[0] - 2): box[2] + 2] = True
    assert not (ink & ~covered).any()  # no region's pixels outside the boxes


def test_geometric_augmentation_stays_on_for_layout_and_is_box_safe():
    from docvlm.data import DocDataModule

    module = DocDataModule(docvlm.tasks.get("layout"), augment=Augment(rotate=3, scale=0.1))
    assert (module.augment.rotate, module.augment.scale) == (3, 0.1)  # not turned off as for tables' coords
    affine = next(t for t in docvlm.tasks.get("layout").augmentation(module.augment).transforms
                  if type(t).__name__ == "Affine")
    assert affine.rotate == (0.0, 0.0) or tuple(affine.rotate) == (-0.0, -0.0)


def test_synthetic_pages_hold_the_kinds_that_are_classes():
    doclaynet = docvlm.tasks.get("layout", classes=["table", "text", "title", "picture"])
    labels = {r.label for s in doclaynet.synthesize(4, seed=0) for r in s.meta["regions"]}
    assert labels and labels <= {"table", "text", "title"}
    with pytest.raises(ValueError, match="synthetic_kinds"):
        list(docvlm.tasks.get("layout", classes=["picture"]).synthesize(1))
    with pytest.raises(ValueError, match="synthetic_kinds"):
        list(docvlm.tasks.get("layout", classes=["table"], synthetic_kinds=["music"]).synthesize(1))


@pytest.mark.slow
def test_tiny_layout_fit_logs_f1_and_map(tmp_path):
    from helpers import fit_tiny

    cli = fit_tiny("layout", tmp_path)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert {"val/f1", "val/precision", "val/recall", "val/map", "val/map50", "val/map75"} <= set(metrics)


def test_empty_boxes_of_a_data_set_are_dropped_and_counted(tmp_path):
    (tmp_path / "val.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 200}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 50]},
                        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]}],
        "categories": [{"id": 1, "name": "Table"}]}))
    (sample,) = docvlm.tasks.get("layout").read(tmp_path, "val")
    assert sample.meta["dropped"] == {"Table (empty box)": 1} and len(task_regions(sample.target)) == 1


def task_regions(target):
    return docvlm.tasks.get("layout").parse(target).value


def test_pages_are_stretched_never_padded():
    with pytest.raises(ValueError, match="image_mode must be 'stretch'"):
        docvlm.tasks.get("layout", image_mode="pad")  # padding would move every box off its region
