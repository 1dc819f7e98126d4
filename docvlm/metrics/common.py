"""What every metric module and task shares: public here, so no module copies another's private helper."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["same_length"]


def same_length(predictions: Sequence, references: Sequence) -> None:
    """`ValueError` unless there is one prediction per reference: `zip` would silently drop the rest."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
