"""A rule-based CheXpert labeler (14 observations) and the clinical-efficacy scores built on it.

What is the original's, what is ours
------------------------------------
The CheXpert labeler (github.com/stanfordmlgroup/chexpert-labeler, MIT; its phrase lists and patterns
ship in `chexpert_data/` with the licence notice) runs four stages. Three are reproduced as they are:

- loading: lower case, `and/or` -> `or`, `a/b` -> `a or b`, `..` -> `.`, a space after every `.` and
  `,`, runs of whitespace collapsed (`Loader.clean`);
- extraction: every mention phrase of an observation (`phrases/mention/*.txt`, `_` read as a space)
  found as a substring of a sentence is a mention, unless it overlaps an unmention phrase
  (`phrases/unmention/*.txt`, plus the positional ones the original builds for Cardiomegaly and
  Enlarged Cardiomediastinum: "over the heart", "in the left cardiac silhouette", ...);
- aggregation: a mention is negative (0) if negated, else uncertain (-1) if uncertain, else positive
  (1); per observation, {0, -1} -> -1, {0, 1} -> 1, {-1, 1} -> 1; positive or uncertain
  "chf"/"heart failure" also adds an uncertain Cardiomegaly; No Finding is 1 when no observation other
  than Support Devices is positive or uncertain (mentions of the No Finding list such as "scoliosis"
  or "emphysema" count), else unmentioned; an unmentioned observation is blank (None / NaN).

The classification stage differs. The original parses each sentence with the BLLIP constituency
parser, converts the tree to universal dependencies (Stanford CoreNLP), and matches NegBio's
Semgrex-like patterns (`chexpert_data/patterns/*.txt`) on the dependency graph, in three passes:
pre-negation uncertainty, negation, post-negation uncertainty. docvlm has no parser: it keeps the three
passes in the same order and re-expresses the patterns' cue words as surface rules on the sentence,
with scopes in words instead of dependency edges:

- a cue *before* a mention applies when at most a few words lie between them and no clause break
  (`;`, but/however/although/which/with/otherwise ..., or a finite verb such as is/are/seen for
  negations) comes between ("no focal consolidation, effusion, or pneumothorax" negates all three,
  as the original's conjunction propagation does);
- a cue *after* a mention applies through linking words only ("heart size is normal", "the effusion
  has resolved", "pneumonia cannot be excluded");
- "X or Y" and "X versus Y" make both uncertain; "vascular congestion", "indistinctness" and
  "vascular prominence" are uncertain; a stable/unchanged heart size or silhouette is uncertain;
  "no change in X" does not negate X (the original's parse attaches "no" to "change").

Every rule looks only at a window around the mention: at most `WINDOW_WORDS` words (and
`WINDOW_CHARS` characters) on each side, cut from the sentence before the clause is found. The rules
before a mention reach at most a dozen words back (a cue of up to 5 words, 8 words away), and those after
it are in practice a few words long, so the window changes nothing on report text; it bounds the work
on degenerate text (a model that loops: thousands of words without a period), which is labeled in time
linear in its length (the whole clause is read only up to the window's edge, so a "cannot be excluded"
more than `WINDOW_WORDS` words after a mention in the same clause no longer counts).

So ours agrees with the original on ordinary sentences (it reproduces the labeler's published output
for its `sample_reports.csv`) but can disagree where only a parse decides the scope: long lists
across verbs, nested clauses, attachment ambiguities. It labels the text it is given (the original
labels only the IMPRESSION when asked); scores from it are "CheXpert-style", not CheXpert/CheXbert
numbers.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docvlm.metrics.common import same_length

__all__ = ["chexpert_scores", "radgraph_f1"]  # what `docvlm.metrics` offers by name
CATEGORIES = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
# The five observations of the CheXpert competition, used by report-generation papers ("F1-5").
FIVE = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
DATA = Path(__file__).with_name("chexpert_data")


@dataclass(frozen=True)
class Mention:
    observation: str
    start: int
    end: int
    text: str
    label: int = POSITIVE


# ---------------------------------------------------------------------------------------------------
# Loading and extraction: as the original.

def clean(report: str) -> str:
    """The original loader's cleaning (lower case, `/` -> `or`, spaces after `.` and `,`)."""
    text = report.lower().replace("and/or", "or")
    text = re.sub(r"(?<=[a-zA-Z])/(?=[a-zA-Z])", " or ", text)
    text = text.replace("..", ".").replace(".", ". ").replace(",", ", ")
    return " ".join(text.split())


def sentences(text: str) -> list[str]:
    """Sentences of cleaned text (after `.`, `?`, `!`); numbered-list numbers become their own short ones."""
    return [s for s in _SENTENCE_END.split(text) if s]


# A sentence ends after . ? ! unless the period belongs to an abbreviation ("atelectasis vs. pneumonia").
_SENTENCE_END = re.compile(r"(?<=[.?!])(?<!\bvs\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bdr\.)(?<!\bapprox\.)\s+")


def _load(directory: Path) -> dict[str, list[str]]:
    phrases: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.txt")):
        observation = path.stem.replace("_", " ").title()
        phrases[observation] = [line.strip().replace("_", " ") for line in path.read_text().splitlines() if line]
    return phrases


@functools.cache
def phrases() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(mention, unmention) phrases per observation, with the original's positional unmentions."""
    mention = _load(DATA / "phrases" / "mention")
    unmention = _load(DATA / "phrases" / "unmention")
    positional = [a + b for a in ("over the", "overly the", "in the") for b in ("", " superior", " left", " right")]
    unmention["Cardiomegaly"] = [f"{p} {m.replace('the ', '')}" for p in positional for m in mention["Cardiomegaly"]
                                 if m not in ("cardiomegaly", "cardiac enlargement")]
    unmention["Enlarged Cardiomediastinum"] = [f"{p} {m}" for p in positional
                                               for m in mention["Enlarged Cardiomediastinum"]]
    return mention, unmention


def _spans(phrase: str, text: str) -> list[tuple[int, int]]:
    spans, start = [], text.find(phrase)
    while start >= 0 and phrase:
        spans.append((start, start + len(phrase)))
        start = text.find(phrase, start + len(phrase))
    return spans


def extract(sentence: str) -> list[Mention]:
    """Mentions in one cleaned sentence (substring matches of the phrases, minus unmention overlaps)."""
    mention, unmention = phrases()
    found = []
    for observation, observation_phrases in mention.items():
        blocked = sorted(span for u in unmention.get(observation, ()) if u in sentence
                         for span in _spans(u, sentence))
        # a span overlaps an unmention when one starting before its end reaches past its start
        starts = [u_start for u_start, _ in blocked]
        reach = list(itertools.accumulate((u_end for _, u_end in blocked), max))
        for phrase in observation_phrases:
            if phrase not in sentence:
                continue
            for start, end in _spans(phrase, sentence):
                i = bisect.bisect_left(starts, end)
                if not (i and reach[i - 1] > start):
                    found.append(Mention(observation, start, end, sentence[start:end]))
    return found


# ---------------------------------------------------------------------------------------------------
# Classification: surface rules standing in for NegBio's dependency patterns.

def _rx(pattern: str) -> re.Pattern:
    return re.compile(pattern)


# The window each rule sees around a mention (see the module's docstring).
WINDOW_WORDS = 40
WINDOW_CHARS = 600
_WORD_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_WORD = _rx(r"[a-z0-9-]+")


# Words that end the scope of a cue (clause boundaries).
_CLAUSE_BREAK = _rx(r";|:|\b(?:but|however|although|though|whereas|while|yet|except|aside|apart|which|who|whose"
                    r"|otherwise|with)\b")
# Finite verbs and participles also end the scope of a preceding negation ("no effusion is seen, there is X").
_VERB_BREAK = _rx(r"\b(?:is|are|was|were|has|have|had|remains?|persists?|seen|noted|present|identified|demonstrated"
                  r"|shown|appears?|reflects?|represents?|likely)\b")
_SEMICOLON = _rx(";")

_PRE_UNCERTAIN_BEFORE = _rx(r"\b(?:cannot|can not|could not|not) (?:be )?(?:entirely |completely |definitely )?"
                            r"(?:exclude|excluded|rule out|ruled out)\b|\bno new\b|\bno evidence to rule out\b")
_PRE_UNCERTAIN_AFTER = _rx(r"\b(?:cannot|can not|could not|not) (?:be )?(?:entirely |completely |definitely )?"
                           r"(?:excluded|ruled out)\b")

_NEG_BEFORE = _rx(
    r"\b(?:no|not|without|neither|nor|rather than|negative for|free of|absence of|clear of|cleared|clearing of"
    r"|resolution of|resolved|disappearance of|removal of|removed|drainage of|history of|rule out|ruled out|rules out"
    r"|r/o|excluded?|excludes)\b"
)
_PSEUDO_NEG = _rx(r"^(?:no|not) (?:(?:significant|appreciable|interval|substantial|definite|other|acute) )*"
                  r"(?:change|changed|increase|decrease|worsening)\b|^not (?:be )?(?:excluded|ruled)")
_NORMAL_BEFORE = _rx(r"\b(?:normal|unremarkable)\b")
_LINKING = (r"(?:is|are|was|were|be|been|has|have|now|again|remains?|remained|appears?|appeared|seems?|looks?"
            r"|grossly|essentially|overall|also|still|stable|otherwise|entirely|completely|within|at|the|upper|top"
            r"|limits?|of|in|size|mildly|likely|overall)")
_NEG_AFTER_NORMAL = _rx(rf"^(?:\s*(?:,|and)\s*(?:[a-z-]+\s+){{0,3}}?)?(?:\s*{_LINKING}\b)*\s*(?:normal|unremarkable)\b"
                                                # "normal lungs": normal belongs to another noun
                        r"(?!\s+(?!(?:and|or|in|for|size|limits)\b)[a-z])")
# At most 5 words, then the cue: r"^(?:\s*[a-z-]+){0,5}?\s*\b(?:cue)\b", which backtracks through every way to
# split a long word into 5 pieces; `_neg_after` takes the first cue and counts the words before it instead.
_NEG_AFTER_WORDS = 5
_NEG_AFTER = _rx(
    r"\b(?:(?:has|have) (?:nearly |almost |completely |since |now |essentially )?"
    r"(?:resolved|cleared|disappeared|been removed|been resolved)|resolved|removed|absent|no longer (?:seen|present|"
    r"visualized|identified|evident|demonstrated|visible)|(?:is|are|was|were) not (?:seen|present|identified|evident|"
    r"demonstrated|noted|detected|enlarged|visible))\b"
)
_LETTERS_AND_SPACES = _rx(r"[\sa-z-]*")
_LETTERS = _rx(r"[a-z-]+")

_UNCERTAIN_BEFORE = _rx(
    r"\b(?:may|might|could|would|possible|possibly|presumably|probable|questionable|question of|suspect|suspected"
    r"|suspicious|suspicion|concern for|concerning for|worrisome for|suggestion of|consider|considered|favor|favored"
    r"|differential|versus|vs|correlate clinically|clinical correlation|borderline|less likely|secondary to"
    r"|obscuring|obscured|poorly evaluated|not well (?:seen|visualized|evaluated)|cannot)\b"
)
_UNCERTAIN_AFTER = _rx(
    rf"^(?:\s*{_LINKING}\b)*\s*(?:(?:is|are) (?:also )?(?:possible|suspected|questioned)|suspected"
    r"|(?:could|may|might|can|possibly) (?:also )?(?:be )?present"
    r"|(?:could|may|might|can) (?:also )?(?:appear|have this)"
    r"|(?:poorly|incompletely|not well) (?:evaluated|visualized|seen|assessed)|not (?:clearly )?(?:seen|visualized)"
    r"|not (?:well )?visualized|not appreciated|obscured|not evaluated)\b"
)
# "or" and at most 3 words to the end; r"(?:\s*[a-z-]+){0,3}\s*$" as it was also split long words every way.
_OR_BEFORE = _rx(r"\b(?:or|versus|vs)\b\s*(?:[a-z-]+(?:\s+|$)){0,3}$")
_OR_AFTER = _rx(r"^(?:\s*,\s*[a-z-]+(?:\s+[a-z-]+)?)*\s*,?\s*\bor\b|^\s*(?:versus|vs)\b")  # X, Y, or Z
_ALWAYS_UNCERTAIN = ("vascular congestion", "pulmonary congestion", "indistinctness", "vascular prominence")
_HEART_WORDS = _rx(r"\b(?:cardiomediastinal|pericardial|mediastinal|mediastinum|cardiomediastinum|contours?"
                   r"|configuration|silhouettes?|size|heart|shadow)\b")
_STABLE_BEFORE = _rx(r"\b(?:stable|unchanged|borderline)\s+(?:(?:appearance|size) of (?:the )?)?(?:[a-z-]+\s+){0,2}$")
_STABLE_AFTER = _rx(rf"^(?:\s*{_LINKING}\b)*\s*(?:stable|unchanged|not changed|borderline|similar to (?:the )?prior"
                    r"|unchanged from (?:the )?prior)\b")


def _scope_before(before: str, cue: re.Pattern, max_words: int, breaks: re.Pattern,
                  pseudo: re.Pattern | None = None) -> bool:
    """A cue in `before` with at most `max_words` words and no break between it and the mention.

    A cue that `pseudo` matches at its start ("no change in") does not count.
    The nearest such cue decides: a farther one's gap holds every word and break of the nearer one's
    (cues end a word), so if the nearest fails, all do.
    """
    for match in reversed(list(cue.finditer(before))):
        if pseudo is not None and pseudo.match(before[match.start():]):
            continue
        gap = before[match.end():]
        return len(_WORD.findall(gap)) <= max_words and not breaks.search(gap)
    return False


def _neg_after(after: str) -> bool:
    """A negation cue after at most `_NEG_AFTER_WORDS` words (letters, hyphens, spaces) of `after`.

    The first cue decides: the text before a later one holds the text before the first.
    """
    match = _NEG_AFTER.search(after)
    if match is None:
        return False
    prefix = after[: match.start()]
    return _LETTERS_AND_SPACES.fullmatch(prefix) is not None and len(_LETTERS.findall(prefix)) <= _NEG_AFTER_WORDS


def _clause(sentence: str, start: int, end: int) -> tuple[str, str]:
    """The text of the mention's clause before and after it, from the edges of the words it touches
    (the phrase "contour" in "contours are normal" is followed by "are normal")."""
    start += len(sentence[start:end]) - len(sentence[start:end].lstrip())
    start = len(sentence[:start].rstrip(_WORD_CHARS))
    if sentence[end - 1] != " ":
        end = len(sentence) - len(sentence[end:].lstrip(_WORD_CHARS))
    before, after = sentence[:start], sentence[end:]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    if breaks:
        before = before[breaks[-1].end():]
    following = _CLAUSE_BREAK.search(after)
    return before, after[: following.start()] if following else after


def _window(sentence: str, start: int, end: int) -> tuple[int, int]:
    """The part of the sentence the rules see around sentence[start:end]: `WINDOW_WORDS` words on each
    side, at most `WINDOW_CHARS` characters."""
    low, high = max(0, start - WINDOW_CHARS), min(len(sentence), end + WINDOW_CHARS)
    words = list(_WORD.finditer(sentence, low, start))
    if len(words) > WINDOW_WORDS:
        low = words[-WINDOW_WORDS].start()
    words = list(itertools.islice(_WORD.finditer(sentence, end, high), WINDOW_WORDS + 1))
    if len(words) > WINDOW_WORDS:
        high = words[WINDOW_WORDS].start()
    return low, high


_SENTENCE_NEGATION = _rx(r"(?:findings|impression): no ")


def classify(sentence: str, mention: Mention) -> int:
    """POSITIVE, NEGATIVE or UNCERTAIN for one mention of a cleaned sentence."""
    if _SENTENCE_NEGATION.match(sentence):  # NegBio's sentence-level negation
        return NEGATIVE
    low, high = _window(sentence, mention.start, mention.end)
    window = sentence[low:high]
    before, after = _clause(window, mention.start - low, mention.end - low)
    whole_before = window[: mention.start - low]
    # 1. Pre-negation uncertainty.
    if _scope_before(before, _PRE_UNCERTAIN_BEFORE, 4, _VERB_BREAK) or _PRE_UNCERTAIN_AFTER.search(after):
        return UNCERTAIN
    # 2. Negation.
    if (_scope_before(before, _NEG_BEFORE, 8, _VERB_BREAK, _PSEUDO_NEG)
            or _scope_before(before, _NORMAL_BEFORE, 3, _VERB_BREAK)
            or _NEG_AFTER_NORMAL.match(after) or _neg_after(after)):
        return NEGATIVE
    # 3. Post-negation uncertainty.
    if (mention.text in _ALWAYS_UNCERTAIN
            or _scope_before(before, _UNCERTAIN_BEFORE, 6, _SEMICOLON)
            or _UNCERTAIN_AFTER.match(after)
            or _OR_BEFORE.search(before) or _OR_AFTER.match(after)):
        return UNCERTAIN
    if _HEART_WORDS.search(mention.text) and (_STABLE_BEFORE.search(whole_before) or _STABLE_AFTER.match(after)):
        return UNCERTAIN
    return POSITIVE


# ---------------------------------------------------------------------------------------------------
# Aggregation: as the original.

def mentions(report: str) -> list[Mention]:
    """Every classified mention of a raw report."""
    found = []
    for sentence in sentences(clean(report)):
        found += [Mention(m.observation, m.start, m.end, m.text, classify(sentence, m)) for m in extract(sentence)]
    return found


def label(report: str) -> dict[str, int | None]:
    """The 14 labels of one report: 1 positive, 0 negative, -1 uncertain, None not mentioned."""
    votes: dict[str, list[int]] = {}
    no_finding = True
    for m in mentions(report):
        if m.observation != "Support Devices" and m.label in (POSITIVE, UNCERTAIN):
            no_finding = False
        if m.observation == "No Finding":
            continue
        if m.label in (POSITIVE, UNCERTAIN) and m.text in ("chf", "heart failure"):
            votes.setdefault("Cardiomegaly", []).append(UNCERTAIN)
        votes.setdefault(m.observation, []).append(m.label)
    if no_finding:
        votes["No Finding"] = [POSITIVE]
    return {c: _resolve(votes[c]) if c in votes else None for c in CATEGORIES}


def _resolve(labels: list[int]) -> int:
    """The original's conflict rules, in its order: {0, -1} (even with 1) -> -1, {0, 1} -> 1, {-1, 1} -> 1."""
    if len(labels) == 1:
        return labels[0]
    if NEGATIVE in labels and UNCERTAIN in labels:
        return UNCERTAIN
    if POSITIVE in labels and (NEGATIVE in labels or UNCERTAIN in labels):
        return POSITIVE
    return labels[0]


def label_matrix(reports: Sequence[str]) -> np.ndarray:
    """Labels of many reports as a float array (n, 14): 1.0, 0.0, -1.0, NaN for not mentioned."""
    out = np.full((len(reports), len(CATEGORIES)), np.nan)
    for i, report in enumerate(reports):
        for j, value in enumerate(label(report).values()):
            if value is not None:
                out[i, j] = value
    return out


# ---------------------------------------------------------------------------------------------------
# Clinical efficacy.

def _prf(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Micro and macro precision/recall/F1 of binary (n, k) arrays (0/0 counts as 0, as sklearn's default)."""
    tp = (pred & true).sum(0).astype(float)
    fp = (pred & ~true).sum(0).astype(float)
    fn = (~pred & true).sum(0).astype(float)

    def ratio(a, b):
        return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)

    def f1(p, r):
        return ratio(2 * p * r, p + r)

    p, r = ratio(tp, tp + fp), ratio(tp, tp + fn)
    P, R = ratio(tp.sum(), tp.sum() + fp.sum()), ratio(tp.sum(), tp.sum() + fn.sum())
    return {"precision_micro": float(P), "recall_micro": float(R), "f1_micro": float(f1(P, R)),
            "precision_macro": float(p.mean()), "recall_macro": float(r.mean()), "f1_macro": float(f1(p, r).mean())}


def chexpert_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Clinical-efficacy precision/recall/F1, micro and macro, over the 14 observations and the 5.

    Both texts are labeled by `label`; positive and uncertain count as positive, negative and
    unmentioned as negative (the convention of report-generation papers). Keys:
    `chexpert_{precision,recall,f1}_{micro,macro}_{14,5}`.
    """
    same_length(predictions, references)
    pred, true = label_matrix(predictions), label_matrix(references)
    pred, true = np.isin(pred, (POSITIVE, UNCERTAIN)), np.isin(true, (POSITIVE, UNCERTAIN))
    five = [CATEGORIES.index(c) for c in FIVE]
    scores = {}
    for suffix, columns in (("14", slice(None)), ("5", five)):
        for key, value in _prf(pred[:, columns], true[:, columns]).items():
            scores[f"chexpert_{key}_{suffix}"] = value
    return scores


def radgraph_f1(predictions: Sequence[str], references: Sequence[str], reward_level: str = "partial",
                **options) -> float:
    """RadGraph F1 (Delbrouck et al. 2022) through the optional `radgraph` package and its model weights.

    `reward_level` is the package's (`simple`, `partial`, `complete`); `options` go to `F1RadGraph`.
    """
    try:
        from radgraph import F1RadGraph
    except ImportError:
        raise ImportError("RadGraph F1 needs the optional `radgraph` package and its model weights "
                          "(`pip install radgraph`; the weights download from the Hugging Face hub on first use, "
                          "or set its cache to a local copy)") from None
    score = F1RadGraph(reward_level=reward_level, **options)(hyps=list(predictions), refs=list(references))[0]
    return float(score)
