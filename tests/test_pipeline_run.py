"""The page pipeline on composed pages with tiny models: every region routed once, each model loaded once,
crops of many pages decoded together, one model at a time giving the same results, PDFs and their text layers."""

import pytest

import docvlm
import docvlm.decode
import docvlm.inference
from docvlm.pipeline.run import PageInput
from docvlm.pipeline.spec import PipelineSpecError, spec_from_dict
from pipeline_helpers import composed_page, image_pdf, text_pdf

ROUTES = {"table": {"model": "tiny", "task": "tables"}, "text": {"model": "tiny", "task": "text"},
          "title": {"model": "tiny", "task": "text"}}
FAST = {"max_new_tokens": 3, "batch_size": 64}


@pytest.fixture(scope="module")
def pages():
    return [composed_page(seed) for seed in (3, 4, 5)]


@pytest.fixture
def loads(monkeypatch):
    """The models whose weights are read, in order."""
    loaded, real = [], docvlm.inference.load_weights

    def counting(source, dtype="float32"):
        loaded.append(str(source))
        return real(source, dtype)

    monkeypatch.setattr(docvlm.inference, "load_weights", counting)
    return loaded


@pytest.fixture
def batches(monkeypatch):
    """The prompts of each `generate` call."""
    calls, real = [], docvlm.decode.generate

    def recording(model, processor, batch, *args, **kwargs):
        calls.append(processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True))
        return real(model, processor, batch, *args, **kwargs)

    monkeypatch.setattr(docvlm.decode, "generate", recording)
    return calls


def pipeline(routes=ROUTES, layout=None, **options):
    spec = spec_from_dict({"routes": routes, **({"layout": layout} if layout else {})}, "test.yaml")
    return docvlm.load_pipeline(spec, **{**FAST, **options})


def test_every_region_is_routed_once_in_reading_order_and_each_model_loaded_once(pages, loads, batches):
    routes = {"table": ROUTES["table"], "text": ROUTES["text"]}  # titles have no route
    results = pipeline(routes)([image for image, _ in pages], regions=[regions for _, regions in pages])
    assert loads == ["tiny"]  # one net for both routes' tasks
    for (image, regions), result in zip(pages, results):
        assert result.error is None and (result.width, result.height, result.unit) == (*image.size, "px")
        assert [(r.label, r.box) for r in result.regions] == [(r.label, r.box) for r in regions]  # composed in order
        for region in result.regions:
            if region.label in routes:
                assert region.source == "model" and region.task == routes[region.label]["task"]
                assert region.text is not None
            else:
                assert (region.source, region.task, region.text, region.value) == (None, None, None, None)
    # crops of all pages of the window in one batch per (model, task): one for tables, one for text
    kinds = {r.label for _, regions in pages for r in regions if r.label in routes}
    assert len(batches) == len(kinds)
    assert sorted(len(b) for b in batches) == sorted(
        sum(r.label == kind for _, regions in pages for r in regions) for kind in kinds)


def test_one_model_at_a_time_gives_the_same_results(pages, loads, tmp_path):
    from docvlm.model import build_tiny

    net, processor = build_tiny(seed=1)  # a second model, in a folder
    net.save_pretrained(tmp_path / "other")
    processor.save_pretrained(tmp_path / "other")
    routes = {**ROUTES, "table": {"model": str(tmp_path / "other"), "task": "tables"}}
    images, given = [image for image, _ in pages], [regions for _, regions in pages]
    together = pipeline(routes, one_model_at_a_time=False)(images, regions=given)
    assert sorted(loads) == sorted([str(tmp_path / "other"), "tiny"])
    loads.clear()
    alone = pipeline(routes, one_model_at_a_time=True, window=2)
    assert alone([image for image, _ in pages], regions=given) == together
    assert loads == [str(tmp_path / "other"), "tiny"] * 2  # each loaded in turn, once per window of 2 pages
    assert len(alone._nets) == 1


def test_the_layout_model_finds_the_regions_of_pages_without_given_ones(pages, loads, monkeypatch):
    from docvlm.converters.layout import Region

    result = pipeline(layout="tiny")([pages[0][0]])[0]
    assert loads == ["tiny"] and result.error is None  # the layout model shares the routes' net
    assert all(p.startswith("layout: ") for p in result.problems)  # a random model's output, its problems named

    def found(self, images, **options):  # a layout model that finds a table and a title
        from docvlm.tasks.base import Parsed

        return [Parsed("", [Region("table", (0.5, 0.5, 0.9, 0.9), 0.8), Region("title", (0.1, 0.1, 0.9, 0.2), 0.6)])
                for _ in images]

    monkeypatch.setattr(docvlm.inference.Model, "__call__", found)
    result = pipeline(layout="tiny")([pages[0][0]])[0]
    assert [(r.label, r.score) for r in result.regions] == [("title", 0.6), ("table", 0.8)]  # reading order


def test_a_page_without_regions_or_layout_model_fails_alone(pages):
    results = pipeline()([image for image, _ in pages[:2]], regions=[pages[0][1], None])
    assert results[0].error is None
    assert "no regions given for this page, and test.yaml names no layout model" in results[1].error


def test_a_model_that_cannot_be_used_is_named_with_its_route_before_any_work(tmp_path):
    with pytest.raises(PipelineSpecError, match=r"test.yaml: routes: table: .*missing.*no such model folder"):
        pipeline({"table": {"model": str(tmp_path / "missing")}})
    with pytest.raises(PipelineSpecError, match=r"test.yaml: routes: text: .*does not name its task"):
        pipeline({"text": {"model": "tiny"}})


def test_a_two_page_pdf_renders_each_region_again(pages, tmp_path, batches):
    pdf = image_pdf(tmp_path / "two.pdf", [pages[0][0], pages[1][0]])
    from docvlm.pages import render_pdf_page

    inputs = [PageInput(str(pdf), n, render_pdf_page(pdf, n, 72), pdf=pdf, regions=pages[n - 1][1]) for n in (1, 2)]
    results = pipeline(dpi=72).run(inputs)
    for (image, regions), result in zip(pages, results):
        assert (result.width, result.height, result.unit) == (*image.size, "pt")
        assert [r.label for r in result.regions] == [r.label for r in regions]
        assert all(r.source == "model" for r in result.regions)  # no text layer: every text region decoded


def test_text_regions_of_a_pdf_with_a_text_layer_take_its_text_without_a_model(tmp_path, loads):
    from docvlm.converters.layout import Region

    pdf = text_pdf(tmp_path / "t.pdf", [(300, 400, [("Results", 10, 10, 20), ("All tables agree.", 10, 100, 12)])])
    regions = [Region("title", (0, 0, 0.8, 0.1)), Region("text", (0, 0.2, 0.9, 0.3)), Region("caption", (0, 0.5, 1, 1))]
    from docvlm.pages import render_pdf_page

    result = pipeline().run([PageInput(str(pdf), 1, render_pdf_page(pdf, 1, 72), pdf=pdf, regions=regions)])[0]
    assert [(r.label, r.source, r.text) for r in result.regions] == [
        ("title", "text-layer", "Results"), ("text", "text-layer", "All tables agree."), ("caption", None, None)]
    assert result.regions[1].task == "text" and result.regions[1].value == "All tables agree."
    assert loads == []  # no crop needed a model


def test_models_whose_weights_exceed_the_free_memory_are_loaded_one_at_a_time(tmp_path, loads):
    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text("{}", encoding="utf-8")
    with open(big / "model.safetensors", "wb") as f:
        f.truncate(1 << 42)  # 4 TiB of weights, sparse
    assert pipeline({**ROUTES, "table": {"model": str(big), "task": "tables"}}).one_model_at_a_time
    assert not pipeline().one_model_at_a_time  # tiny models: together
    assert loads == []  # decided from the files, no weights read


def test_a_mixture_model_serves_its_tasks_from_one_net(pages, loads, tmp_path):
    import json

    from docvlm.model import build_tiny

    net, processor = build_tiny()
    folder = tmp_path / "mix"
    net.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "docvlm.json").write_text(json.dumps({"tasks": [{"task": "tables", "options": {}},
                                                              {"task": "text", "options": {}}]}), encoding="utf-8")
    routes = {"table": {"model": str(folder), "task": "tables"}, "text": {"model": str(folder), "task": "text"}}
    result = pipeline(routes)([pages[2][0]], regions=[pages[2][1]])[0]
    assert loads == [str(folder)]
    assert {(r.label, r.task) for r in result.regions} == {("table", "tables"), ("text", "text")}
    with pytest.raises(PipelineSpecError, match=r"routes: table: a mixture model of tasks tables, text"):
        pipeline({"table": {"model": str(folder)}})


def test_a_crop_that_fails_to_decode_costs_only_its_region(pages, monkeypatch, tmp_path):
    from docvlm.inference import Model

    real = Model.__call__
    image, regions = pages[0]
    table = next(r for r in regions if r.label == "table")

    def failing(self, images, **options):  # the table's crop fails, in a batch or alone
        if self.task.name == "tables":
            raise RuntimeError("out of memory")
        return real(self, images, **options)

    monkeypatch.setattr(Model, "__call__", failing)
    image.save(tmp_path / "page.png")
    result = pipeline()([tmp_path / "page.png"], regions=[regions])[0]  # a path, loaded as an image
    assert result.error is None and result.input == str(tmp_path / "page.png")
    failed = [r for r in result.regions if r.problems == ["decoding failed (RuntimeError: out of memory)"]]
    assert [r.box for r in failed] == [table.box] and failed[0].text is None
    assert all(r.text is not None for r in result.regions if r.label == "text")


def test_a_sideways_page_gives_the_result_of_the_upright_one(pages, monkeypatch):
    import dataclasses

    import numpy as np

    from docvlm.inference import Model
    from docvlm.tasks.base import Parsed

    image, regions = pages[2]  # a page with enough lines of text to be turned (sparser pages are left as they are)
    real, seen = Model.__call__, []

    def layout(self, images, **options):  # the true regions, for the pixels of the upright page only
        if self.task.name != "layout":
            return real(self, images, **options)
        seen.extend(np.array_equal(np.asarray(i), np.asarray(image)) for i in images)
        return [Parsed("", list(regions) if seen[-1] else []) for _ in images]

    monkeypatch.setattr(Model, "__call__", layout)
    upright, sideways, upside_down = pipeline(layout="tiny")([image, image.rotate(90, expand=True), image.rotate(180)])
    assert seen == [True, True, True]  # the layout model saw each page turned upright, pixel for pixel
    assert (sideways.rotation, upside_down.rotation) == (90, 180) and upright.regions
    assert dataclasses.replace(sideways, input=upright.input, rotation=0) == upright
    assert dataclasses.replace(upside_down, input=upright.input, rotation=0) == upright
