"""Per-box confidences from the model's token scores: `generate` keeps each generated token's probability (greedy
and beam search), a region's confidence is the product of its label tokens' probabilities (checked against a plain
forward pass of the model), mAP ranks by it as COCOeval does, and `docvlm convert` writes it with boxes in the
page's own pixels and the page drawn."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import docvlm.tasks
from docvlm.converters.layout import Region, to_text
from docvlm.decode import Decoding, Generation, generate, token_pieces
from docvlm.images import fit
from docvlm.inference import Model
from docvlm.items import Collator
from docvlm.model import build_tiny
from docvlm.module import suffix_loss

CLASSES = ("table", "text")
SIZE = 224


@pytest.fixture(scope="module")
def task():
    return docvlm.tasks.get("layout", classes=CLASSES, synthetic_kinds=CLASSES, synthetic_width=300,
                            synthetic_max_regions=2)


@pytest.fixture(scope="module")
def page(task):
    """A synthetic page (300 x 424 px, not square) and its detection text."""
    sample = next(iter(task.synthesize(1, seed=3)))
    return sample.image().convert("RGB"), sample.target


def _item(task, image, target=None, index=0):
    return {"index": index, "id": str(index), "prompt": task.prefix, "target": target, "truncated": False,
            "image": fit(image, SIZE, task.image_mode)}


@pytest.fixture(scope="module")
def model(task, page):
    """A tiny model (224 px) that has learnt to write the page's detection text (a few hundred ms of training)."""
    torch.manual_seed(0)
    net, processor = build_tiny(SIZE, 28)
    processor.tokenizer.padding_side = "left"
    image, target = page
    batch = Collator(processor, with_targets=True)([_item(task, image, target)])
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    prompt = Collator(processor, with_targets=False)([_item(task, image)])
    for step in range(300):
        net.train()
        loss = suffix_loss(net, batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 79 and step % 20 == 19:  # 80 steps learn it (checked: a few seconds on a CPU)
            net.eval()
            if generate(net, processor, prompt, Decoding(), 40)[0].text == target:
                break
    net.eval()
    return Model(net, processor, task, torch.device("cpu"))


def _prompts(model, page):
    """The learnt page and a blank one (another output length: left padding in the batch)."""
    blank = Image.new("RGB", page[0].size, "white")
    items = [_item(model.task, page[0]), _item(model.task, blank, index=1)]
    return Collator(model.processor, with_targets=False)(items)


def _forward_probabilities(model, batch, row: int, ids: list[int]) -> np.ndarray:
    """The probability of each of `ids` after the prompt of `row` and the ids before it: softmax of the logits of
    one plain forward pass over the unpadded prompt and the ids (prefix bidirectional, the output causal)."""
    keep = batch["attention_mask"][row].bool()
    prompt = batch["input_ids"][row][keep]
    input_ids = torch.cat([prompt, torch.tensor(ids[:-1], dtype=prompt.dtype)])[None]
    token_type_ids = torch.cat([torch.zeros(len(prompt), dtype=torch.long), torch.ones(len(ids) - 1, dtype=torch.long)])
    with torch.no_grad():
        logits = model.net(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                           token_type_ids=token_type_ids[None], pixel_values=batch["pixel_values"][row:row + 1]).logits
    steps = torch.softmax(logits[0, len(prompt) - 1:].float(), dim=-1)
    return steps[torch.arange(len(ids)), torch.tensor(ids)].numpy()


def _label_products(tokens: list[str], probabilities) -> list[float]:
    """By hand: after each four `<locNNNN>` tokens, the product of the probabilities of the label's tokens (not
    the space `▁` before it, not the ` ; ` after it)."""
    products, n = [], 0
    while n < len(tokens):
        if all(t.startswith("<loc") for t in tokens[n:n + 4]) and len(tokens[n:n + 4]) == 4:
            n += 4
            label = []
            while n < len(tokens) and not tokens[n].startswith("<loc") and tokens[n] != ";":
                if tokens[n] != "▁":
                    label.append(probabilities[n])
                n += 1
            products.append(math.prod(label))
        else:
            n += 1
    return products


def test_greedy_confidences_are_the_label_token_probabilities_of_a_plain_forward_pass(model, page):
    batch = _prompts(model, page)
    generations = generate(model.net, model.processor, batch, Decoding(), 80, token_scores=True)
    assert generations[0].text == page[1]  # the model learnt the page
    tokenizer = model.processor.tokenizer
    for row, generation in enumerate(generations):
        ids = tokenizer(generation.text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == generation.text and len(ids) == len(generation.probabilities)
        expected = _forward_probabilities(model, batch, row, ids)
        assert np.allclose(generation.probabilities, expected, rtol=1e-4, atol=1e-6), row
        assert "".join(generation.pieces) == generation.text
    parsed = model.task.parse_generation(generations[0])
    regions = parsed.value
    ids = tokenizer(page[1], add_special_tokens=False)["input_ids"]
    hand = _label_products(tokenizer.convert_ids_to_tokens(ids), _forward_probabilities(model, batch, 0, ids))
    assert regions and parsed.ok and len(hand) == len(regions)
    assert [r.score for r in regions] == pytest.approx(hand, rel=1e-4)
    assert all(0 < r.score <= 1 for r in regions)
    assert model.task.parse(page[1]).value == [Region(r.label, r.box, None) for r in regions]  # text alone: no score


def test_without_token_scores_decoding_is_unchanged_and_keeps_no_scores(model, page):
    batch = _prompts(model, page)
    plain = generate(model.net, model.processor, batch, Decoding(), 80)
    scored = generate(model.net, model.processor, batch, Decoding(), 80, token_scores=True)
    assert [g.text for g in plain] == [g.text for g in scored]
    assert all(g.pieces is None and g.probabilities is None for g in plain)
    assert all(r.score is None for r in model.task.parse_generation(plain[0]).value)


def test_beam_search_gives_the_probabilities_transformers_computes(model, page):
    batch = _prompts(model, page)
    generations = generate(model.net, model.processor, batch, Decoding(num_beams=3), 80, token_scores=True)
    with torch.no_grad():  # transformers' own account: every step's full scores, and its transition scores
        output = model.net.generate(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                                             "pixel_values")},
                                    max_new_tokens=80, num_beams=3, do_sample=False, eos_token_id=1, pad_token_id=0,
                                    output_scores=True, return_dict_in_generate=True)
        reference = model.net.compute_transition_scores(output.sequences, output.scores, output.beam_indices).exp()
    texts = model.processor.tokenizer.batch_decode(output.sequences[:, batch["input_ids"].shape[1]:],
                                                   skip_special_tokens=True)
    assert [g.text for g in generations] == texts and generations[0].text == page[1]
    for generation, expected in zip(generations, reference.numpy()):
        assert generation.probabilities == pytest.approx(expected[:len(generation.probabilities)].tolist(), rel=1e-5)
        assert all(0 < p <= 1 for p in generation.probabilities)
    regions = model([page[0]], num_beams=3)[0].value  # the Python API: each region with its confidence
    assert regions and all(0 < r.score <= 1 for r in regions)


def test_model_call_gives_layout_regions_their_confidence(model, page):
    (parsed,) = model([page[0]])
    assert parsed.ok and [r.label for r in parsed.value] == [r.label for r in model.task.parse(page[1]).value]
    assert all(isinstance(r.score, float) and 0 < r.score <= 1 for r in parsed.value)


def test_pieces_join_to_the_text_when_characters_span_byte_tokens(model):
    tokenizer = model.processor.tokenizer
    text = "<loc0012><loc0100><loc0500><loc0900> tablé € ; x"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tokenizer, ids, text)
    assert "".join(pieces) == text and len(pieces) == len(ids) and "é" in pieces and "€" in pieces


def test_segmentation_tokens_and_stray_text_keep_the_label_spans_right():
    task = docvlm.tasks.get("layout", classes=CLASSES)
    pieces = ["<loc0100>", "<loc0100>", "<loc0500>", "<loc0500>", "<seg012>", " ta", "ble", " ;", " junk", " ;",
              "<loc0600>", "<loc0100>", "<loc0900>", " sofa", " ;", "<loc0001>", "<loc0001>", "<loc0900>", "<loc0900>",
              " text"]
    probabilities = [0.9] * 5 + [0.5, 0.25] + [0.9] * 12 + [0.75]
    generation = Generation("".join(pieces), pieces=pieces, probabilities=probabilities)
    parsed = task.parse_generation(generation)
    assert [r.label for r in parsed.value] == ["table", "text"]
    assert [r.score for r in parsed.value] == pytest.approx([0.125, 0.75])
    assert any("segmentation" in p for p in parsed.problems) and any("junk" in p for p in parsed.problems)
    mismatched = Generation(generation.text, pieces=pieces[:-1], probabilities=probabilities[:-1])
    assert [r.score for r in task.parse_generation(mismatched).value] == [None, None]  # pieces not the text's


PIECE = st.one_of(st.integers(0, 1100).map(lambda v: f"<loc{v:04d}>"),
                  st.sampled_from([" table", " text", " ; ", ";", " sofa", "<seg012>", "<loc", ">", " ", ""]),
                  st.text(max_size=6))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(PIECE, st.floats(0, 1)), max_size=30), st.booleans())
def test_parse_generation_never_raises(tokens, aligned):
    task = docvlm.tasks.get("layout", classes=CLASSES)
    pieces, probabilities = [p for p, _ in tokens], [q for _, q in tokens]
    text = "".join(pieces) + ("" if aligned else "<loc0001>")
    generation = Generation(text, pieces=pieces, probabilities=probabilities)
    assert all(r.score is None or 0 <= r.score <= 1 for r in task.parse_generation(generation).value)
    scores = task.score_with([text], [text], [task.confidences(generation)])
    assert all(0.0 <= v <= 1.0 for v in scores.values())


# ---- mAP with confidences ------------------------------------------------------------------------------------------
def _cocoeval(predicted_pages, true_pages, classes):
    """COCOeval's stats[0:3] on 1000 x 1000 pixel boxes, each detection with its own score."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {c: k + 1 for k, c in enumerate(classes)}

    def xywh(region):
        x0, y0, x1, y1 = (v * 1000 for v in region.box)
        return [x0, y0, x1 - x0, y1 - y0]

    gt = COCO()
    gt.dataset = {"images": [{"id": i + 1} for i in range(len(true_pages))],
                  "categories": [{"id": k, "name": c} for c, k in ids.items()],
                  "annotations": [{"id": n + 1, "image_id": i, "category_id": ids[r.label], "bbox": xywh(r),
                                   "area": xywh(r)[2] * xywh(r)[3], "iscrowd": 0}
                                  for n, (i, r) in enumerate((i + 1, r) for i, page in enumerate(true_pages)
                                                             for r in page)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        detections = [{"image_id": i + 1, "category_id": ids[r.label], "bbox": xywh(r), "score": r.score}
                      for i, page in enumerate(predicted_pages) for r in page]
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return tuple(evaluation.stats[:3])


@pytest.mark.parametrize("kind, seed", [(k, s) for k in ("jittered", "duplicates", "false positives", "mixed")
                                        for s in range(3)])
def test_map_with_confidences_equals_cocoeval_fed_the_same_scores(kind, seed):
    from test_layout_metrics import CLASSES as METRIC_CLASSES
    from test_layout_metrics import page_set

    task = docvlm.tasks.get("layout", classes=list(METRIC_CLASSES))
    predictions, references = page_set(seed, kind)
    rng = np.random.default_rng(seed)
    confidences = [[float(c) for c in rng.uniform(0.01, 1.0, len(task.parse(p).value))] for p in predictions]
    scores = task.score_with(predictions, references, confidences)
    predicted = [[Region(r.label, r.box, c) for r, c in zip(task.parse(p).value, cs)]
                 for p, cs in zip(predictions, confidences)]
    true = [task.parse(r).value for r in references]
    assert (scores["map"], scores["map50"], scores["map75"]) == pytest.approx(
        _cocoeval(predicted, true, METRIC_CLASSES), abs=1e-9)
    unscored = task.score(predictions, references)
    assert {k: scores[k] for k in ("f1", "precision", "recall")} == {k: unscored[k] for k in ("f1", "precision",
                                                                                                "recall")}
    assert scores["scored_boxes"] == 1.0 and "scored_boxes" not in unscored


def test_confidences_rank_the_boxes_that_text_alone_ranks_by_written_order():
    task = docvlm.tasks.get("layout", classes=CLASSES)
    true = [to_text([Region("table", (0.1, 0.1, 0.5, 0.5))])]
    written = ["<loc0800><loc0800><loc0900><loc0900> table ; <loc0102><loc0102><loc0512><loc0512> table"]
    assert task.score(written, true)["map50"] == pytest.approx(0.5, abs=0.01)  # the miss ranks first
    assert task.score_with(written, true, [[0.2, 0.9]])["map50"] == pytest.approx(1.0)  # the hit is surer
    with pytest.raises(ValueError, match="prediction 1: 1 confidences for its 2 regions"):
        task.score_with(written, true, [[0.2]])


# ---- convert and evaluate ------------------------------------------------------------------------------------------
def test_convert_writes_boxes_in_the_page_pixels_with_scores_and_draws_the_page(model, page, tmp_path):
    from docvlm.convert import convert_with

    image, target = page
    image.save(tmp_path / "page.png")
    assert convert_with(model, [tmp_path / "page.png"], tmp_path / "out", num_workers=0) == 0
    document = json.loads((tmp_path / "out" / "page.json").read_text())
    width, height = image.size
    assert document["size"] == [width, height] and document["text"] == target
    true = model.task.parse(target).value
    assert [r["label"] for r in document["regions"]] == [r.label for r in true]
    for row, region in zip(document["regions"], true):
        x0, y0, x1, y1 = region.box
        assert row["bbox_px"] == pytest.approx([x0 * width, y0 * height, x1 * width, y1 * height], abs=0.01)
        assert 0 < row["score"] <= 1
    drawn = np.asarray(Image.open(tmp_path / "out" / "page.png").convert("RGB"))
    original = np.asarray(image)
    assert drawn.shape == original.shape
    same = (drawn == original).all(-1)
    assert same.mean() > 0.9 and (original[same] < 128).any()  # the page itself, with its ink, not a blank square
    assert not same.all()  # and its boxes drawn on it
    row = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["error"] is None and row["problems"] == []


HOSTILE = ["<loc0100><loc0100><loc0500> table ; <loc0100><loc0100><loc0500><loc0500> sofa ; <loc2000><loc0001>"
           "<loc0002><loc0003> text ; <loc0900><loc0900><loc0100><loc0100> text <seg001> ; stray ;", "", "<loc0001>"]


def test_hostile_outputs_still_convert(model, page, tmp_path, monkeypatch):
    import docvlm.decode
    from docvlm.convert import convert_with

    def hostile(net, processor, batch, decoding, max_new_tokens, token_scores=False):
        assert token_scores  # layout asks for them
        texts = [HOSTILE[i % len(HOSTILE)] for i in batch["index"].tolist()]
        return [Generation(t, pieces=[t[i:i + 3] for i in range(0, len(t), 3)], probabilities=[0.5] * (-(-len(t) // 3)))
                for t in texts]

    monkeypatch.setattr(docvlm.decode, "generate", hostile)
    for n in range(3):
        page[0].save(tmp_path / f"p{n}.png")
    assert convert_with(model, sorted(tmp_path.glob("p*.png")), tmp_path / "out", num_workers=0) == 0
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert all(r["error"] is None for r in rows.values()) and rows["p0"]["problems"]
    regions = json.loads((tmp_path / "out" / "p0.json").read_text())["regions"]
    assert [r["label"] for r in regions] == ["sofa", "text"]  # the broken groups dropped, the unknown label kept
    assert all(0 < r["score"] <= 1 for r in regions)
    assert Image.open(tmp_path / "out" / "p1.png").size == page[0].size


def test_a_random_layout_model_converts_a_page(page, tmp_path):
    """An untrained model writes loc tokens in runs and bytes that are no characters: a real hostile output."""
    from docvlm.convert import convert_with

    net, processor = build_tiny(SIZE, 28, seed=1)
    processor.tokenizer.padding_side = "left"
    model = Model(net.eval(), processor, docvlm.tasks.get("layout", classes=CLASSES), torch.device("cpu"))
    page[0].save(tmp_path / "page.png")
    assert convert_with(model, [tmp_path / "page.png"], tmp_path / "out", num_workers=0, max_new_tokens=40) == 0
    assert Image.open(tmp_path / "out" / "page.png").size == page[0].size
    assert json.loads((tmp_path / "out" / "page.json").read_text())["size"] == list(page[0].size)


def test_evaluate_keeps_confidences_in_its_predictions_and_ranks_by_them(model, page, tmp_path):
    import argparse

    from docvlm.evaluate import decode, read_predictions, score_rows

    page[0].save(tmp_path / "page.png")
    (tmp_path / "set.jsonl").write_text(json.dumps({"image": "page.png", "target": page[1]}) + "\n")
    args = argparse.Namespace(data=str(tmp_path / "set.jsonl"), split=None, synthetic=None, limit=None, batch_size=2,
                              num_workers=0, num_beams=None, max_new_tokens=None, repetition_guard=None,
                              out=tmp_path / "report")
    rows, _ = decode(model, args)
    regions = model.task.parse(page[1]).value
    assert len(rows[0]["confidences"]) == len(regions) and all(0 < c <= 1 for c in rows[0]["confidences"])
    metrics = score_rows(model.task, rows)
    assert metrics["f1"] == 1.0 and metrics["scored_boxes"] == 1.0 and rows[0]["score"]["scored_boxes"] == 1.0
    again, _ = read_predictions(tmp_path / "report" / "predictions.jsonl", None)
    assert again[0]["confidences"] == rows[0]["confidences"] and score_rows(model.task, again) == metrics


def test_a_predictions_file_with_bad_confidences_is_refused_by_line(tmp_path):
    from docvlm.evaluate import PredictionsError, read_predictions

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "prediction": "", "target": "", "confidences": [0.5, 2]}) + "\n")
    with pytest.raises(PredictionsError, match=r"p.jsonl:1: 'confidences' must be a list of numbers in \[0, 1\]"):
        read_predictions(path, None)


def test_validation_keeps_each_region_confidence_beside_its_prediction(model, page, monkeypatch):
    from docvlm.model import ModelSpec
    from docvlm.module import DocVLM

    module = DocVLM(ModelSpec(name_or_path="tiny", image_size=SIZE, patch_size=28), task=model.task)
    module.net, module.processor = model.net, model.processor
    monkeypatch.setattr(DocVLM, "_image_path", lambda self, split, index, part=0: None)  # no trainer here
    module._collect(_prompts(model, page), "val")
    learnt = module._outputs[0]
    assert learnt["prediction"] == page[1]
    assert learnt["confidences"] == pytest.approx([r.score for r in model([page[0]])[0].value])
    rows = module._outputs
    scores = model.task.score_with([r["prediction"] for r in rows], [page[1]] * 2, [r.get("confidences") for r in rows])
    assert scores["scored_boxes"] == 1.0


def test_docvlm_evaluate_runs_on_a_layout_model(tmp_path):
    from docvlm.evaluate import main

    out = tmp_path / "report"
    assert main(["--model", "tiny", "--task", "layout", "--task-option", "synthetic_width=224", "--synthetic", "2",
                 "--max-new-tokens", "12", "--num-workers", "0", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {"f1", "map"} <= set(report["metrics"]) and len(report["rows"]) == 2
    assert "token scores" in (out / "report.md").read_text()  # how mAP ranked the boxes is said
