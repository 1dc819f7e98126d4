"""`docvlm fit --config configs/tiny/molecules.yaml`: a few steps on synthetic drawings, MolScribe metrics logged."""

from pathlib import Path

from docvlm.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_tiny_molecules_fit_logs_molscribe_metrics(tmp_path: Path) -> None:
    cli = main([
        "fit", "--config", str(REPO / "configs/tiny/molecules.yaml"),
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--data.train.synthetic=8",
        "--data.val.synthetic=4", "--model.decoding.max_new_tokens=8", f"--trainer.default_root_dir={tmp_path}",
    ])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert {"val/canon_smiles", "val/graph", "val/tanimoto", "val/inchi", "val/valid"} <= set(metrics)
    assert all(0.0 <= float(metrics[f"val/{k}"]) <= 1.0 for k in ("canon_smiles", "graph", "tanimoto", "inchi", "valid"))
    task = cli.datamodule.task
    assert (task.name, task.image_mode, task.max_target_tokens) == ("molecules", "pad", 256)
    assert cli.model.hparams.label_smoothing == 0.1
