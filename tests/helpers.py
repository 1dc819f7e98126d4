"""Small builders shared by the core tests."""

from pathlib import Path

from PIL import Image, ImageDraw

from docvlm.items import Collator


def text_image(text: str, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).text((size // 10, size // 3), text, fill="black", font_size=size // 8)
    return image


def make_batch(processor, prompts, targets=None, size=None):
    """A batch as the data module builds it, from prompts, optional targets and drawn images."""
    size = size or processor.image_processor.size["height"]
    items = [
        {"index": i, "id": str(i), "prompt": p, "target": None if targets is None else targets[i],
         "truncated": False, "image": text_image(p if targets is None else f"{p} {targets[i]}", size)}
        for i, p in enumerate(prompts)
    ]
    return Collator(processor, with_targets=targets is not None)(items)


def fit_tiny(config: str, root, train: int = 8, val: int = 4, steps: int = 2):
    """`docvlm fit --config configs/tiny/<config>.yaml` for a few steps on a little synthetic data."""
    from docvlm.cli import main

    repo = Path(__file__).resolve().parents[1]
    return main([
        "fit", "--config", str(repo / f"configs/tiny/{config}.yaml"),
        f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}", f"--data.train.synthetic={train}",
        f"--data.val.synthetic={val}", "--model.decoding.max_new_tokens=8", f"--trainer.default_root_dir={root}",
    ])


def config_parser(config: Path):
    """The CLI's own parser (`config: base.yaml` composition included), built from `config`, loading no model."""
    from docvlm.data import DocDataModule
    from docvlm.lightning_cli import DocVLMCLI
    from docvlm.module import DocVLM

    class ParseOnly(DocVLMCLI):
        def instantiate_classes(self) -> None:
            pass

    return ParseOnly(DocVLM, DocDataModule, run=False, args=["--config", str(config)]).parser



def kill_two_processes_once_both_wrote(slow_args: list[str], out: Path) -> None:
    """Start `docvlm convert *slow_args --devices 2` on the CPU and SIGKILL every process of it at once, as soon as
    both ranks have recorded a page in their manifest parts under `out` (a kill -9 in the middle of the work)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pytest

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    run = subprocess.Popen([str(Path(sys.executable).parent / "docvlm"), "convert", *slow_args, "--devices", "2",
                            "--accelerator", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until both ranks have finished a page
            parts = list(out.glob("manifest.part-*.jsonl"))
            if len(parts) == 2 and all(p.read_text().count("\n") >= 1 for p in parts):
                break
            assert run.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no rows were written")
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # every rank at once
        run.wait()
