"""Runs say what they do: progress in steps out of `max_steps` in a terminal and in a log file, a last
validation when a run is shortened, and the learning rate in the demo's curves."""

import io
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from docvlm.progress import Progress, ValidateAtEnd, clock

REPO = Path(__file__).resolve().parents[1]


class Line(L.LightningModule):
    """A one-layer model that logs as docvlm's module does (`train/loss` on the bar) and counts validations."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.validations = 0

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch).pow(2).mean())

    def on_validation_epoch_end(self):
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(12, 4), batch_size=2)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(4, 4), batch_size=2)


def fit(callbacks, max_steps=7, val_check_interval=100, **trainer):
    module = Line()
    trainer = L.Trainer(max_steps=max_steps, val_check_interval=val_check_interval, check_val_every_n_epoch=None,
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=callbacks, **trainer)
    trainer.fit(module)
    return trainer, module


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_a_line_every_n_steps_while_training_runs(capsys):
    seen = {}

    class Probe(L.Callback):  # what the log file holds while training is still running
        def on_train_batch_end(self, trainer, *args):
            seen.setdefault(trainer.global_step, capsys.readouterr().out)

    fit([Progress(every_n_steps=3), ValidateAtEnd(), Probe()], accumulate_grad_batches=2)
    assert "step 3/7 (42%)" in seen[3] and "step 3/" not in seen[2]
    printed = "".join(seen.values()) + capsys.readouterr().out
    assert "\r" not in printed
    steps = [line for line in printed.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/7", "3/7", "6/7", "7/7"]  # optimizer steps, not batches
    for line in steps:
        assert all(part in line for part in ("loss ", "lr 1.00e-01", "elapsed ", "left ")), line
        assert " steps/s" in line or " s/step" in line
    assert steps[-1].startswith("step 7/7 (100%)") and steps[-1].endswith("left 0:00")
    assert printed.index("docvlm: validating (2 batches)") > printed.index("step 7/7")
    assert "docvlm: validation done in 0:00" in printed


def test_a_terminal_gets_one_line_rewritten_in_place(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    fit([Progress(refresh_s=0), ValidateAtEnd()], max_steps=5)
    printed = terminal.getvalue()
    training = printed.split("\n")[1]  # after the "training from step 0 to 5" line
    steps = [part.split("  ")[0] for part in training.split("\r")[1:6]]
    assert steps == [f"step {i}/5 ({20 * i}%)" for i in range(1, 6)]
    assert "\rvalidating 1/2" in printed and "\rvalidating 2/2" in printed
    assert printed.endswith("\n")


@pytest.mark.parametrize(("interval", "enabled", "validations"),
                         [(100, True, 1), (7, True, 1), (3, True, 3), (100, False, 0)],
                         ids=["shortened", "due-anyway", "due-at-3-and-6-then-at-the-end", "disabled"])
def test_a_shortened_run_ends_validated_once(interval, enabled, validations):
    _, module = fit([ValidateAtEnd(enabled=enabled)], val_check_interval=interval, enable_progress_bar=False)
    assert module.validations == validations


def test_clock():
    assert [clock(s) for s in (0, 59.6, 61, 3600 + 62)] == ["0:00", "1:00", "1:01", "1:01:02"]


@pytest.mark.slow
def test_the_demo_shortened_prints_progress_and_metrics_and_draws_the_learning_rate(tmp_path, capsys):
    from docvlm.callbacks import plot_curves
    from docvlm.cli import main

    small = ["--data.train.synthetic=4", "--data.val.synthetic=2", "--data.batch_size=2",
             "--model.decoding.max_new_tokens=4"]
    cli = main(["fit", "--config", str(REPO / "configs/demo.yaml"), *small, "--trainer.max_steps=2",
                "--trainer.log_every_n_steps=1", f"--trainer.default_root_dir={tmp_path}"])
    assert isinstance(cli.trainer.progress_bar_callback, Progress)
    printed = capsys.readouterr().out
    assert "step 2/2 (100%)" in printed and "Epoch" not in printed
    assert "docvlm: val/cer " in printed  # validated at step 2, not at the config's 2500
    log_dir = Path(cli.trainer.log_dir)
    assert "lr-AdamW" in plot_curves(log_dir / "metrics.csv", tmp_path / "curves.png")

    # Lightning refuses `enable_progress_bar: false` beside a progress callback: docvlm's goes quiet instead
    main(["validate", "--config", str(REPO / "configs/demo.yaml"), *small, "--trainer.enable_progress_bar=false",
          f"--trainer.default_root_dir={tmp_path / 'quiet'}"])
    assert "validating" not in capsys.readouterr().out
