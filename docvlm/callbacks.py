"""Callbacks the CLI adds to every run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint, RichModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from docvlm.mixture import SCORE, Mixture


class ExportHF(L.Callback):
    """At the end of `fit`, save the model in Hugging Face format (safetensors + processor).

    Args:
        dirpath: where to write; default `<log_dir>/hf`. `null` with `enabled: false` skips export.
        enabled: export at all.
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True):
        self.dirpath = dirpath
        self.enabled = enabled

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        # every rank takes part (`log_dir` is collective under DDP, FSDP gathers shards); rank zero writes
        directory = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "hf")
        pl_module.export(directory)
        rank_zero_info(f"docvlm: exported the model in Hugging Face format to {directory}")


class PredictionsJSONL(BasePredictionWriter):
    """`docvlm predict` writes `{id, prediction}` rows to `<dirpath>/predict-rank<N>.jsonl` as it goes,
    so an interrupted run keeps every finished batch.

    Args:
        dirpath: where to write; default `<log_dir>/predictions`.
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(write_interval="batch")
        self.dirpath = dirpath
        self._path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / f"predict-rank{trainer.global_rank}.jsonl"
        self._path.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        with self._path.open("a", encoding="utf-8") as f:
            for row in prediction:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


class PlotCurves(L.Callback):
    """At the end of `fit`, draw the run's curves (training loss, learning rate, each validation metric
    against the step) from the CSV logger's `metrics.csv` into `<log_dir>/curves.png`.

    Args:
        enabled: draw at all (only the CSV logger, Lightning's default, keeps a history to draw from).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import CSVLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        if not self.enabled or not loggers or not trainer.is_global_zero:
            return
        loggers[0].save()  # flush the rows still buffered
        metrics = Path(loggers[0].log_dir) / "metrics.csv"
        if metrics.is_file() and plot_curves(metrics, metrics.with_name("curves.png")):
            rank_zero_info(f"docvlm: training curves in {metrics.with_name('curves.png')}")


def plot_curves(metrics_csv: Path, out: Path) -> list[str]:
    """One panel per logged series (`train/loss`, `lr-*`, `val/*`; a mixture's `val/<task>/*` one panel per task,
    a line per metric) against the step; returns the panels drawn.

    Every panel spans the run's steps from 0 to the last, so that validation points sit where they happened in
    training; a series of one point is drawn as a large dot with its value written beside it (matplotlib would
    centre it on an axis of +-0.04); a loss that spans a decade or more is drawn on a log scale, where its late
    progress is visible."""
    series = _read_series(metrics_csv)
    if not series:
        return []
    curves_figure(series).savefig(out)
    return list(_panels(series))


def _panels(series: dict[str, list[tuple[int, float]]]) -> dict[str, list[str]]:
    """The series of each panel, training series first, then learning rates, then validation metrics: one
    series a panel, but a mixture's `val/<task>/<metric>` grouped in the panel `val/<task>`."""
    panels = {name: [name] for name in series if name.count("/") < 2}
    for name in series:
        if name.count("/") >= 2:
            panels.setdefault(name.rsplit("/", 1)[0], []).append(name)
    names = sorted(panels, key=lambda n: (not n.startswith("train/"), not n.startswith("lr-"), n))
    return {name: panels[name] for name in names}


def curves_figure(series: dict[str, list[tuple[int, float]]]):
    """The figure of `plot_curves`: training series first, then learning rates, then validation metrics."""
    from matplotlib.figure import Figure

    panels = _panels(series)
    last = max(step for points in series.values() for step, _ in points)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4 * columns, 2.8 * rows), dpi=100)
    for i, (name, lines) in enumerate(panels.items()):
        _draw_panel(figure.add_subplot(rows, columns, i + 1), name, {line: series[line] for line in lines}, last)
    figure.tight_layout()
    return figure


def _read_series(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per logged name of Lightning's `metrics.csv` (sample counts left out)."""
    import csv

    series: dict[str, list[tuple[int, float]]] = {}
    with metrics_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if name in ("step", "epoch") or not value or not row.get("step"):
                    continue
                if name.startswith(("train/", "val/", "lr-")) and not name.endswith("/samples"):
                    series.setdefault(name, []).append((int(row["step"]), float(value)))
    return series


def _draw_panel(axes, name: str, lines: dict[str, list[tuple[int, float]]], last: int) -> None:
    """One panel on the shared step axis: a line per series (labelled by its last part when there are several),
    dots when there are few points, a labelled dot for a series of one point."""
    axes.set_title(name)
    axes.set_xlabel("step")
    axes.set_xlim(-0.02 * max(last, 1), 1.04 * max(last, 1))
    every = [value for points in lines.values() for _, value in points]
    for line, points in lines.items():
        steps, values = zip(*points)
        label = line.rsplit("/", 1)[-1]
        if len(points) == 1:
            axes.plot(steps, values, "o", markersize=9, label=label)
            axes.annotate(f"{values[0]:.4f}", (steps[0], values[0]), xytext=(-12, 0), textcoords="offset points",
                          ha="right", va="center", fontsize=11)
        else:
            axes.plot(steps, values, marker="o" if len(points) < 20 else None, label=label)
    if len(lines) > 1:
        axes.legend(fontsize="small")
    if all(len(points) == 1 for points in lines.values()):
        axes.set_ylim(min(0.0, *every) - 0.05, max(1.0, *every) * 1.1)
    elif name.endswith("loss") and min(every) > 0 and max(every) / min(every) >= 10:
        axes.set_yscale("log")


class BestCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that keeps the best checkpoint by the task's main metric, in the direction the task
    declares (`Task.main_metric`, `Task.metric`), so that no config names a metric; a mixture's by `val/score`
    (`docvlm.mixture`). Other arguments are `ModelCheckpoint`'s; a `monitor` given explicitly is kept."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.monitor is None and isinstance(pl_module.task, Mixture):
            self.monitor, self.mode, self.kth_value = f"val/{SCORE}", "max", torch.tensor(-torch.inf)
        elif self.monitor is None:
            metric = pl_module.task.metric(pl_module.task.main_metric)
            self.monitor = f"val/{metric.name}"
            self.mode = "max" if metric.higher_is_better else "min"
            self.kth_value = torch.tensor(-torch.inf if metric.higher_is_better else torch.inf)
        super().setup(trainer, pl_module, stage)


class LastOnSigterm(L.Callback):
    """On SIGTERM (what SLURM and Kubernetes send before they kill a job, and on preemption) Lightning stops
    training at the end of the step under way (`SIGTERMException`); this saves `last.ckpt` there, beside the
    run's other checkpoints, so that `--ckpt_path last` resumes from that step. A large model may not be saved
    within the grace period before the kill (30 s by default in both): under SLURM, have Lightning requeue
    the job on SIGUSR1 sent earlier (`#SBATCH --signal=SIGUSR1@90`), which saves its own checkpoint."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            print(f"docvlm fit: SIGTERM: saved {path} at step {trainer.global_step}; run again with "
                  f"--ckpt_path last to go on", file=sys.stderr)


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where `last.ckpt` goes: the folder of the run's first `ModelCheckpoint`, else `<log_dir>/checkpoints`."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
    return folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


class OptimizerStepCadence(L.Callback):
    """Make an integer `trainer.val_check_interval` count optimizer steps, as `max_steps`, the warm-up and
    `ModelCheckpoint(every_n_train_steps=...)` do, instead of batches: Lightning multiplies nothing by
    `accumulate_grad_batches`, so an overlay that trades accumulation for devices (64 -> 8 on 8 GPUs) would
    otherwise validate 8 times less often. A float (a share of an epoch) is left as it is."""

    def __init__(self) -> None:
        self._steps: int | None = None  # set once, so that a second `fit` does not multiply again

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not isinstance(trainer.val_check_interval, int):
            return
        if self._steps is None:
            self._steps = trainer.val_check_interval
        trainer.val_check_interval = self._steps * trainer.accumulate_grad_batches


class ModelSummary(RichModelSummary):
    """Lightning's summary table of the model, without its FLOPs column and total when they are unknown.

    Lightning counts FLOPs only through a module's `example_input_array`, which a PaliGemma module has not
    (its inputs depend on the processor and the data): every run printed a column of zeros and `Total FLOPs: 0`.
    """

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, style="dim" if name == " " else None,
                             justify="left" if name in (" ", "Name", "Type", "Mode") else "right")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        lines = [("Trainable params", get_human_readable_count(int(trainable_parameters))),
                 ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
                 ("Total params", get_human_readable_count(int(total_parameters))),
                 ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
                 ("Modules in train mode", total_training_modes["train"]),
                 ("Modules in eval mode", total_training_modes["eval"])]
        if total_flops:
            lines.append(("Total FLOPs", get_human_readable_count(total_flops)))
        console = get_console()
        console.print(table)
        for name, value in lines:
            console.print(f"[bold]{name}[/]: {str(value).strip()}")
