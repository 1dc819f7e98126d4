"""Metrics with the reference implementations' exact semantics, one module per domain."""

from docvlm.metrics.text import cer, exact_match
from docvlm.metrics.music import music_cer, music_ler, music_metrics, music_ser
from docvlm.metrics.molecules import canonicalize_smiles, molecule_scores
from docvlm.metrics.nlg import bleu, cider, nlg_scores, rouge_l
from docvlm.metrics.chexpert import chexpert_scores, radgraph_f1
from docvlm.metrics.teds import teds, teds_batch, teds_struct
from docvlm.metrics.grits import grits, grits_con, grits_top
