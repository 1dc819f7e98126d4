"""Report-generation metrics with pycocoevalcap's semantics: BLEU-1..4, ROUGE-L and CIDEr-D.

The scorers reproduce `pycocoevalcap` 1.2 (github.com/salaniz/pycocoevalcap) on the same tokenised
text, to 1e-9:

- BLEU (`bleu/bleu_scorer.py`): corpus level, n-gram counts clipped by the maximum count over the
  references, effective reference length `closest` (ties go to the shorter reference), the smoothing
  constants `tiny = 1e-15` (numerators) and `small = 1e-9` (denominators), brevity penalty
  `exp(1 - r/c)` when `c < r`. Words are `str.split()`.
- ROUGE-L (`rouge/rouge.py`): per image the LCS precision and recall against each reference, the
  maximum of each over the references, F with beta = 1.2; the corpus score is the mean. Words are
  `str.split(" ")` as in the reference (so an empty text is one empty word).
- CIDEr-D (`cider/cider_scorer.py`): TF-IDF vectors of 1..4-grams, document frequencies counted over
  the references of the evaluated corpus (one document per image), `log(number of images)` as the
  reference length, clipped similarity `min(hyp, ref) * ref`, Gaussian length penalty with sigma 6 on
  the difference of the *bigram* counts (the reference's `length` counts n-grams with index 1), the
  mean over n, the mean over references, times 10; the corpus score is the mean over images.

Pre-processing (`tokenize`): pycocoevalcap's pipeline runs Stanford's Java PTBTokenizer
(`-preserveLines -lowerCase`) and drops its punctuation tokens. `tokenize` is a pure-Python
re-implementation of that for report text: lower case, PTB token splitting (decimals, times and
ratios stay whole, `1.5cm` -> `1.5 cm`, clitics `'s`/`n't` split, `cannot` -> `can not`, `e.g.`/`vs.`/`dr.` kept with their
period), brackets become `-lrb-`, `-rrb-`, ... which stay in the text exactly as in pycocoevalcap
(its punctuation list holds the upper-case forms only), and the tokens `'' ' `` ` . ? ! , : - -- ... ;`
are removed. On ordinary report text it gives the Java tokenizer's output (tested on the reports in
`tests/test_radiology_metrics.py` when Java and pycocoevalcap are installed); it can differ on text
with missing spaces after periods (`pneumothorax.2.`) and on rare abbreviations.

Empty corpora score 0.0 (the reference returns NaN or fails).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from rapidfuzz.distance import LCSseq

References = Sequence[str | Sequence[str]]

_PUNCTUATION = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = "dr|mr|mrs|ms|st|jr|sr|vs|etc|dept|cf|prof|inc|co|ltd"
_TOKEN = re.compile(
    r"___+"  # MIMIC de-identification
    r"|(?:[a-z]\.){2,}"  # e.g. i.e. a.m. u.s.
    rf"|\b(?:{_ABBREVIATIONS})\."
    r"|\d+(?:[.,:/]\d+)+"  # 1.5  10:30  3/4  1,000
    r"|n't|'(?:s|d|m|re|ll|ve)\b"  # clitics, split off below
    r"|[a-z0-9]+(?:[-/.][a-z0-9]+)*"  # words: x-ray  d/c  t7-8  2nd
    r"|--|\.\.\.|\S"
)
_CANNOT = re.compile(r"\bcannot\b")
_CLITIC = re.compile(r"(?<=[a-z])(?=n't\b)|(?<=[a-z0-9_])(?='(?:s|d|m|re|ll|ve)\b)")


def tokenize(text: str) -> str:
    """PTB-style tokens of `text`, lower-cased, punctuation removed, joined by single spaces."""
    text = _CLITIC.sub(" ", _CANNOT.sub("can not", text.lower().replace("\n", " ")))
    tokens = (_BRACKETS.get(t, t) for t in _TOKEN.findall(text.replace('"', " '' ")))
    return " ".join(t for t in tokens if t not in _PUNCTUATION)


def _as_lists(references: References) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def _check(predictions: Sequence[str], references: References) -> list[list[str]]:
    refs = _as_lists(references)
    if len(predictions) != len(refs):
        raise ValueError(f"{len(predictions)} predictions for {len(refs)} references")
    if any(not r for r in refs):
        raise ValueError("every prediction needs at least one reference")
    return refs


def _ngrams(words: list[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        counts.update(tuple(words[i : i + k]) for i in range(len(words) - k + 1))
    return counts


def bleu(predictions: Sequence[str], references: References, n: int = 4) -> list[float]:
    """Corpus BLEU-1..n of tokenised texts, as pycocoevalcap's `Bleu(n).compute_score` (first value)."""
    refs = _check(predictions, references)
    tiny, small = 1e-15, 1e-9
    testlen = reflen = 0
    guess, correct = [0] * n, [0] * n
    for hyp, hyp_refs in zip(predictions, refs):
        words = hyp.split()
        maxcounts: dict = {}
        lengths = []
        for ref in hyp_refs:
            ref_words = ref.split()
            lengths.append(len(ref_words))
            for ngram, count in _ngrams(ref_words, n).items():
                maxcounts[ngram] = max(maxcounts.get(ngram, 0), count)
        testlen += len(words)
        reflen += min((abs(length - len(words)), length) for length in lengths)[1]
        for k in range(n):
            guess[k] += max(0, len(words) - k)
        for ngram, count in _ngrams(words, n).items():
            correct[len(ngram) - 1] += min(maxcounts.get(ngram, 0), count)
    scores, product = [], 1.0
    for k in range(n):
        product *= float(correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def rouge_l(predictions: Sequence[str], references: References, beta: float = 1.2) -> float:
    """Mean ROUGE-L F (beta 1.2) of tokenised texts, as pycocoevalcap's `Rouge().compute_score`."""
    refs = _check(predictions, references)
    if not refs:
        return 0.0
    scores = []
    for hyp, hyp_refs in zip(predictions, refs):
        cand = hyp.split(" ")
        prec, rec = [], []
        for ref in hyp_refs:
            tokens = ref.split(" ")
            lcs = LCSseq.similarity(tokens, cand)
            prec.append(lcs / float(len(cand)))
            rec.append(lcs / float(len(tokens)))
        p, r = max(prec), max(rec)
        scores.append(((1 + beta**2) * p * r) / float(r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    return float(np.mean(np.array(scores)))


def cider(predictions: Sequence[str], references: References, n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D of tokenised texts, as pycocoevalcap's `Cider().compute_score` (first value).

    Document frequencies come from the references passed here, so the score of one prediction
    depends on the whole evaluated set (a single image always scores 0: its log reference length is 0).
    """
    refs = _check(predictions, references)
    if not refs:
        return 0.0
    ref_counts = [[_ngrams(r.split(), n) for r in hyp_refs] for hyp_refs in refs]
    document_frequency: Counter = Counter()
    for counts in ref_counts:
        document_frequency.update(set().union(*counts))
    ref_len = math.log(float(len(refs)))
    idf: dict = {}

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        for ngram, tf in counts.items():
            weight = idf.get(ngram)
            if weight is None:
                weight = idf[ngram] = ref_len - math.log(max(1.0, document_frequency.get(ngram, 0.0)))
            value = float(tf) * weight
            k = len(ngram) - 1
            vec[k][ngram] = value
            norm[k] += value * value
        bigrams = sum(tf for ngram, tf in counts.items() if len(ngram) == 2)
        return vec, [math.sqrt(x) for x in norm], bigrams

    penalty_scale = 2 * sigma**2
    scores = []
    for hyp, counts in zip(predictions, ref_counts):
        vec, norm, length = vector(_ngrams(hyp.split(), n))
        total = [0.0] * n
        for ref in counts:
            vec_ref, norm_ref, length_ref = vector(ref)
            penalty = math.exp(-(float(length - length_ref) ** 2) / penalty_scale)
            for k in range(n):
                ref_k = vec_ref[k]
                val = 0.0
                for g, v in vec[k].items():
                    r = ref_k.get(g, 0.0)
                    val += min(v, r) * r
                if norm[k] != 0 and norm_ref[k] != 0:
                    val /= norm[k] * norm_ref[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(counts) * 10.0)
    return float(np.mean(np.array(scores)))


def nlg_scores(predictions: Sequence[str], references: References, pretokenized: bool = False) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of raw texts (tokenised with `tokenize` unless `pretokenized`)."""
    if not pretokenized:
        predictions = [tokenize(p) for p in predictions]
        references = [[tokenize(r)] if isinstance(r, str) else [tokenize(x) for x in r] for r in references]
    if not predictions:
        _check(predictions, references)
        return {"bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0, "rouge_l": 0.0, "cider": 0.0}
    b = bleu(predictions, references)
    return {
        "bleu1": b[0],
        "bleu2": b[1],
        "bleu3": b[2],
        "bleu4": b[3],
        "rouge_l": rouge_l(predictions, references),
        "cider": cider(predictions, references),
    }
