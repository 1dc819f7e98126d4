"""Training progress that reads the same in a terminal and in a log file.

Lightning's bar counts epochs, which says little about a run bounded by `max_steps` (the demo showed
`Epoch 624/-2`), and when stdout is a file or a pipe (CI, nohup, a cluster's job log) tqdm writes nothing
useful until the run is over. This bar counts optimizer steps out of `max_steps` and prints plain lines.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


def clock(seconds: float) -> str:
    """`1:02:03`, `2:03`: hours only when there are any."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress(ProgressBar):
    """One status line: `step 120/2500 (5%)  loss 0.4321  lr 1.00e-02  2.31 steps/s  elapsed 0:52  left 17:10`.

    In a terminal the line is rewritten in place (at most `refresh_s` apart), and validation, test and
    predict show their batches on it. When stdout is not a terminal, a whole line is printed after the
    first optimizer step (the run has started, at this speed), every `every_n_steps` steps and at the last
    one, and one when an evaluation starts and ends, so a log shows how far a run is while it runs. The rate
    and the time left count training time only (validation excluded). Only rank zero prints.

    Args:
        every_n_steps: steps between lines when stdout is not a terminal.
        refresh_s: least time between rewrites of the terminal line.
        enabled: print at all. `--trainer.enable_progress_bar false` turns this off.
    """

    def __init__(self, every_n_steps: int = 50, refresh_s: float = 0.2, enabled: bool = True):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, not {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.refresh_s = refresh_s
        self._enabled = enabled
        self._start_time = 0.0
        self._start_step = 0
        self._eval_time = 0.0  # seconds spent in validation during fit
        self._eval_start = 0.0
        self._eval_done = 0
        self._eval_total: int | float = 0
        self._last_step = -1
        self._last_draw = 0.0
        self._width = 0  # of the terminal line drawn last, to blank what a shorter line leaves

    # -- ProgressBar's interface -------------------------------------------------------------------

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        self._end_line()
        print(*args, file=self.stream, **kwargs)

    # -- output ------------------------------------------------------------------------------------

    @property
    def stream(self) -> TextIO:
        """stdout as it is when printing (pytest and notebooks replace it)."""
        return sys.stdout

    @property
    def interactive(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _draw(self, line: str, force: bool = False) -> None:
        """Rewrite the terminal line (throttled unless `force`), or print `line` whole to a file."""
        if not self._enabled:
            return
        if self.interactive:
            now = time.monotonic()
            if not force and now - self._last_draw < self.refresh_s:
                return
            self._last_draw = now
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        """Leave the terminal line drawn so far, so that what follows starts on a line of its own."""
        if self._width and self._enabled:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0

    # -- training ----------------------------------------------------------------------------------

    def total_steps(self, trainer: L.Trainer) -> int | None:
        """`max_steps`, else what Lightning estimates from the epochs; None when unbounded."""
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        estimate = trainer.estimated_stepping_batches
        return int(estimate) if math.isfinite(estimate) else None

    def status(self, trainer: L.Trainer) -> str:
        """The training line for the current step."""
        step, total = trainer.global_step, self.total_steps(trainer)
        parts = [f"step {step}/{total} ({100 * step // total}%)" if total else f"step {step}"]
        for name, value in trainer.progress_bar_metrics.items():
            if isinstance(value, (int, float)):
                parts.append(f"{name.removeprefix('train/')} {value:.4g}")
        rates = [group["lr"] for optimizer in trainer.optimizers[:1] for group in optimizer.param_groups[:1]]
        if rates:
            parts.append(f"lr {rates[0]:.2e}")
        elapsed = time.monotonic() - self._start_time
        train_time = elapsed - self._eval_time
        done = step - self._start_step
        if done > 0 and train_time > 0:
            rate = done / train_time
            parts.append(f"{rate:.2f} steps/s" if rate >= 1 else f"{1 / rate:.2f} s/step")
            parts.append(f"elapsed {clock(elapsed)}")
            if total:
                parts.append(f"left {clock(max(0, total - step) / rate)}")
        return "  ".join(parts)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_time = time.monotonic()
        self._start_step = self._last_step = trainer.global_step
        self._eval_time = 0.0
        total = self.total_steps(trainer)
        self._draw(f"docvlm: training from step {trainer.global_step}" + (f" to {total}" if total else ""), force=True)
        if self.interactive:
            self._end_line()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:  # a micro-batch of gradient accumulation: no optimizer step yet
            return
        self._last_step = step
        last = step == self.total_steps(trainer)
        done = step - self._start_step
        if self.interactive or last or done == 1 or done % self.every_n_steps == 0:
            self._draw(self.status(trainer), force=last)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.interactive:
            self._draw(self.status(trainer), force=True)
        self._end_line()

    # -- validation, test, predict -----------------------------------------------------------------

    def _eval_started(self, what: str, total: int | float) -> None:
        self._eval_start = time.monotonic()
        self._eval_done, self._eval_total = 0, total
        if self.interactive:
            self._end_line()
        else:
            count = f"{total} batch{'es' if total != 1 else ''}" if math.isfinite(total) else "batches"
            self._draw(f"docvlm: {what} ({count})")

    def _eval_batch(self, what: str) -> None:
        self._eval_done += 1
        if self.interactive:
            done, total = self._eval_done, self._eval_total
            self._draw(f"{what} {done}/{total}" if math.isfinite(total) else f"{what} {done}", force=done == total)

    def _eval_ended(self, what: str) -> float:
        seconds = time.monotonic() - self._eval_start
        if self.interactive:
            self._end_line()
        else:
            self._draw(f"docvlm: {what} done in {clock(seconds)}")
        return seconds

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_started("sanity check" if trainer.sanity_checking else "validating", self.total_val_batches)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        what = "sanity check" if trainer.sanity_checking else "validating"
        self._eval_batch(what)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = self._eval_ended("sanity check" if trainer.sanity_checking else "validation")
        if trainer.state.fn == "fit":
            self._eval_time += seconds

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_started("testing", sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch("testing")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_ended("test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_started("predicting", sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch("predicting")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_ended("prediction")


class ValidateAtEnd(L.Callback):
    """Validate after the last training step when the schedule would not: a run shortened with
    `--trainer.max_steps` (the tiny configs validate every 20 steps, so two steps printed no metric)
    still ends with its metrics, its predictions file and a checkpoint chosen by them.

    Lightning validates when a callback asks the fit to stop (`trainer.should_stop`, as early stopping
    does); asking at the last step costs nothing when validation was due anyway: it runs once.

    Args:
        enabled: validate at the end at all.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.enabled and 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
