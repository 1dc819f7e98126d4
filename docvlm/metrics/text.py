"""Plain-text metrics of the generic `text` task."""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

from docvlm.metrics.common import same_length

__all__ = ["cer", "exact_match"]  # what `docvlm.metrics` offers by name


def cer(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus character error rate: total edit distance over total reference length, in [0, inf).

    An empty reference set (total length 0) gives 0.0 when every prediction is empty too, else 1.0.
    The distance is rapidfuzz's exact Levenshtein (bit-parallel: a 200 kB output against a 45 kB reference
    in under a second, where an O(n*m) one took half a minute), so no output needs a length cap.
    """
    same_length(predictions, references)
    errors = sum(Levenshtein.distance(p, r) for p, r in zip(predictions, references))
    total = sum(len(r) for r in references)
    if total == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / total


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference (after stripping surrounding whitespace)."""
    same_length(predictions, references)
    if not references:
        return 0.0
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(references)
