"""Metrics with the reference implementations' exact semantics, one module per domain.

`docvlm.metrics.teds(...)` and the rest are loaded on first use, so that importing one domain's
metrics (as each task does) does not import every domain's libraries (RDKit, lxml, ...).
"""

import importlib

_MODULES = {
    "text": ["cer", "exact_match"],
    "music": ["music_cer", "music_ler", "music_metrics", "music_ser"],
    "molecules": ["canonicalize_smiles", "molecule_scores"],
    "nlg": ["bleu", "clean_report_r2gen", "cider", "nlg_scores", "rouge_l"],
    "ptb": ["ptb_tokenize"],
    "chexpert": ["chexpert_scores", "radgraph_f1"],
    "tables_teds": ["teds", "teds_batch", "teds_struct"],
    "tables_grits": ["grits", "grits_con", "grits_top"],
    "layout": ["box_iou", "detection_f1", "detection_map"],
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
