"""`docvlm export CHECKPOINT OUT`: a Lightning checkpoint (the best by validation, say) in Hugging Face
format, as `fit` exports its final weights: safetensors + processor, LoRA merged, loadable by plain
`transformers`, with its `docvlm.json`, generation config and model card. The base model is rebuilt from
the checkpoint's `model` settings (hub id or folder); the checkpoint is read with `weights_only=True`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="docvlm export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by `docvlm fit`")
    parser.add_argument("out", type=Path, help="folder to write the Hugging Face model into")
    args = parser.parse_args(argv)

    from docvlm import describe
    from docvlm.inference import ModelLoadError, load_weights
    from docvlm.model import save_pretrained

    if args.checkpoint.suffix != ".ckpt":
        print(f"docvlm export: error: {args.checkpoint}: expected a .ckpt written by `docvlm fit`", file=sys.stderr)
        return EXIT_USAGE
    try:
        model, processor, description = load_weights(args.checkpoint)
    except ModelLoadError as err:
        print(f"docvlm export: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if description is not None:
        describe.set_generation_config(model, processor, describe.max_new_tokens(description))
    save_pretrained(model, processor, args.out)
    if description is not None:
        describe.write(args.out, description)
    else:
        print(f"docvlm: warning: {args.checkpoint} predates docvlm.json: give --task to convert and evaluate",
              file=sys.stderr)
    print(f"docvlm: exported {args.checkpoint} in Hugging Face format to {args.out}")
    return EXIT_OK
