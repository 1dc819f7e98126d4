"""`docvlm export CHECKPOINT OUT`: a Lightning checkpoint (the best by validation, say) in Hugging Face
format, as `fit` exports its final weights: safetensors + processor, LoRA merged, loadable by plain
`transformers`. The base model is rebuilt from the checkpoint's `model` settings (hub id or folder)."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="docvlm export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by `docvlm fit`")
    parser.add_argument("out", type=Path, help="folder to write the Hugging Face model into")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"docvlm export: error: {args.checkpoint}: no such checkpoint file", file=sys.stderr)
        return 1

    from docvlm.module import DocVLM

    try:
        module = DocVLM.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as err:
        print(f"docvlm export: error: {args.checkpoint}: not a docvlm checkpoint that can be read "
              f"({type(err).__name__}: {err})", file=sys.stderr)
        return 1
    module.export(args.out)
    print(f"docvlm: exported {args.checkpoint} in Hugging Face format to {args.out}")
    return 0
