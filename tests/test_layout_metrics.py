"""Layout metrics: `f1` equals a plain one-to-one matching written here, `map`/`map50`/`map75`/`ap_<class>` equal
pycocotools' COCOeval run here on the same boxes in pixels, on generated page sets; parse and score never
raise on any text."""

import contextlib
import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docvlm.tasks
from docvlm.converters.layout import Region, to_text

CLASSES = ("table", "text", "molecule")
WIDTH, HEIGHT = 612, 792  # COCOeval sees pixels here; docvlm scores fractions


def _box(rng):
    x0, y0 = rng.uniform(0, 0.8), rng.uniform(0, 0.8)
    return (x0, y0, x0 + rng.uniform(0.05, 0.2), y0 + rng.uniform(0.03, 0.2))


def _jitter(rng, box, amount):
    return tuple(min(max(v + rng.uniform(-amount, amount), 0.0), 1.0) for v in box)


def page_set(seed: int, kind: str, pages: int = 6):
    """(predicted texts, true texts) of `pages` pages with one kind of error (or all of them)."""
    rng = random.Random(f"{kind}:{seed}")
    predictions, references = [], []
    for _ in range(pages):
        true = [Region(rng.choice(CLASSES), _box(rng)) for _ in range(rng.randint(0, 6))]
        predicted = []
        for region in true:
            roll = rng.random()
            if kind in ("missed", "mixed") and roll < 0.3:
                continue
            box = _jitter(rng, region.box, 0.03 if kind != "jittered" else rng.choice((0.005, 0.02, 0.06)))
            label = rng.choice(CLASSES) if kind in ("wrong labels", "mixed") and roll > 0.6 else region.label
            predicted.append(Region(label, box))
            if kind in ("duplicates", "mixed") and roll > 0.7:
                predicted.append(Region(label, _jitter(rng, box, 0.01)))
        if kind in ("false positives", "mixed"):
            predicted += [Region(rng.choice(CLASSES), _box(rng)) for _ in range(rng.randint(0, 3))]
        if kind == "empty outputs" and rng.random() < 0.5:
            predicted = []
        rng.shuffle(predicted)
        predictions.append(to_text(predicted))
        references.append(to_text(true))
    return predictions, references


KINDS = ["jittered", "missed", "duplicates", "false positives", "wrong labels", "empty outputs", "mixed"]
CASES = [(kind, seed) for kind in KINDS for seed in range(3)]


def plain_f1(predicted_pages, true_pages, threshold=0.5):
    """One to one per page and class: repeatedly take the remaining pair of highest IoU, while it is >= 0.5."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union else 0.0

    tp = n_pred = n_true = 0
    for predicted, true in zip(predicted_pages, true_pages):
        n_pred, n_true = n_pred + len(predicted), n_true + len(true)
        for label in CLASSES:
            ps = [r.box for r in predicted if r.label == label]
            ts = [r.box for r in true if r.label == label]
            while ps and ts:
                best, i, j = max((iou(p, t), i, j) for i, p in enumerate(ps) for j, t in enumerate(ts))
                if best < threshold:
                    break
                tp += 1
                ps.pop(i)
                ts.pop(j)
    precision = tp / n_pred if n_pred else float(not n_true)
    recall = tp / n_true if n_true else float(not n_pred)
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else 1.0
    return precision, recall, f1


def cocoeval_stats(predicted_pages, true_pages, category=None):
    """COCOeval's summarize() stats[0:3] on pixel boxes, every detection score 1.0 in written order."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(region):
        x0, y0, x1, y1 = region.box
        return [x0 * WIDTH, y0 * HEIGHT, (x1 - x0) * WIDTH, (y1 - y0) * HEIGHT]

    ids = {c: k + 1 for k, c in enumerate(CLASSES)}
    gt = COCO()
    gt.dataset = {"images": [{"id": i + 1, "width": WIDTH, "height": HEIGHT} for i in range(len(true_pages))],
                  "categories": [{"id": k, "name": c} for c, k in ids.items()],
                  "annotations": [{"id": n + 1, "image_id": i, "category_id": ids[r.label], "bbox": b,
                                   "area": b[2] * b[3], "iscrowd": 0}
                                  for n, (i, r, b) in enumerate((i + 1, r, xywh(r)) for i, page in enumerate(true_pages)
                                                                for r in page)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        detections = [{"image_id": i + 1, "category_id": ids[r.label], "bbox": xywh(r), "score": 1.0}
                      for i, page in enumerate(predicted_pages) for r in page]
        if not detections:
            return None
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        if category is not None:
            evaluation.params.catIds = [ids[category]]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[:3]


@pytest.fixture(scope="module")
def task():
    return docvlm.tasks.get("layout", classes=list(CLASSES))


def scored(task, kind: str, seed: int):
    """The task's scores of a generated page set, and its predicted and true regions as parsed."""
    predictions, references = page_set(seed, kind)
    parsed = [[task.parse(text).value for text in texts] for texts in (predictions, references)]
    return task.score(predictions, references), *parsed


@pytest.mark.parametrize("kind, seed", CASES)
def test_f1_is_a_plain_one_to_one_matching(task, kind, seed):
    scores, predicted, true = scored(task, kind, seed)
    precision, recall, f1 = plain_f1(predicted, true)
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((precision, recall, f1), abs=1e-12)
    for label in CLASSES:
        if f"f1_{label}" in scores:
            only = [[r for r in page if r.label == label] for page in predicted]
            truth = [[r for r in page if r.label == label] for page in true]
            assert scores[f"f1_{label}"] == pytest.approx(plain_f1(only, truth)[2], abs=1e-12)


@pytest.mark.parametrize("kind, seed", CASES)
def test_map_equals_cocoeval_on_the_same_boxes(task, kind, seed):
    scores, predicted, true = scored(task, kind, seed)
    stats = cocoeval_stats(predicted, true)
    if stats is None:  # no detection at all: COCOeval's loadRes cannot even take the empty list
        assert (scores["map"], scores["map50"], scores["map75"]) == (0.0, 0.0, 0.0)
        return
    assert (scores["map"], scores["map50"], scores["map75"]) == pytest.approx(tuple(stats), abs=1e-9)
    for label in CLASSES:
        if any(r.label == label for page in true for r in page):
            assert scores[f"ap_{label}"] == pytest.approx(cocoeval_stats(predicted, true, label)[0], abs=1e-9)
        else:
            assert f"ap_{label}" not in scores


def test_the_cases_cover_hits_and_misses(task):
    """The generated sets are not trivial: some score perfectly, none of the error kinds does."""
    scores = [task.score(*page_set(seed, kind)) for kind, seed in CASES]
    assert all(0.0 < s["f1"] < 1.0 for s in scores) and all(0.0 < s["map"] < 1.0 for s in scores)
    same = page_set(0, "mixed")[1]
    assert task.score(same, same)["f1"] == 1.0 and task.score(same, same)["map"] == pytest.approx(1.0)


def test_written_order_ranks_ties_and_empty_sets_are_defined(task):
    true = [to_text([Region("table", (0.1, 0.1, 0.5, 0.5))])]
    hit, miss = "<loc0102><loc0102><loc0512><loc0512> table", "<loc0800><loc0800><loc0900><loc0900> table"
    first, last = task.score([f"{hit} ; {miss}"], true), task.score([f"{miss} ; {hit}"], true)
    assert first["f1"] == last["f1"] == pytest.approx(2 / 3)  # F1 ignores the order
    assert first["map50"] == pytest.approx(1.0) and last["map50"] == pytest.approx(0.5, abs=0.01)  # mAP does not
    assert task.score([""], [""])["f1"] == task.score([""], [""])["map"] == 1.0
    assert task.score([hit], [""])["f1"] == task.score([hit], [""])["map"] == 0.0


LOC = st.integers(0, 1100).map(lambda v: f"<loc{v:04d}>")
PIECE = st.one_of(LOC, st.sampled_from([" table", " text", " ; ", ";", " sofa", "<seg012>", "<loc", ">", " "]),
                  st.text(max_size=8))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(PIECE, max_size=30).map("".join), st.lists(PIECE, max_size=30).map("".join)),
                min_size=1, max_size=4))
def test_parse_and_score_never_raise(pairs):
    task = docvlm.tasks.get("layout", classes=list(CLASSES))
    for prediction, reference in pairs:
        parsed = task.parse(prediction)
        assert isinstance(parsed.value, list) and all(isinstance(p, str) for p in parsed.problems)
    scores = task.score([p for p, _ in pairs], [r for _, r in pairs])
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in scores.values()), scores
