"""`docvlm fit|validate|test|predict` through LightningCLI (`docvlm.lightning_cli.DocVLMCLI`);
`docvlm convert`, `evaluate` and `export` are plain argparse commands of their own modules.

This module imports nothing heavy, so that the console script (`run`) catches what happens while
torch and Lightning load: known user errors (`DataError`: a bad manifest, image or checkpoint path)
and Ctrl-C are one line on stderr, not a traceback."""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import warnings

from docvlm.errors import DataError


def main(args: list[str] | None = None):
    """Run the CLI on `args` (default: the command line); returns the `LightningCLI`, for tests and
    notebooks. Errors are raised (`run` reports them)."""
    from docvlm.data import DocDataModule
    from docvlm.lightning_cli import DocVLMCLI
    from docvlm.module import DocVLM

    return DocVLMCLI(DocVLM, DocDataModule, args=args, save_config_kwargs={"overwrite": True},
                     parser_kwargs={"description": DESCRIPTION}, on_run_start=run_starts)


DESCRIPTION = """Fine-tune PaliGemma 2 for document OCR with Lightning: fit, validate, test, predict.
More commands: `docvlm convert --help` (transcribe scanned documents with a model), `docvlm evaluate
--help` (score a model or a predictions file and write reports) and `docvlm export --help` (a
checkpoint in Hugging Face format)."""


COMMANDS = {"convert": "docvlm.convert", "evaluate": "docvlm.evaluate", "export": "docvlm.export"}

HELP = """usage: docvlm <command> [options]

Fine-tune PaliGemma 2 for document OCR, score it with each domain's metrics, convert documents with it.

commands:
  fit        train a model (LightningCLI: --config, --print_config, dotted overrides)
  validate   decode and score the validation set with a model or checkpoint
  test       decode and score the test set
  predict    decode the predict set into <log_dir>/predictions/
  convert    transcribe images, folders, PDFs and manifests with a model (resume, many devices, shards)
  evaluate   score a model or a predictions file: report.html, report.json, report.md
  export     a fit checkpoint in Hugging Face format, with docvlm.json and a model card

`docvlm <command> --help` lists a command's options."""

EXIT_USER_ERROR = 2  # as argparse exits on bad arguments
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM


def _stop_while_starting(signum, frame) -> None:
    """Ctrl-C before the run starts: nothing is written yet, so stop now, in one line. A
    `KeyboardInterrupt` would have to cross the imports and set-up of torch, transformers and Lightning,
    and some of that code swallows it: the run then went on to train."""
    argv = sys.argv[1:]
    prog = f"docvlm {argv[0]}" if argv and not argv[0].startswith("-") else "docvlm"
    os.write(2, f"\n{prog}: interrupted\n".encode())
    os._exit(EXIT_INTERRUPTED)


def run_starts() -> None:
    """Called as the Lightning run starts: Ctrl-C is Lightning's from then on (it stops the run
    gracefully: callbacks, loggers and data-loader workers are shut down)."""
    if signal.getsignal(signal.SIGINT) is _stop_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Warnings every run printed that tell a docvlm user nothing: Lightning's note that tensorboardX is no longer
# its dependency (docvlm logs to CSV on purpose), and torch's deprecation of a class Lightning's own code uses.
NOISE = (
    (r"Starting from v1\.9\.0, `tensorboardX` has been removed", UserWarning),
    (re.escape("`isinstance(treespec, LeafSpec)` is deprecated"), FutureWarning),
)


def quiet_known_noise() -> None:
    """Ignore the warnings in `NOISE`, by message and category; every other warning is shown."""
    for message, category in NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def run() -> None:
    """The `docvlm` console script: `DataError` -> `docvlm <command>: error: <message>`, exit 2;
    Ctrl-C -> one line, exit 130 (also once training runs, after Lightning's graceful shutdown)."""
    quiet_known_noise()
    argv = sys.argv[1:]
    prog = f"docvlm {argv[0]}" if argv and not argv[0].startswith("-") else "docvlm"
    if not argv or argv[0] in ("-h", "--help"):  # every command, not only Lightning's four
        print(HELP)
        sys.exit(0 if argv else EXIT_USER_ERROR)
    try:
        if argv and argv[0] in COMMANDS:  # each handles Ctrl-C itself (convert keeps its finished pages)
            sys.exit(importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]))
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with it ignored
            signal.signal(signal.SIGINT, _stop_while_starting)
        main()
    except DataError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as e:
        if argv and argv[0] in COMMANDS:
            raise
        if isinstance(e.__context__, KeyboardInterrupt):  # Lightning shut the run down, then exit(1)
            print(f"{prog}: interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        if type(e).__name__ == "SIGTERMException":  # Lightning stopped at the end of a step (exit status 0)
            print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
            sys.exit(EXIT_TERMINATED)
        raise


if __name__ == "__main__":
    run()
