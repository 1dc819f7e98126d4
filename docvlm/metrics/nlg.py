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
  the difference of the *bigram* counts (the reference's `length` counts n-grams with index 1) computed as
  the reference does, `np.e ** x` (`math.exp(x)` differs in the last bit, and scores by up to 1.8e-15), the
  mean over n, the mean over references, times 10; the corpus score is the mean over images.

Pre-processing, the `tokenizer` of `nlg_scores` (the conventions papers publish with):

- `r2gen`: R2Gen's `clean_report_mimic_cxr` (cuhksz-nlp/R2Gen `modules/tokenizers.py`, commit
  5a2e63f6d8da670725b1926317b4bfd1393ec51b), its tokens joined by single spaces as its `decode` gives them,
  then the scorers called directly, as its `modules/metrics.py` `compute_scores` does: what most MIMIC-CXR
  report-generation papers report (R2Gen and the work built on its code). R2Gen also cuts gold reports to
  its `max_seq_length` (100 tokens for MIMIC-CXR) and maps words rarer than its vocabulary threshold to
  `<unk>` before scoring; both depend on its training split and are not done here.
- `ptb`: pycocoevalcap's pipeline (COCO's captioning convention): Stanford's Java PTBTokenizer
  (`-preserveLines -lowerCase`) with its punctuation tokens removed, references and predictions each
  tokenised as one file; brackets become `-lrb-`, `-rrb-`, ... which stay in the text exactly as in
  pycocoevalcap (its punctuation list holds the upper-case forms only). Java runs when `java` and
  pycocoevalcap are installed, else a simpler pure-Python approximation with a warning: Java's tokens
  on ordinary report text, not on everything (`docvlm.metrics.ptb` lists where the two differ).
- `none`: the texts as given (already tokenised), split on white space by the scorers.

Empty corpora score 0.0 (the reference returns NaN or fails).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from rapidfuzz.distance import LCSseq

from docvlm.metrics.common import same_length
from docvlm.metrics.ptb import ptb_tokenize

__all__ = ["bleu", "clean_report_r2gen", "cider", "nlg_scores", "rouge_l"]  # what `docvlm.metrics` offers by name

References = Sequence[str | Sequence[str]]
TOKENIZERS = ("r2gen", "ptb", "none")

# R2Gen's `clean_report_mimic_cxr`, step by step: (old, new, how many times `str.replace` runs).
_R2GEN_REPLACE = [("\n", " ", 1), ("__", "_", 7), ("  ", " ", 6), ("..", ".", 8), ("1. ", "", 1)] + [
    (old, ". ", 1) for old in (". 2. ", ". 3. ", ". 4. ", ". 5. ", " 2. ", " 3. ", " 4. ", " 5. ")
]
# Its sentence cleaner's character class `[.,?;*!%^&_+():-\[\]{}]`: `:-\[` is the range U+003A..U+005B
# (`: ; < = > ? @ A-Z [`), so `-` itself is kept.
_R2GEN_DROP = re.compile(r"[.,*!%^&_+()\]{}\x3a-\x5b]")
_R2GEN_QUOTES = str.maketrans("", "", "\"/\\'")


def clean_report_r2gen(text: str) -> str:
    """R2Gen's `clean_report_mimic_cxr`, then its tokens joined by single spaces (what its `decode` returns).

    Runs of `_`, spaces and periods shrink by repeated replacement, enumeration marks `1. `... `5. ` go,
    the report is lower-cased and cut at `. `; each sentence loses `" / \\ '` and the characters of
    `_R2GEN_DROP`; the sentences are joined by ` . ` and end with ` .` (an empty report is `.`).
    """
    for old, new, times in _R2GEN_REPLACE:
        for _ in range(times):
            text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")
    cleaned = [_R2GEN_DROP.sub("", sentence.translate(_R2GEN_QUOTES).strip().lower()) for sentence in sentences]
    return " ".join((" . ".join(cleaned) + " .").split())


def prepare(texts: Sequence[str], tokenizer: str) -> list[str]:
    """`texts` as the scorers read them under the convention `tokenizer` (one of `TOKENIZERS`)."""
    if tokenizer == "r2gen":
        return [clean_report_r2gen(t) for t in texts]
    if tokenizer == "ptb":
        return ptb_tokenize(texts)
    if tokenizer == "none":
        return list(texts)
    raise ValueError(f"unknown tokenizer {tokenizer!r}; use one of {', '.join(TOKENIZERS)}")


def _as_lists(references: References) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def _check(predictions: Sequence[str], references: References) -> list[list[str]]:
    refs = _as_lists(references)
    same_length(predictions, refs)
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
            penalty = np.e ** (-(float(length - length_ref) ** 2) / penalty_scale)  # not math.exp: 1 ulp apart
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


def nlg_scores(predictions: Sequence[str], references: References, tokenizer: str = "r2gen") -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of raw texts, prepared under the convention `tokenizer` (see above)."""
    refs = _check(predictions, references)
    if not predictions:
        return {"bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0, "rouge_l": 0.0, "cider": 0.0}
    # references, then predictions, each as one list: pycocoevalcap's order and grouping (a PTB token may
    # depend on the next text)
    prepared = iter(prepare([r for hyp_refs in refs for r in hyp_refs], tokenizer))
    references = [[next(prepared) for _ in hyp_refs] for hyp_refs in refs]
    predictions = prepare(predictions, tokenizer)
    b = bleu(predictions, references)
    return {
        "bleu1": b[0],
        "bleu2": b[1],
        "bleu3": b[2],
        "bleu4": b[3],
        "rouge_l": rouge_l(predictions, references),
        "cider": cider(predictions, references),
    }
