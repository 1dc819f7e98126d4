"""`DocVLMCLI`: the LightningCLI of `docvlm fit|validate|test|predict` (`data.task` is linked to
`model.task`), kept apart from `docvlm.cli` so that the console script starts with nothing heavy
imported and can report an interrupt during the imports in one line."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from jsonargparse import set_parsing_settings  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402

import docvlm.tasks  # noqa: E402,F401  (registers every task, so short class names resolve)
from docvlm import describe  # noqa: E402
from docvlm.callbacks import ExportHF, LastOnSigterm, ModelSummary, PlotCurves, PredictionsJSONL  # noqa: E402
from docvlm.errors import DataError  # noqa: E402
from docvlm.mixture import Mixture  # noqa: E402
from docvlm.model import model_spec  # noqa: E402
from docvlm.progress import Progress, ValidateAtEnd  # noqa: E402
from docvlm.tasks.base import Task  # noqa: E402

# Tasks are dataclasses; a config names the one to use by `class_path`.
set_parsing_settings(subclasses_enabled=[Task])
# Lightning advertises its cloud services ("💡 Tip: ...") in every run's log; keep its other messages.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡"))

# `ckpt_path` values that Lightning resolves itself and that are not files
_KEYWORDS = ("best", "hpc", "registry")


class CheckpointError(DataError):
    """A `--ckpt_path` that names no checkpoint; the message says where docvlm looked."""


class DocVLMCLI(LightningCLI):
    """LightningCLI with docvlm's callbacks, `ckpt_path: last` resolved, and `on_run_start` (called just
    before Lightning runs the subcommand: `docvlm.cli.run` hands Ctrl-C back to Lightning there)."""

    def __init__(self, *args, on_run_start: Callable[[], None] | None = None, **kwargs):
        self.on_run_start = on_run_start  # set first: LightningCLI's __init__ runs the subcommand
        super().__init__(*args, **kwargs)

    def _parse_ckpt_path(self) -> None:
        """Lightning reads a `--ckpt_path` file's hyper-parameters into the config here: check it first."""
        path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if path and Path(path).is_file():
            check_checkpoint(Path(path))
        super()._parse_ckpt_path()

    def add_arguments_to_parser(self, parser) -> None:
        # the data module's task: the one of `data.task`, or the mixture of `data.mixture`
        parser.link_arguments("data", "model.task", compute_fn=_task_of, apply_on="instantiate")
        parser.add_lightning_class_args(ExportHF, "export")
        parser.add_lightning_class_args(PredictionsJSONL, "predictions")
        parser.add_lightning_class_args(PlotCurves, "curves")
        # docvlm's own progress lines replace Lightning's epoch bar; a shortened run still ends validated
        parser.add_lightning_class_args(Progress, "progress")
        parser.add_lightning_class_args(ValidateAtEnd, "validate_at_end")
        parser.add_lightning_class_args(ModelSummary, "model_summary")  # Lightning's, less the FLOPs it cannot count

    def before_instantiate_classes(self) -> None:
        """`trainer.enable_progress_bar: false` silences docvlm's progress (Lightning refuses the flag
        beside a progress callback); `trainer.enable_model_summary: false` docvlm's model summary."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("trainer.enable_progress_bar") is False:
            config["trainer.enable_progress_bar"] = True
            config["progress.enabled"] = False
        # docvlm's summary replaces Lightning's default one, which would otherwise say that it skipped itself
        if config.get("trainer.enable_model_summary") is False:
            config["model_summary.max_depth"] = 0
        config["trainer.enable_model_summary"] = False

    def before_fit(self) -> None:
        self.trainer.callbacks.append(LastOnSigterm())  # not a config entry: every fit stops this way
        self._before_run()

    def before_validate(self) -> None:
        self._before_run()

    def before_test(self) -> None:
        self._before_run()

    def before_predict(self) -> None:
        self._before_run()

    def _before_run(self) -> None:
        self._resolve_checkpoint()
        if self.on_run_start is not None:
            self.on_run_start()

    def _resolve_checkpoint(self) -> None:
        """`ckpt_path: last` as the newest `last.ckpt` of the run's earlier versions (`last_checkpoint`);
        a path that is no file fails here, in one line.

        Lightning looks for `last` only in the new run's own version folder, which is empty, so it warned
        "no last checkpoint available" and trained from step 0 again."""
        config = self.config_init[self.subcommand]
        path = config.get("ckpt_path")
        if path == "last":
            config["ckpt_path"] = str(last_checkpoint(self.trainer))
            check_checkpoint(Path(config["ckpt_path"]))
        elif path is not None and not str(path).startswith(_KEYWORDS) and "://" not in str(path):
            if not Path(path).is_file():
                raise CheckpointError(f"--ckpt_path {path}: no such checkpoint file")
            check_checkpoint(Path(path))

    def after_fit(self) -> None:
        self._print_metrics("val/")

    def after_test(self) -> None:
        self._print_metrics("test/")

    def _print_metrics(self, prefix: str) -> None:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(prefix)}
        if metrics and self.trainer.is_global_zero:
            print("docvlm: " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))


def _task_of(data) -> Task | Mixture:
    return data.task


def check_checkpoint(path: Path) -> None:
    """`CheckpointError` unless `path` reads as a Lightning checkpoint with `weights_only=True` (no pickled
    code runs; a truncated file is named), before Lightning loads it. Tensors are mapped, not read."""
    import pickle

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, ValueError, TypeError, OSError, pickle.UnpicklingError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"--ckpt_path {path}: not a checkpoint that can be read safely "
                              f"({type(e).__name__}: {reason[:200]})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")
    hyper_parameters = checkpoint.get("hyper_parameters")
    settings = hyper_parameters.get("model") if isinstance(hyper_parameters, dict) else None
    try:
        if isinstance(settings, dict):  # what Lightning merges into the config
            model_spec(settings)
        if "docvlm" in checkpoint:
            describe.check(checkpoint["docvlm"], "its description")
    except DataError as e:
        raise CheckpointError(f"--ckpt_path {path}: {e}") from None


def last_checkpoint(trainer) -> Path:
    """The newest `last*.ckpt` (by modification time, then version) of the run: in the `dirpath` of its
    `ModelCheckpoint`s when they set one, else in every version folder of its logger
    (`<default_root_dir>/lightning_logs/version_*/checkpoints/`), else in `<default_root_dir>/checkpoints`.
    `CheckpointError` when there is none, naming the newest other checkpoint if there is one."""
    folders = [Path(c.dirpath) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
    if folders:
        where = ", ".join(map(str, folders))
    elif trainer.loggers:
        logger = trainer.loggers[0]
        root = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "")
        folders = sorted(root.glob("*/checkpoints"))
        where = str(root / "*" / "checkpoints")
    else:
        folders = [Path(trainer.default_root_dir) / "checkpoints"]
        where = str(folders[0])
    found = [p for folder in folders for p in folder.glob("*.ckpt") if p.is_file()]

    def newest(paths: list[Path]) -> Path:
        return max(paths, key=lambda p: (p.stat().st_mtime, _version(p)))

    last = [p for p in found if p.stem.startswith(ModelCheckpoint.CHECKPOINT_NAME_LAST)]
    if last:
        return newest(last)
    hint = (f"; the newest checkpoint there is {newest(found)}: pass it as --ckpt_path" if found
            else "; keep one with ModelCheckpoint(save_last=True)")
    raise CheckpointError(f"--ckpt_path last: no last.ckpt in {where}{hint} (or drop --ckpt_path to start a new run)")


def _version(path: Path) -> int:
    """N of the `version_N` folder holding a checkpoint (-1 for other folders)."""
    name = path.parent.parent.name
    return int(name[len("version_"):]) if name.startswith("version_") and name[len("version_"):].isdigit() else -1
