"""Model output is arbitrary text: every task's `score` returns a finite number for every metric on any
predictions and references, random (surrogates included) or mutated from valid targets. Hypothesis draws
150-300 batches of 1-8 pairs per task, 1,300-2,700 texts each; derandomized, so a run repeats."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docvlm.tasks
from docvlm.metrics import ptb

# Valid targets of each task, and pieces that matter to its parsers, spliced in by the mutations.
VALID = {
    "molecules": ["CCO", "N[C@@H](C)C(=O)O", "C/C=C\\C", "[R1]c1ccccc1", "C[Ph]", "CC(=O)[O-].[Na+]", "c1ccc2ccccc2c1"],
    "music": [
        "**kern\t**kern\n*clefF4\t*clefG2\n*M4/4\t*M4/4\n=1\t=1\n4C\t4c\n4D\t8d 8f\n.\t8e\n=\t=\n*-\t*-",
        "**kern\n*clefG2\n*k[f#]\n4g#\n*^\n4a\t4b\n*v\t*v\n2cc\n==\n*-",
    ],
    "radiology": [
        "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. IMPRESSION: No acute process.",
        "FINDINGS: Moderate cardiomegaly, 0.5-1.0 cm nodule (Fig. 2); Dr. ___ paged. IMPRESSION: Stage I. The \u201cedema\u201d!!",
        "IMPRESSION: 1. Possible pneumonia. 2. No pneumothorax.;",
    ],
    "tables": [
        "<table><tr><td>a</td><td>b</td></tr><tr><td colspan=\"2\">c</td></tr></table>",
        "<table><thead><tr><th>h</th><td rowspan=\"2\">x</td></tr></thead><tbody><tr><td><b>1</b></td></tr></tbody></table>",
    ],
    "text": ["Score 782 dose MI5 level Group:", "data", ""],
    "layout": ["<loc0100><loc0050><loc0400><loc0900> table ; <loc0450><loc0050><loc0500><loc0900> text", ""],
}
PIECES = {
    "molecules": ["[", "]", "(", ")", "/", "\\", "@", "@@", "[R1]", "[R", "*", "=", "#", "1", "%12", "+", "-", ".", "[Ph]", "X"],
    "music": ["\t", "\n", "*", "**kern", "*-", "*^", "*v", "=", ".", "4", "c", "r", "#", " ", "!!", "*clefG2", "*M3/4", "{"],
    "radiology": ["FINDINGS:", "IMPRESSION:", ". ", "!!", "?!", "\u2019", "\u201c", "\u2013", "Dr.", "I. The", "___", "\n",
                  "(", "\\", "'s", "<b>", "&amp;", "\r", "\u2028", "cannot", "5 7/8", "1. ", "  "],
    "tables": ["<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>", "<thead>", "<tbody>", "colspan=\"0\"",
               "rowspan=\"x\"", "<td colspan=\"3\">", "<html><body>", "&amp;", "&nbsp;", "<", ">", "\"", "<!--", "]]>"],
    "text": [" ", "\n", "\t", "\u0301", "\U0001F600"],
    "layout": ["<loc0000>", "<loc1023>", "<loc1024>", "<loc99999>", " ; ", ";", " table", " sofa", "<seg001>", "<loc"],
}
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)  # surrogates included


@st.composite
def mutated(draw, name: str) -> str:
    text = draw(st.sampled_from(VALID[name]))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        piece = draw(st.one_of(st.sampled_from(PIECES[name]), ANY_TEXT))
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
    return st.one_of(ANY_TEXT, mutated(name), st.sampled_from(VALID[name]))


# Batches of 1-8 pairs per task, as a multiple of the Hypothesis profile's examples (100; 10 in `make test-fast`).
EXAMPLES = {"molecules": 3.0, "music": 1.5, "radiology": 1.5, "tables": 2.0, "text": 3.0}


@pytest.mark.parametrize("name", docvlm.tasks.names())
def test_score_returns_finite_numbers_on_any_output(name, monkeypatch) -> None:
    monkeypatch.setattr(ptb, "ptb_jar", lambda: None)  # `ptb` in the pure-Python approximation here; Java below
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # TEDS in this process: a pool per call of 8 pairs costs 0.2 s
    tokenizers = st.sampled_from(["r2gen", "ptb", "none"]) if name == "radiology" else st.just(None)

    @settings(max_examples=round(EXAMPLES.get(name, 5.0) * settings.default.max_examples), deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(pairs=st.lists(st.tuples(outputs(name), outputs(name)), min_size=1, max_size=8), tokenizer=tokenizers)
    def check(pairs, tokenizer) -> None:
        task = docvlm.tasks.get(name, tokenizer=tokenizer) if tokenizer else docvlm.tasks.get(name)
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
