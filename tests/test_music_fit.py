"""`docvlm fit --config configs/tiny/music.yaml`: a few steps on synthetic scores, SMT's metrics logged."""

from pathlib import Path

from docvlm.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_tiny_music_fit_logs_cer_ser_ler(tmp_path: Path) -> None:
    cli = main([
        "fit", "--config", str(REPO / "configs/tiny/music.yaml"),
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--data.train.synthetic=4",
        "--data.val.synthetic=2", "--model.decoding.max_new_tokens=8", f"--trainer.default_root_dir={tmp_path}",
    ])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert {"val/cer", "val/ser", "val/ler", "val/valid"} <= set(metrics)
    # 8 new tokens against targets of hundreds of characters: nearly every reference symbol is missed
    assert all(float(metrics[f"val/{k}"]) > 50.0 for k in ("cer", "ser", "ler"))
    task = cli.datamodule.task
    assert (task.name, task.image_mode, task.max_target_tokens) == ("music", "stretch", 1024)
    assert cli.model.hparams.label_smoothing == 0.1 and cli.model.hparams.lr == 1e-3
