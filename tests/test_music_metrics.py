"""Music metrics: SMT's CER/SER/LER parity on the 5 GrandStaff samples, and defined values on bad input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import docvlm.tasks
from docvlm.metrics.music import edit_distance, music_cer, music_ler, music_metrics, music_ser

# tests/data/grandstaff/SOURCE.txt: corpus values over the 5 samples (ijdar = ScoreVision's parsing)
REFERENCE = {
    "cnnt": dict(cer=4.3064, smt2024=4.4218, ijdar=3.7781, ser=5.7903, ler=20.7171),
    "crnn": dict(cer=4.7205, smt2024=4.8469, ijdar=5.6672, ser=7.9030, ler=23.1076),
}


@pytest.fixture(scope="module")
def data(data_dir) -> Path:
    return data_dir / "grandstaff"


def _read(folder: Path) -> list[str]:
    return [(folder / f"{i}.krn").read_text(encoding="utf-8") for i in range(5)]


def _smt_levenshtein(a, b) -> int:
    """SMT's `utils.levenshtein` (pure Python), the reference for the distance."""
    n, m = len(a), len(b)
    if n > m:
        a, b, n, m = b, a, m, n
    current = list(range(n + 1))
    for i in range(1, m + 1):
        previous, current = current, [i] + [0] * n
        for j in range(1, n + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[j - 1] != b[i - 1]))
    return current[n]


@pytest.mark.parametrize("model", ["cnnt", "crnn"])
def test_parity_with_source_values(data, model):
    refs, hyps = _read(data / "gt"), _read(data / f"hyp_{model}")
    expected = REFERENCE[model]
    assert music_cer(hyps, refs) == pytest.approx(expected["cer"], abs=5e-5)
    assert music_cer(hyps, refs, "smt2024") == pytest.approx(expected["smt2024"], abs=5e-5)
    assert music_cer(hyps, refs, "ijdar") == pytest.approx(expected["ijdar"], abs=5e-5)
    assert music_ser(hyps, refs) == pytest.approx(expected["ser"], abs=5e-5)
    assert music_ler(hyps, refs) == pytest.approx(expected["ler"], abs=5e-5)


def test_task_score_matches_metrics_json(data):
    """The task reproduces the metrics.json the repository published (ijdar CER), plus `valid`."""
    import json

    refs, hyps = _read(data / "gt"), _read(data / "hyp_cnnt")
    published = json.loads((data / "metrics_cnnt_5_samples.json").read_text())[0]
    scores = docvlm.tasks.get("music", cer_parsing="ijdar").score(hyps, refs)
    assert scores["cer"] == pytest.approx(published["cer"], rel=1e-12)
    assert scores["ser"] == pytest.approx(published["ser"], rel=1e-12)
    assert scores["ler"] == pytest.approx(published["ler"], rel=1e-12)
    assert scores["valid"] == pytest.approx(0.6)  # music21 gives up on two CNNT predictions (ragged spines)
    assert docvlm.tasks.get("music").score(refs, refs) == {"cer": 0.0, "ser": 0.0, "ler": 0.0, "valid": 1.0}


def test_separators_do_not_count(data):
    refs = _read(data / "gt")
    dotted = [r.replace("4", "4·") for r in refs]
    assert docvlm.tasks.get("music").score(dotted, refs)["cer"] == 0.0


def test_edit_distance_equals_smt_levenshtein():
    rng = random.Random(0)
    alphabet = ["4c", "8d", "<b>", "<t>", ".", "=", "*^", "", "4r"]
    for _ in range(200):
        a = [rng.choice(alphabet) for _ in range(rng.randint(0, 30))]
        b = [rng.choice(alphabet) for _ in range(rng.randint(0, 30))]
        assert edit_distance(a, b) == _smt_levenshtein(a, b)
        sa, sb = "".join(x[:1] for x in a), "".join(x[:1] for x in b)
        assert edit_distance(sa, sb) == _smt_levenshtein(sa, sb)


def test_hand_worked_values():
    # one substituted token of "4c <t> 4d" (3 SER symbols), 1 of 5 characters, 1 of 1 line
    assert music_metrics(["4c\t4e"], ["4c\t4d"]) == pytest.approx({"cer": 100 / 5, "ser": 100 / 3, "ler": 100.0})
    # SMT's SER keeps the empty strings that split(" ") makes: "4c  4d" has 3 symbols
    assert music_ser(["4c 4d"], ["4c  4d"]) == pytest.approx(100 / 3)


def test_bad_input_gives_defined_values():
    assert music_metrics([""], ["4c\t4d"]) == {"cer": 100.0, "ser": 100.0, "ler": 100.0}
    # an all-empty reference set: no CER symbol at all (SMT divides by zero)
    assert music_cer([""], [""]) == 0.0
    assert music_cer(["4c"], [""]) == 100.0
    assert music_ser([""], [""]) == 0.0  # "".split(" ") is one empty symbol
    task = docvlm.tasks.get("music")
    scores = task.score(["", "hello world", "**kern\t**kern\n4c\t4d\t4e\n*-\t*-"], ["", "", ""])
    assert scores["valid"] == 0.0 and scores["cer"] == 100.0
    assert task.score([], []) == {"cer": 0.0, "ser": 0.0, "ler": 0.0, "valid": 0.0}
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        music_ser(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown CER parsing"):
        music_cer(["a"], ["a"], "words")


def _reference_inputs(case: dict):
    """The seeded inputs of a recorded case (tests/data/edit_distance_reference.json)."""
    pool = case["alphabet"] if case["kind"] == "text" else case["vocab"]
    rng_a, rng_b = random.Random(case["seed_a"]), random.Random(case["seed_b"])
    a, b = [rng_a.choice(pool) for _ in range(case["len_a"])], [rng_b.choice(pool) for _ in range(case["len_b"])]
    if case["kind"] == "text":
        return "".join(a), "".join(b)
    return a, b


def _cases(data_dir) -> list[dict]:
    import json

    return json.loads((data_dir / "edit_distance_reference.json").read_text(encoding="utf-8"))["cases"]


def test_rapidfuzz_gives_the_recorded_edit_distances_of_texts_and_token_lists(data_dir):
    """editdistance's distances (recorded) equal rapidfuzz's, on texts (astral characters included) through the
    text task's CER and on token lists (empty and whitespace tokens included) as they are or mapped to ints."""
    from rapidfuzz.distance import Levenshtein

    from docvlm.metrics.text import cer

    for case in _cases(data_dir):
        a, b = _reference_inputs(case)
        assert Levenshtein.distance(a, b) == case["distance"], case
        assert edit_distance(a, b) == case["distance"], case
        if case["kind"] == "text" and b:
            assert cer([a], [b]) == case["distance"] / len(b)


@pytest.mark.slow
def test_evaluate_scores_a_200_kb_output_against_a_45_kb_reference_exactly(tmp_path):
    """Through `docvlm evaluate --predictions`: nothing capped, the exact distance (162,255, editdistance's)."""
    import json

    from docvlm.evaluate import main

    rng = random.Random(7)
    prediction = "".join(rng.choice("abcdefgh \né") for _ in range(200_000))
    target = "".join(rng.choice("abcdefgh \né") for _ in range(45_000))
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "long", "target": target, "prediction": prediction}) + "\n")
    assert main(["--task", "text", "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["metrics"]["cer"] == 162_255 / 45_000
