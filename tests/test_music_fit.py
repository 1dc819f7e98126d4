"""`docvlm fit --config configs/tiny/music.yaml`: a few steps on synthetic scores, SMT's metrics logged."""

from pathlib import Path

import pytest

from helpers import fit_tiny


@pytest.mark.slow
def test_tiny_music_fit_logs_cer_ser_ler(tmp_path: Path) -> None:
    cli = fit_tiny("music", tmp_path, train=4, val=2)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert {"val/cer", "val/ser", "val/ler", "val/valid"} <= set(metrics)
    # 8 new tokens against targets of hundreds of characters: nearly every reference symbol is missed
    assert all(float(metrics[f"val/{k}"]) > 50.0 for k in ("cer", "ser", "ler"))
