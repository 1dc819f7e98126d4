"""What a run prints is what informs: the notes and bars that said nothing to a docvlm user are gone (Lightning's
tensorboardX notice, torch's LeafSpec deprecation, a FLOPs column of zeros, transformers' loading and saving
bars, the per-sample scoring rate), and only those: other warnings still show."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from docvlm.cli import quiet_known_noise

REPO = Path(__file__).resolve().parents[1]
NOISE = ["tensorboardX", "LeafSpec", "FLOPs", "Loading weights", "Writing model shards", "sample/s"]


def test_only_the_known_warnings_are_filtered():
    from lightning.pytorch import Trainer
    from torch.utils._pytree import LeafSpec

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        Trainer(logger=True, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        LeafSpec()
        warnings.warn("Starting from v1.9.0 this unrelated note stays", UserWarning)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning)  # same words, other kind
    assert [str(w.message)[:30] for w in caught] == ["Starting from v1.9.0 this unre", "`isinstance(treespec, LeafSpec"]


def test_the_model_summary_leaves_out_flops_it_cannot_count(capsys):
    from docvlm.callbacks import ModelSummary

    data = [(" ", ["0"]), ("Name", ["net"]), ("Type", ["PaliGemma"]), ("Params", ["683 K"]), ("Mode", ["train"]),
            ("FLOPs", ["0"])]
    ModelSummary.summarize(data, 683_000, 683_000, 2.7, {"train": 59, "eval": 0}, total_flops=0)
    printed = capsys.readouterr().out
    assert "FLOPs" not in printed and "683 K" in printed and "Total params: 683 K" in printed
    ModelSummary.summarize(data, 683_000, 683_000, 2.7, {"train": 59, "eval": 0}, total_flops=5_000)
    assert "Total FLOPs: 5.0 K" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_and_evaluate_print_no_known_noise(tmp_path):
    docvlm = Path(sys.executable).parent / "docvlm"
    fit = subprocess.run([str(docvlm), "fit", "--config", str(REPO / "configs/demo.yaml"), "--trainer.max_steps=2",
                          "--trainer.val_check_interval=2", "--data.train.synthetic=8", "--data.val.synthetic=4",
                          "--model.decoding.max_new_tokens=4", f"--trainer.default_root_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (hf,) = tmp_path.rglob("hf")
    evaluate = subprocess.run([str(docvlm), "evaluate", "--model", str(hf), "--synthetic", "4", "--out",
                               str(tmp_path / "report")], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    printed = fit.stdout + fit.stderr + evaluate.stdout + evaluate.stderr
    assert [word for word in NOISE if word in printed] == []
    assert "Total params" in printed and "docvlm: val/cer" in printed and "docvlm: cer" in printed


@pytest.mark.slow
@pytest.mark.parametrize("enabled", [True, False])
def test_enable_model_summary_turns_docvlms_summary_on_and_off(tmp_path, capsys, enabled):
    from docvlm.cli import main

    main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--trainer.max_steps=1", "--trainer.val_check_interval=1",
          "--data.train.synthetic=4", "--data.val.synthetic=2", "--model.decoding.max_new_tokens=2",
          "--export.enabled=false", "--curves.enabled=false", f"--trainer.enable_model_summary={str(enabled).lower()}",
          f"--trainer.default_root_dir={tmp_path}"])
    assert ("Total params" in capsys.readouterr().out) is enabled
