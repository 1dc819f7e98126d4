"""Model output is arbitrary text: every task's `score` returns a finite number for every metric on any
predictions and references, random (surrogates included) or mutated from the task's own synthetic targets,
under each value of its few-valued options. Hypothesis draws 200 batches of 1-8 pairs per task, about 1,800
texts; derandomized, so a run repeats."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docvlm.tasks
from docvlm.metrics import ptb

# Pieces that broke parsers before, and PaliGemma's own location and segment tokens (any task's model may write
# them), spliced into every task's outputs beside the task's own tokens.
HOSTILE = ["<!--", "]]>", "&amp;", "&nbsp;", "<html><body>", "colspan=\"0\"", "rowspan=\"x\"", "<", ">", "\"", "[R1]",
           "[R", "%12", "@@", "\\", "*-", "*^", "*v", "!!", "?!", "___", "5 7/8", "1. ", "I. The", "Dr.", "\r", "\t",
           "\n", "  ", "\u2028", "\u2019", "\u201c", "\u2013", "\u0301", "\U0001F600", "\x00",
           "<loc0000>", "<loc1023>", "<loc1024>", "<loc99999>", "<loc", "<seg001>", " ; ", ";"]
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)  # surrogates included


@functools.cache
def material(name: str) -> tuple[list[str], list[str]]:
    """What the task's model is taught to write (targets of its synthetic samples, two seeds, and ""), and the
    pieces mutations splice in: those targets' own tokens (words, punctuation runs, characters) and HOSTILE."""
    task = docvlm.tasks.get(name)
    valid = [task.to_target(s) for seed in (0, 1) for s in task.synthesize(3, seed=seed)] + [""]
    tokens = {piece for text in valid for piece in [*re.findall(r"\w+|[^\w\s]+|\s", text), *text]}
    return valid, sorted(tokens) + HOSTILE


@st.composite
def mutated(draw, name: str) -> str:
    valid, pieces = material(name)
    text = draw(st.sampled_from(valid))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        piece = draw(st.one_of(st.sampled_from(pieces), ANY_TEXT))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + piece + text[j:]
    return text


def outputs(name: str):
    return st.one_of(ANY_TEXT, mutated(name), st.sampled_from(material(name)[0]))


def choices(name: str):
    """Every combination of the task's options that take one of a few values (`Literal` fields: the radiology
    tokenizer, the tables target format...), drawn with the texts: each changes how `score` reads them."""
    task = type(docvlm.tasks.get(name))
    hints = typing.get_type_hints(task)
    literal = {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(task)
               if typing.get_origin(hints[f.name]) is typing.Literal}
    return st.fixed_dictionaries({field: st.sampled_from(values) for field, values in literal.items()})


# Batches of 1-8 pairs per task, twice the Hypothesis profile's examples (100; 10 in `make test-fast`).
EXAMPLES = 2.0


@pytest.mark.parametrize("name", docvlm.tasks.names())
def test_score_returns_finite_numbers_on_any_output(name, monkeypatch) -> None:
    monkeypatch.setattr(ptb, "ptb_jar", lambda: None)  # `ptb` in the pure-Python approximation here; Java below
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # TEDS in this process: a pool per call of 8 pairs costs 0.2 s

    @settings(max_examples=round(EXAMPLES * settings.default.max_examples), deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(pairs=st.lists(st.tuples(outputs(name), outputs(name)), min_size=1, max_size=8), options=choices(name))
    def check(pairs, options) -> None:
        task = docvlm.tasks.get(name, **options)
        predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
        scores = task.score(predictions, references)
        assert scores and all(isinstance(v, float) and math.isfinite(v) for v in scores.values()), scores

    check()


@pytest.mark.slow
@pytest.mark.skipif(ptb.ptb_jar() is None, reason="needs Java and pycocoevalcap")
def test_java_ptb_scores_any_output(caplog) -> None:
    """The Java tokenizer on batches of arbitrary texts: one line per text whatever they hold, so Java's
    tokens are used (no fallback to the approximation, which would log a warning)."""

    @settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(outputs("radiology"), outputs("radiology")), min_size=1, max_size=200))
    def check(pairs) -> None:
        scores = docvlm.tasks.get("radiology", tokenizer="ptb").score([p for p, _ in pairs], [r for _, r in pairs])
        assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values()), scores

    check()
    assert not [r.message for r in caplog.records if "PTBTokenizer" in r.message]
