"""Page evaluation: true regions as predictions score perfectly; dropped, jittered, relabelled and extra regions
give the numbers a hand computation gives; each class's metrics over matched regions are its task's `score`
of those crops alone; the reading-order distance is the edit distance of matched indices; any region lists
score without raising."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import docvlm.tasks
from docvlm.converters.layout import Region
from docvlm.converters.page_synth import random_page
from docvlm.pipeline.results import RegionResult
from docvlm.pipeline.scoring import reading_order_ned, score_page, score_pages

ROUTES = {"table": "tables", "molecule": "molecules", "music": "music", "text": "text", "caption": "text",
          "title": "text"}


def true_regions(seed: int) -> list[Region]:
    """The regions of a composed page as fractions of its size, with their contents, in reading order."""
    page = random_page(random.Random(seed), noise=False)
    width, height = page.size
    return [Region(r.label, (r.box[0] / width, r.box[1] / height, r.box[2] / width, r.box[3] / height),
                   content=r.content) for r in page.regions]


@pytest.fixture(scope="module")
def pages():
    return [true_regions(seed) for seed in range(6)]


def test_true_regions_with_their_contents_score_perfectly(pages):
    metrics, rows = score_pages(pages, pages, ROUTES)
    labels = {r.label for page in pages for r in page}
    assert {"table", "molecule", "music", "text"} <= labels  # the pages hold every routed domain
    for key in ("precision", "recall", "f1", "map", "map50", "map75"):
        assert metrics[f"layout/{key}"] == pytest.approx(1.0), key
    for label, name in ROUTES.items():
        if label not in labels:
            continue
        task = docvlm.tasks.get(name)
        for metric in task.metrics:
            if metric.perfect is not None and f"{label}/{metric.name}" in metrics:
                assert metrics[f"{label}/{metric.name}"] == pytest.approx(metric.perfect), (label, metric.name)
        assert f"{label}/{task.main_metric}" in metrics
    assert metrics["reading_order/ned"] == 0.0 and metrics["reading_order/pages"] > 0
    assert all(not row.missed and not row.spurious for row in rows)
    assert all(i == j and iou == 1.0 for row in rows for i, j, iou in row.matched)


def test_dropped_jittered_relabelled_and_extra_regions_give_the_hand_computed_numbers():
    table_html = "<table><tr><td>1</td><td>2</td></tr></table>"
    true = [Region("title", (0.1, 0.02, 0.9, 0.08), content="Title"),
            Region("text", (0.1, 0.1, 0.9, 0.2), content="alpha"),
            Region("text", (0.1, 0.3, 0.9, 0.4), content="beta"),
            Region("text", (0.1, 0.5, 0.9, 0.6), content="gamma"),
            Region("table", (0.1, 0.65, 0.9, 0.75), content=table_html)]
    predicted = [Region("text", (0.1, 0.33, 0.9, 0.43), content="beta"),  # jittered: IoU 0.07 / 0.13 = 0.54
                 Region("text", (0.1, 0.1, 0.9, 0.2), content="alphx"),  # one character wrong
                 Region("text", (0.1, 0.02, 0.9, 0.08), content="Title"),  # the title, relabelled: spurious
                 Region("text", (0.1, 0.5, 0.9, 0.6), content="gamma"),
                 Region("text", (0.1, 0.8, 0.9, 0.9), content="zzz")]  # extra; the table is dropped
    metrics, (row,) = score_pages([predicted], [true], {"text": "text", "title": "text", "table": "tables"})

    assert row.matched == [(0, 2, pytest.approx(0.07 / 0.13)), (1, 1, 1.0), (3, 3, 1.0)]
    assert row.missed == [0, 4] and row.spurious == [2, 4]
    # layout: 3 matched of 5 predicted and 5 true; text: 3 matched of 5 predicted and 3 true
    assert metrics["layout/precision"] == metrics["layout/recall"] == metrics["layout/f1"] == pytest.approx(0.6)
    assert metrics["layout/f1_text"] == pytest.approx(6 / 8)
    assert metrics["layout/f1_title"] == metrics["layout/f1_table"] == 0.0
    # COCO AP of `text`, 101 recall points, every score 1.0 (ranked as written): at IoU 0.5 the ranks are
    # tp, tp, fp, tp, fp (precision 1 up to recall 2/3: 67 points; then 3/4: 34 points); at 0.55..0.95 the
    # jittered box no longer matches: fp, tp, fp, tp, fp (precision 1/2 up to recall 2/3: 67 points)
    ap50, ap_high = (67 + 34 * 0.75) / 101, 67 * 0.5 / 101
    assert metrics["layout/ap_text"] == pytest.approx((ap50 + 9 * ap_high) / 10)
    assert metrics["layout/map"] == pytest.approx((ap50 + 9 * ap_high) / 10 / 3)  # title and table: AP 0
    assert metrics["layout/map50"] == pytest.approx(ap50 / 3)
    # text: 1 edit over 5 + 4 + 5 characters; title and table missed, scored as empty predictions
    assert metrics["text/cer"] == pytest.approx(1 / 14) and metrics["text/exact_match"] == pytest.approx(2 / 3)
    assert metrics["title/cer"] == 1.0 and metrics["title/exact_match"] == 0.0
    assert metrics["table/teds"] == 0.0 and metrics["table/unparseable"] == 1.0
    # reading order: true indices 2, 1, 3 in predicted order against 1, 2, 3: two substitutions over 3
    assert row.reading_order_ned == pytest.approx(2 / 3) and metrics["reading_order/ned"] == pytest.approx(2 / 3)


def test_each_class_scores_as_its_crops_scored_alone(pages):
    """Predictions at the true boxes with other contents (each region's content from another page's region of
    the same label, or none): each routed class's metrics are its task's `score` of those crops alone."""
    rng = random.Random(0)
    pool = {}
    for page in pages:
        for region in page:
            pool.setdefault(region.label, []).append(region.content)
    predicted = [[RegionResult(r.label, r.box, text=rng.choice([*pool[r.label], None])) for r in page]
                 for page in pages]
    metrics, _ = score_pages(predicted, pages, ROUTES)
    for label, name in ROUTES.items():
        crops = [(p.text or "", t.content) for pp, tp in zip(predicted, pages) for p, t in zip(pp, tp)
                 if t.label == label]
        if not crops:
            continue
        alone = docvlm.tasks.get(name).score([p for p, _ in crops], [t for _, t in crops])
        assert {k: metrics[f"{label}/{k}"] for k in alone} == pytest.approx(alone), label


def test_routes_take_task_objects_with_their_options():
    """An OTSL route scores OTSL texts (the same texts read as HTML hold no table)."""
    otsl = "<fcel>1<fcel>2<nl>"
    true = [[Region("table", (0.1, 0.1, 0.5, 0.5), content=otsl)]]
    predicted = [[RegionResult("table", (0.1, 0.1, 0.5, 0.5), text=otsl)]]
    metrics, _ = score_pages(predicted, true, {"table": docvlm.tasks.get("tables", target_format="otsl")})
    assert metrics["table/teds"] == 1.0 and metrics["table/unparseable"] == 0.0
    metrics, _ = score_pages(predicted, true, {"table": "tables"})
    assert metrics["table/unparseable"] == 1.0


def test_reading_order_distance():
    assert reading_order_ned([0, 1, 2, 3]) == 0.0
    assert reading_order_ned([2, 0, 1, 3]) == 0.5  # one moved: a deletion and an insertion
    assert reading_order_ned([3, 2, 1, 0]) == 1.0
    assert reading_order_ned([5, 9]) == 0.0  # indices need not be consecutive (the unmatched are left out)
    assert reading_order_ned([]) == 0.0
    one = [Region("text", (0, 0, 1, 0.5))]
    assert score_page(one, one).reading_order_ned is None  # one match: no order to get wrong


def test_page_counts_must_agree():
    with pytest.raises(ValueError, match="2 predicted pages for 1 true pages"):
        score_pages([[], []], [[]], {})


def test_empty_pages_score_as_nothing_to_find():
    metrics, rows = score_pages([[], []], [[], []], {"text": "text"})
    assert metrics["layout/f1"] == 1.0 and metrics["layout/map"] == 1.0 and metrics["reading_order/ned"] == 0.0
    assert "text/cer" not in metrics and len(rows) == 2


LABELS = st.sampled_from(["text", "table", "title", "picture", "", "ü ; <loc0001>"])
COORD = st.floats(-0.5, 1.5, allow_nan=False)
REGION = st.builds(lambda cls, label, box, score, text: cls(label, box, score, text) if cls is Region
                   else cls(label, box, score=score, text=text),
                   st.sampled_from([Region, RegionResult]), LABELS, st.tuples(COORD, COORD, COORD, COORD),
                   st.one_of(st.none(), st.floats(0, 1)), st.one_of(st.none(), st.text(max_size=30),
                                                                   st.just("<table><tr><td>1</td></tr></table>")))
PAGES = st.lists(st.tuples(st.lists(REGION, max_size=5), st.lists(REGION, max_size=5)), max_size=3)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(PAGES)
def test_any_region_lists_score_without_raising(pairs):
    predicted, true = [p for p, _ in pairs], [t for _, t in pairs]
    metrics, rows = score_pages(predicted, true, {"text": "text", "table": "tables", "title": "text"})
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    assert len(rows) == len(pairs)
    for row, (p, t) in zip(rows, pairs):
        assert len(row.matched) + len(row.missed) == len(t) and len(row.matched) + len(row.spurious) == len(p)


def test_predictions_on_pages_without_true_regions_score_zero():
    predicted = [[Region("picture", (0.1, 0.1, 0.5, 0.5))]]
    metrics, (row,) = score_pages(predicted, [[]], {"picture": "text"})
    assert metrics["layout/precision"] == metrics["layout/f1"] == metrics["layout/map"] == 0.0
    assert row.spurious == [0] and "picture/cer" not in metrics
