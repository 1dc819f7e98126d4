"""The CheXpert-style labeler on degenerate model output: a fine-tuned model that loops writes thousands of
words without a period, and one such prediction must not hang validation. The labeler finishes on such
text (a hang guard of 20 s, not a performance threshold: these take well under a second), and its
windowing changes no label on report text (labels recorded before it, tests/data/chexpert_labels_reference.json)."""

from __future__ import annotations

import contextlib
import json
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docvlm.metrics.chexpert import CATEGORIES, label, phrases

GUARD_S = 20
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="the hang guard needs signal.alarm")

SENTENCE = "Small left pleural effusion with adjacent atelectasis, pneumonia cannot be excluded. "
LONG = {
    # a header, a looped word, another header, and two 2,000- and 3,000-letter words
    "looped-word": "x" * 2000 + " FINDINGS: " + "opacity " * 300 + "IMPRESSION: " + "z" * 3000,
    "report-sentence-loop": (SENTENCE * 300)[:20000],
    "report-sentence-loop-without-periods": (SENTENCE.replace(".", "") * 300)[:20000],
    "mention-then-long-word": "opacity " + "z" * 3000,  # was exponential: ~5 words before "has resolved"
    "or-then-long-word": "effusion or " + "z" * 5000 + " effusion",
    "one-long-word": "opacity" * 3000,
    "list-of-commas": "no " + "effusion, " * 2000 + "or pneumothorax",
    "linking-words": "heart " + "is " * 5000 + "normal",
}


@contextlib.contextmanager
def finishes(seconds: int = GUARD_S):
    def expire(signum, frame):
        raise TimeoutError(f"the labeler ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("name", list(LONG))
def test_labeler_finishes_on_long_text(name: str) -> None:
    with finishes():
        labels = label(LONG[name])
    assert set(labels) == set(CATEGORIES)


def test_labels_of_looping_text_are_those_of_its_sentence() -> None:
    with finishes():
        assert label(LONG["looped-word"])["Lung Opacity"] == 1
        assert label(LONG["report-sentence-loop"]) == label(SENTENCE)
        assert label(LONG["report-sentence-loop-without-periods"]) == label(SENTENCE)


WORDS = sorted({p for ps in phrases()[0].values() for p in ps}) + [
    "no", "not", "without", "cannot be excluded", "may", "or", "versus", "vs.", "is", "normal", "has resolved",
    "is not seen", "stable", "no change in", "with", "but", ";", ",", ".", "-", "(", "r/o", "FINDINGS:", "IMPRESSION:",
    "x" * 500, "-" * 300, ", " * 100,
]


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(pieces=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=40)), min_size=20, max_size=200),
       joiner=st.sampled_from([" ", "", "-", ", "]), times=st.integers(1, 30))
def test_labeler_finishes_on_random_long_text(pieces: list[str], joiner: str, times: int) -> None:
    text = (joiner.join(pieces) + joiner) * times  # a model that loops repeats what it wrote
    with finishes():
        labels = label(text)
    assert set(labels) == set(CATEGORIES)


def test_labels_on_report_text_are_unchanged(data_dir) -> None:
    reference = json.loads((data_dir / "chexpert_labels_reference.json").read_text(encoding="utf-8"))
    assert reference["categories"] == list(CATEGORIES)
    ptb_texts = json.loads((data_dir / "report_metrics_reference.json").read_text(encoding="utf-8"))["ptb"]["texts"]
    for texts, expected in ((reference["texts"], reference["labels"]), (ptb_texts, reference["ptb_labels"])):
        assert len(texts) == len(expected)
        got = [[label(text)[c] for c in CATEGORIES] for text in texts]
        assert got == expected
    assert len(reference["texts"]) > 80 and len(ptb_texts) > 600
