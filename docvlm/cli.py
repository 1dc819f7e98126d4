"""`docvlm fit|validate|test|predict` through LightningCLI (`data.task` is linked to `model.task`);
`docvlm convert`, `evaluate` and `export` are plain argparse commands of their own modules."""

from __future__ import annotations

import importlib
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from jsonargparse import set_parsing_settings  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402

import docvlm.tasks  # noqa: E402,F401  (registers every task, so short class names resolve)
from docvlm.callbacks import ExportHF, PlotCurves, PredictionsJSONL  # noqa: E402
from docvlm.data import DocDataModule  # noqa: E402
from docvlm.module import DocVLM  # noqa: E402
from docvlm.tasks.base import Task  # noqa: E402

# Tasks are dataclasses; a config names the one to use by `class_path`.
set_parsing_settings(subclasses_enabled=[Task])
# Lightning advertises its cloud services ("💡 Tip: ...") in every run's log; keep its other messages.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda record: not str(record.msg).startswith("💡"))


class DocVLMCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.task", "model.task", apply_on="instantiate")
        parser.add_lightning_class_args(ExportHF, "export")
        parser.add_lightning_class_args(PredictionsJSONL, "predictions")
        parser.add_lightning_class_args(PlotCurves, "curves")

    def after_fit(self) -> None:
        self._print_metrics("val/")

    def after_test(self) -> None:
        self._print_metrics("test/")

    def _print_metrics(self, prefix: str) -> None:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(prefix)}
        if metrics and self.trainer.is_global_zero:
            print("docvlm: " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))


def main(args: list[str] | None = None) -> LightningCLI:
    """Run the CLI on `args` (default: the command line); returns the CLI, for tests and notebooks."""
    return DocVLMCLI(DocVLM, DocDataModule, args=args, save_config_kwargs={"overwrite": True},
                     parser_kwargs={"description": DESCRIPTION})


DESCRIPTION = """Fine-tune PaliGemma 2 for document OCR with Lightning: fit, validate, test, predict.
More commands: `docvlm convert --help` (transcribe scanned documents with a model), `docvlm evaluate
--help` (score a model or a predictions file and write reports) and `docvlm export --help` (a
checkpoint in Hugging Face format)."""


COMMANDS = {"convert": "docvlm.convert", "evaluate": "docvlm.evaluate", "export": "docvlm.export"}


def run() -> None:
    """The `docvlm` console script."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        sys.exit(importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:]))
    main()


if __name__ == "__main__":
    run()
