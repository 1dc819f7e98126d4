"""`docvlm fit --config configs/tiny/molecules.yaml`: a few steps on synthetic drawings, MolScribe metrics logged."""

from pathlib import Path

import pytest

from helpers import fit_tiny


@pytest.mark.slow
def test_tiny_molecules_fit_logs_molscribe_metrics(tmp_path: Path) -> None:
    cli = fit_tiny("molecules", tmp_path)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert {"val/canon_smiles", "val/graph", "val/tanimoto", "val/inchi", "val/valid"} <= set(metrics)
    assert all(0.0 <= float(metrics[f"val/{k}"]) <= 1.0
               for k in ("canon_smiles", "graph", "tanimoto", "inchi", "valid"))
