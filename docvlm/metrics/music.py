"""Optical music recognition error rates with the Sheet Music Transformer's semantics (antoniorv6/SMT).

SMT's `eval_functions.py` (`compute_poliphony_metrics`) scores a whole set at corpus level, in percent:
`100 * sum(levenshtein(hyp, ref)) / sum(len(ref))`, over three parsings of each **kern text:

- SER (symbols): `krn.replace("\\n", " <b> ").replace("\\t", " <t> ").split(" ")`, so each space-separated
  token, each tab and each newline is one symbol (empty strings included, as `split(" ")` makes them);
- LER (lines): `krn.split("\\n")`;
- CER (characters), three variants that published numbers used; name the one you report:
  - `"characters"`: `list(krn)`, SMT's current code (the default);
  - `"smt2024"`: SMT's earlier code (still in its file, commented out): the SER tokens, each split into
    characters except `<b>` and `<t>`, which stay one symbol; spaces vanish;
  - `"ijdar"`: the variant of the ScoreVision-MIDI reproduction of the GrandStaff (IJDAR 2023) numbers:
    the SER tokens kept whole, except `<b>` and `<t>`, which become their three characters `<`, `b`, `>`.

SMT's Levenshtein is pure Python (O(n*m) interpreted steps); here symbols are mapped to integers and
`rapidfuzz` computes the same distance in C++. The one case SMT leaves undefined, a reference set
with no symbol at all (possible for CER: empty references), gives 0.0 if the predictions are empty too
and 100.0 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from rapidfuzz.distance import Levenshtein

from docvlm.metrics.common import same_length

__all__ = ["music_cer", "music_ler", "music_metrics", "music_ser"]  # what `docvlm.metrics` offers by name
CerParsing = Literal["characters", "smt2024", "ijdar"]


def ser_symbols(krn: str) -> list[str]:
    """SMT's symbol parsing (SER)."""
    return krn.replace("\n", " <b> ").replace("\t", " <t> ").split(" ")


def ler_symbols(krn: str) -> list[str]:
    """SMT's line parsing (LER)."""
    return krn.split("\n")


def _smt2024(krn: str) -> list[str]:
    out: list[str] = []
    for token in ser_symbols(krn):
        if token in ("<b>", "<t>"):
            out.append(token)
        else:
            out.extend(token)
    return out


def _ijdar(krn: str) -> list[str]:
    out: list[str] = []
    for token in ser_symbols(krn):
        if token in ("<b>", "<t>"):
            out.extend(token)
        else:
            out.append(token)
    return out


_CER_PARSINGS: dict[str, Callable[[str], Sequence[str]]] = {"characters": list, "smt2024": _smt2024, "ijdar": _ijdar}


def cer_symbols(krn: str, parsing: CerParsing = "characters") -> Sequence[str]:
    """The CER symbols of a text under one of the three parsings (module docstring)."""
    try:
        return _CER_PARSINGS[parsing](krn)
    except KeyError:
        raise ValueError(f"unknown CER parsing {parsing!r}; expected one of {sorted(_CER_PARSINGS)}") from None


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two symbol sequences (exact: symbols are mapped to distinct integers)."""
    if isinstance(a, str) and isinstance(b, str):
        return Levenshtein.distance(a, b)
    ids: dict[str, int] = {}
    return Levenshtein.distance([ids.setdefault(s, len(ids)) for s in a], [ids.setdefault(s, len(ids)) for s in b])


def error_rate(
    predictions: Sequence[str], references: Sequence[str], symbols: Callable[[str], Sequence[str]]
) -> float:
    """Corpus error rate in percent: total edit distance over total reference length (SMT `compute_metric`)."""
    same_length(predictions, references)
    errors = total = 0
    for prediction, reference in zip(predictions, references):
        ref = symbols(reference)
        errors += edit_distance(symbols(prediction), ref)
        total += len(ref)
    if total == 0:
        return 0.0 if errors == 0 else 100.0
    return 100.0 * errors / total


def music_cer(predictions: Sequence[str], references: Sequence[str], parsing: CerParsing = "characters") -> float:
    """Character error rate (%) under the named parsing; `characters` = SMT's current `list(krn)`."""
    if parsing == "characters":
        return error_rate(predictions, references, str)  # a str is its own character sequence
    return error_rate(predictions, references, lambda krn: cer_symbols(krn, parsing))


def music_ser(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Symbol error rate (%), SMT's parsing."""
    return error_rate(predictions, references, ser_symbols)


def music_ler(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Line error rate (%), SMT's parsing."""
    return error_rate(predictions, references, ler_symbols)


def music_metrics(
    predictions: Sequence[str], references: Sequence[str], cer_parsing: CerParsing = "characters"
) -> dict[str, float]:
    """`{"cer", "ser", "ler"}` in percent, as SMT's `compute_poliphony_metrics` returns them."""
    return {
        "cer": music_cer(predictions, references, cer_parsing),
        "ser": music_ser(predictions, references),
        "ler": music_ler(predictions, references),
    }
