# NOTE FOR HELPERS: read /work/main/CONTRIBUTING-NOW.md first (venv /tmp/venv, file ownership, never git commit).
"""Metrics with the reference implementations' exact semantics, one module per domain."""

from docvlm.metrics.text import cer, exact_match
from docvlm.metrics.music import music_cer, music_ler, music_metrics, music_ser
from docvlm.metrics.molecules import canonicalize_smiles, molecule_scores
